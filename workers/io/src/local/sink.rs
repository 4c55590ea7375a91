//! Output records to local JSONL files, one per stream (`captions.jsonl`, …), appended.
//! A record is acknowledged once `flush` returns: written and synced to disk.

use std::path::{Path, PathBuf};

use fusionstream_core::record::Stream;
use tokio::io::AsyncWriteExt;

/// Sink errors (fatal for the worker: nothing unflushed is acknowledged).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct SinkError {
    /// File.
    pub path: PathBuf,
    /// Cause.
    pub source: std::io::Error,
}

/// JSONL files under a folder.
#[derive(Debug)]
pub struct JsonlSink {
    dir: PathBuf,
    files: [Option<tokio::io::BufWriter<tokio::fs::File>>; Stream::COUNT],
    dirty: [bool; Stream::COUNT],
}

impl JsonlSink {
    /// Path of a stream's file under `dir`.
    pub fn path_of(dir: &Path, stream: Stream) -> PathBuf {
        dir.join(format!("{}.jsonl", stream.name()))
    }

    /// A sink writing under `dir` (created if needed).
    pub async fn open(dir: &Path) -> Result<Self, SinkError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| SinkError {
                path: dir.to_owned(),
                source,
            })?;
        Ok(Self {
            dir: dir.to_owned(),
            files: Default::default(),
            dirty: [false; Stream::COUNT],
        })
    }

    /// Append one record (a JSON document without newline).
    pub async fn write(&mut self, stream: Stream, json: &[u8]) -> Result<(), SinkError> {
        let i = stream.index();
        let path = Self::path_of(&self.dir, stream);
        let err = |source| SinkError {
            path: path.clone(),
            source,
        };
        if self.files[i].is_none() {
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
                .map_err(err)?;
            self.files[i] = Some(tokio::io::BufWriter::with_capacity(256 << 10, f));
        }
        if let Some(w) = self.files[i].as_mut() {
            w.write_all(json).await.map_err(err)?;
            w.write_all(b"\n").await.map_err(err)?;
        }
        self.dirty[i] = true;
        Ok(())
    }

    /// Make everything written so far durable.
    pub async fn flush(&mut self) -> Result<(), SinkError> {
        for stream in Stream::ALL {
            let i = stream.index();
            if !self.dirty[i] {
                continue;
            }
            if let Some(w) = self.files[i].as_mut() {
                let err = |source| SinkError {
                    path: Self::path_of(&self.dir, stream),
                    source,
                };
                w.flush().await.map_err(err)?;
                w.get_ref().sync_data().await.map_err(err)?;
            }
            self.dirty[i] = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_per_stream() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = JsonlSink::open(&dir.path().join("out"))
            .await
            .expect("open");
        s.write(Stream::Captions, b"{\"a\":1}").await.expect("w");
        s.write(Stream::DeadLetters, b"{\"b\":2}").await.expect("w");
        s.flush().await.expect("flush");
        drop(s);
        let mut s = JsonlSink::open(&dir.path().join("out"))
            .await
            .expect("reopen");
        s.write(Stream::Captions, b"{\"a\":3}").await.expect("w");
        s.flush().await.expect("flush");
        let out = dir.path().join("out");
        assert_eq!(
            std::fs::read_to_string(JsonlSink::path_of(&out, Stream::Captions)).expect("r"),
            "{\"a\":1}\n{\"a\":3}\n"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("dead_letters.jsonl")).expect("r"),
            "{\"b\":2}\n"
        );
    }
}
