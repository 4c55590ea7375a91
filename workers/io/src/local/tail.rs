//! Where the index reads embeddings records from: the embeddings topic (every partition,
//! assigned rather than balanced: each index replica reads the whole topic) or a local
//! `embeddings.jsonl` that a worker appends to. Both start at the snapshot's positions.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// One record read: its source key, the position after it, its bytes.
#[derive(Debug)]
pub struct Read {
    /// `topic/partition` or the file's name.
    pub source: String,
    /// The position of the next record.
    pub next: u64,
    /// The record.
    pub payload: Vec<u8>,
}

/// A source of embeddings records.
#[derive(Debug)]
pub enum Feed {
    /// The embeddings topic.
    Kafka(KafkaFeed),
    /// A local JSONL file.
    File(FileFeed),
}

impl Feed {
    /// Up to `max` records, waiting at most `wait` for the first.
    pub fn poll(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Read>> {
        match self {
            Feed::Kafka(k) => Ok(k.poll(max, wait)),
            Feed::File(f) => f.poll(max, wait),
        }
    }

    /// Whether everything that existed when the feed was opened (Kafka: the high
    /// watermarks then; a file: its end) has been read, given `positions`.
    pub fn caught_up(&self, positions: &BTreeMap<String, u64>) -> bool {
        match self {
            Feed::Kafka(k) => k.caught_up(positions),
            Feed::File(f) => f.at_end,
        }
    }

    /// After a snapshot: commit its positions (Kafka; for lag monitoring).
    pub fn committed(&self, positions: &BTreeMap<String, u64>) {
        if let Feed::Kafka(k) = self {
            k.commit(positions);
        }
    }

    /// What the feed reads, for logs.
    pub fn describe(&self) -> String {
        match self {
            Feed::Kafka(k) => format!("kafka topic {}", k.topic),
            Feed::File(f) => format!("file {}", f.path.display()),
        }
    }
}

/// The embeddings topic, every partition assigned.
pub struct KafkaFeed {
    consumer: BaseConsumer,
    topic: String,
    /// (low, high) watermarks per partition when opened.
    marks: HashMap<i32, (i64, i64)>,
}

impl std::fmt::Debug for KafkaFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaFeed")
            .field("topic", &self.topic)
            .field("marks", &self.marks)
            .finish_non_exhaustive()
    }
}

/// The position key of a partition.
pub fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

impl KafkaFeed {
    /// Assign every partition of `topic`, each at its position in `positions` (the
    /// earliest offset where it has none).
    pub fn open(
        conn: &fusionstream_io::kafka::KafkaConnection,
        topic: &str,
        group_id: &str,
        positions: &BTreeMap<String, u64>,
    ) -> anyhow::Result<KafkaFeed> {
        let consumer: BaseConsumer = conn
            .client_config()
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .context("creating the index's Kafka consumer")?;
        let timeout = Duration::from_secs(10);
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| format!("reading the metadata of topic {topic}"))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        anyhow::ensure!(
            !partitions.is_empty(),
            "topic {topic} has no partitions (does it exist?)"
        );
        let mut tpl = TopicPartitionList::new();
        let mut marks = HashMap::new();
        for &p in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
            marks.insert(p, (low, high));
            let offset = match positions.get(&partition_key(topic, p)) {
                Some(&o) => Offset::Offset(o as i64),
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(topic, p, offset)?;
        }
        consumer.assign(&tpl).context("assigning the partitions")?;
        tracing::info!(
            topic,
            partitions = partitions.len(),
            "index reading the embeddings topic"
        );
        Ok(KafkaFeed {
            consumer,
            topic: topic.to_owned(),
            marks,
        })
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Vec<Read> {
        let mut out = Vec::new();
        let mut timeout = wait;
        while out.len() < max {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => out.push(Read {
                    source: partition_key(m.topic(), m.partition()),
                    next: m.offset() as u64 + 1,
                    payload: m.payload().unwrap_or_default().to_vec(),
                }),
                // librdkafka retries broker errors itself; they are reported, not fatal.
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "index consumer");
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        out
    }

    fn caught_up(&self, positions: &BTreeMap<String, u64>) -> bool {
        // The consumer's own position first: it steps over offsets that hold no record
        // (transaction markers, compacted gaps), which the last record's cannot.
        let fetched = self.consumer.position().ok();
        self.marks.iter().all(|(&p, &(low, high))| {
            let consumed = fetched
                .as_ref()
                .and_then(|t| t.find_partition(&self.topic, p))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let recorded = positions
                .get(&partition_key(&self.topic, p))
                .map(|&o| o as i64);
            consumed.max(recorded).unwrap_or(low) >= high
        })
    }

    fn commit(&self, positions: &BTreeMap<String, u64>) {
        let mut tpl = TopicPartitionList::new();
        for &p in self.marks.keys() {
            if let Some(&o) = positions.get(&partition_key(&self.topic, p)) {
                let _ = tpl.add_partition_offset(&self.topic, p, Offset::Offset(o as i64));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            // The snapshot holds the positions a restart uses; the group's are for lag.
            tracing::warn!(error = %e, "committing the index's offsets (lag metrics only)");
        }
    }
}

/// A local JSONL file of embeddings records, read by byte position.
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

    fn poll(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Read>> {
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
            out.push(Read {
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
