//! Events from a local JSONL file or a folder of `*.jsonl` files.
//!
//! Each file is one partition (files sorted by name); a line's position is its line number
//! from 0. Blank lines are not events and are not tracked (positions may have gaps, as
//! Kafka offsets do). Lines are read with a length limit: a longer line is cut at the
//! limit, the rest skipped, and it is handed on marked `oversized` so it becomes a dead
//! letter instead of a memory spike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::SourceRecord;

/// Errors of the local source.
#[derive(Debug, thiserror::Error)]
pub enum LocalSourceError {
    /// The path cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A folder with no `*.jsonl` files.
    #[error("{0}: no *.jsonl files")]
    Empty(PathBuf),
}

/// The files of a local source, in partition order.
#[derive(Debug, Clone)]
pub struct LocalSource {
    files: Vec<PathBuf>,
    max_line_bytes: usize,
}

impl LocalSource {
    /// A source over `path` (a file, or a folder of `*.jsonl` files).
    pub fn open(path: &Path, max_line_bytes: usize) -> Result<Self, LocalSourceError> {
        let io = |source| LocalSourceError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let files = if meta.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl") && p.is_file())
                .collect();
            v.sort();
            if v.is_empty() {
                return Err(LocalSourceError::Empty(path.to_owned()));
            }
            v
        } else {
            vec![path.to_owned()]
        };
        Ok(Self {
            files,
            max_line_bytes,
        })
    }

    /// Stream names (file paths as given), in partition order.
    pub fn streams(&self) -> Vec<String> {
        self.files.iter().map(|p| p.display().to_string()).collect()
    }

    /// Read every file from its start position (`starts`: stream name → next line), calling
    /// `emit` for each record; stops early when `emit` returns false (shutdown).
    /// Returns whether the input was read to its end.
    pub async fn read<F, Fut>(
        &self,
        starts: &BTreeMap<String, u64>,
        mut emit: F,
    ) -> Result<bool, LocalSourceError>
    where
        F: FnMut(SourceRecord) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for (partition, path) in self.files.iter().enumerate() {
            let stream = path.display().to_string();
            let start = starts.get(&stream).copied().unwrap_or(0);
            let io = |source| LocalSourceError::Io {
                path: path.clone(),
                source,
            };
            let file = tokio::fs::File::open(path).await.map_err(io)?;
            let mut reader = BufReader::with_capacity(64 << 10, file);
            let mut line = Vec::new();
            let mut offset = 0u64;
            loop {
                let (n, oversized) = read_line(&mut reader, &mut line, self.max_line_bytes)
                    .await
                    .map_err(io)?;
                if n == 0 {
                    break;
                }
                let this = offset;
                offset += 1;
                if this < start || line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let rec = SourceRecord {
                    partition: partition as u32,
                    stream: stream.clone(),
                    offset: this,
                    payload: std::mem::take(&mut line),
                    oversized,
                    traceparent: None,
                };
                if !emit(rec).await {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// Read one line (without its `\n` / `\r\n`) into `buf`, keeping at most `max` bytes.
/// Returns the bytes consumed (0 at end of file) and whether the line was cut.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    buf.clear();
    let mut consumed = 0;
    let mut cut = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            break;
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let body = if done {
            &chunk[..take - 1]
        } else {
            &chunk[..take]
        };
        let room = max.saturating_sub(buf.len());
        if body.len() > room {
            cut = true;
        }
        buf.extend_from_slice(&body[..body.len().min(room)]);
        r.consume(take);
        consumed += take;
        if done {
            break;
        }
    }
    if buf.last() == Some(&b'\r') && !cut {
        buf.pop();
    }
    Ok((consumed, cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(src: &LocalSource, starts: &BTreeMap<String, u64>) -> Vec<SourceRecord> {
        let mut out = Vec::new();
        src.read(starts, |r| {
            out.push(r);
            async { true }
        })
        .await
        .expect("read");
        out
    }

    #[tokio::test]
    async fn reads_files_in_order_with_positions_and_limits() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("b.jsonl"), "{\"id\":\"b0\"}\n").expect("w");
        std::fs::write(
            dir.path().join("a.jsonl"),
            format!(
                "{{\"id\":\"a0\"}}\r\n\n{}\n{{\"id\":\"a3\"}}",
                "x".repeat(100)
            ),
        )
        .expect("w");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("w");
        let src = LocalSource::open(dir.path(), 20).expect("open");
        let recs = collect(&src, &BTreeMap::new()).await;
        let got: Vec<(u32, u64, bool, usize)> = recs
            .iter()
            .map(|r| (r.partition, r.offset, r.oversized, r.payload.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, false, 11),
                (0, 2, true, 20),
                (0, 3, false, 11),
                (1, 0, false, 11)
            ]
        );
        assert_eq!(recs[0].payload, b"{\"id\":\"a0\"}");

        let mut starts = BTreeMap::new();
        starts.insert(src.streams()[0].clone(), 3);
        starts.insert(src.streams()[1].clone(), 1);
        let recs = collect(&src, &starts).await;
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].payload, b"{\"id\":\"a3\"}");
    }

    #[tokio::test]
    async fn stops_when_told() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("e.jsonl");
        std::fs::write(&f, "1\n2\n3\n").expect("w");
        let src = LocalSource::open(&f, 100).expect("open");
        let mut n = 0;
        let finished = src
            .read(&BTreeMap::new(), |_| {
                n += 1;
                let go = n < 2;
                async move { go }
            })
            .await
            .expect("read");
        assert!(!finished);
        assert_eq!(n, 2);
        assert!(matches!(
            LocalSource::open(dir.path().join("missing").as_path(), 1),
            Err(LocalSourceError::Io { .. })
        ));
    }
}
