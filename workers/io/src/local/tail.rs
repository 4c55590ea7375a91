//! A local JSONL file that another process appends to, read by byte position as a
//! [`Feed`] (the live index reads a worker's `embeddings.jsonl` this way): whole lines only,
//! a line still being written is read once it is whole, a file replaced by a shorter one is
//! read again from its start.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::ports::{Feed, FeedRecord};

/// A local JSONL file, tailed by byte position.
#[derive(Debug)]
pub struct FileFeed {
    path: PathBuf,
    key: String,
    reader: Option<BufReader<File>>,
    position: u64,
    at_end: bool,
}

impl FileFeed {
    /// Read `path` from the byte position `positions` holds for it.
    pub fn open(path: &Path, positions: &BTreeMap<String, u64>) -> FileFeed {
        let key = path.file_name().map_or_else(
            || "embeddings.jsonl".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let position = positions.get(&key).copied().unwrap_or(0);
        FileFeed {
            path: path.to_owned(),
            key,
            reader: None,
            position,
            at_end: false,
        }
    }

    fn read(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<FeedRecord>> {
        let mut out = Vec::new();
        if self.reader.is_none() {
            match File::open(&self.path) {
                Ok(mut f) => {
                    let len = f.metadata()?.len();
                    if len < self.position {
                        // Replaced or truncated (a `run --fresh`): read it again from the
                        // start; entries are keyed by event id, so nothing is duplicated.
                        tracing::warn!(file = %self.path.display(), "embeddings file is shorter than the index's position: reading it again");
                        self.position = 0;
                    }
                    f.seek(SeekFrom::Start(self.position))?;
                    self.reader = Some(BufReader::new(f));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.at_end = true;
                    std::thread::sleep(wait);
                    return Ok(out);
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("opening {}", self.path.display()))
                }
            }
        }
        let reader = self.reader.as_mut().expect("opened above");
        self.at_end = false;
        let mut line = Vec::new();
        while out.len() < max {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                // End, or a line still being written: read it whole next time.
                self.at_end = true;
                self.reader = None;
                break;
            }
            self.position += n as u64;
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() {
                continue;
            }
            out.push(FeedRecord {
                source: self.key.clone(),
                next: self.position,
                payload: trimmed.to_vec(),
            });
        }
        if out.is_empty() {
            std::thread::sleep(wait);
        }
        Ok(out)
    }
}

impl Feed for FileFeed {
    fn poll(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<FeedRecord>> {
        self.read(max, wait)
    }

    fn caught_up(&self, _positions: &BTreeMap<String, u64>) -> bool {
        self.at_end
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_file_is_read_in_whole_lines_from_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("embeddings.jsonl");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"{\"a\":1}\n\n{\"b\":2}\n{\"c\":").unwrap();
        f.flush().unwrap();
        let mut feed = FileFeed::open(&path, &BTreeMap::new());
        let got = feed.poll(10, Duration::ZERO).unwrap();
        let payloads: Vec<&[u8]> = got.iter().map(|r| r.payload.as_slice()).collect();
        assert_eq!(payloads, [&b"{\"a\":1}"[..], b"{\"b\":2}"]);
        assert!(feed.at_end);
        // The partial line is read once it is whole.
        f.write_all(b"3}\n").unwrap();
        f.flush().unwrap();
        let got = feed.poll(10, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, b"{\"c\":3}");
        let end = got[0].next;
        assert_eq!(end, std::fs::metadata(&path).unwrap().len());
        // Resuming from a position reads only what follows it.
        let mut positions = BTreeMap::new();
        positions.insert("embeddings.jsonl".to_owned(), got[0].next);
        let mut again = FileFeed::open(&path, &positions);
        assert!(again.poll(10, Duration::ZERO).unwrap().is_empty());
        // A file shorter than the position (replaced) is read again from the start.
        std::fs::write(&path, b"{\"d\":4}\n").unwrap();
        let got = again.poll(10, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].next, 8);
    }
}
