//! Every partition of a topic assigned (not balanced in a group) and read from saved
//! positions, as a [`Feed`]: each live index replica reads the whole embeddings topic this
//! way. The group's offsets are committed only after the reader saved its positions (for lag
//! monitoring); a restart reads on from the reader's own positions.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaConnection;
use crate::ports::{Feed, FeedRecord};

/// The position key of a partition.
pub fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// A topic, every partition assigned.
pub struct AssignedFeed {
    consumer: BaseConsumer,
    topic: String,
    /// (low, high) watermarks per partition when opened.
    marks: HashMap<i32, (i64, i64)>,
}

impl std::fmt::Debug for AssignedFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssignedFeed")
            .field("topic", &self.topic)
            .field("marks", &self.marks)
            .finish_non_exhaustive()
    }
}

impl AssignedFeed {
    /// Assign every partition of `topic`, each at its position in `positions` (the
    /// earliest offset where it has none).
    pub fn open(
        conn: &KafkaConnection,
        topic: &str,
        group_id: &str,
        positions: &BTreeMap<String, u64>,
    ) -> anyhow::Result<AssignedFeed> {
        let consumer: BaseConsumer = conn
            .client_config()
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Only committed transactions' records (an exactly-once worker's aborted
            // attempts are never indexed); librdkafka's default, stated.
            .set("isolation.level", "read_committed")
            .create()
            .context("creating the Kafka consumer of assigned partitions")?;
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
            "reading every partition of the topic"
        );
        Ok(AssignedFeed {
            consumer,
            topic: topic.to_owned(),
            marks,
        })
    }

    fn read(&mut self, max: usize, wait: Duration) -> Vec<FeedRecord> {
        let mut out = Vec::new();
        let mut timeout = wait;
        while out.len() < max {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => out.push(FeedRecord {
                    source: partition_key(m.topic(), m.partition()),
                    next: m.offset() as u64 + 1,
                    payload: m.payload().unwrap_or_default().to_vec(),
                }),
                // librdkafka retries broker errors itself; they are reported, not fatal.
                Some(Err(e)) => {
                    tracing::warn!(error = %e, topic = %self.topic, "assigned-partitions consumer");
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        out
    }

    fn caught_up_to(&self, positions: &BTreeMap<String, u64>) -> bool {
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
            // The reader holds the positions a restart uses; the group's are for lag.
            tracing::warn!(error = %e, "committing the offsets of assigned partitions (lag metrics only)");
        }
    }
}

impl Feed for AssignedFeed {
    fn poll(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<FeedRecord>> {
        Ok(self.read(max, wait))
    }

    fn caught_up(&self, positions: &BTreeMap<String, u64>) -> bool {
        self.caught_up_to(positions)
    }

    fn saved(&self, positions: &BTreeMap<String, u64>) {
        self.commit(positions);
    }

    fn describe(&self) -> String {
        format!("kafka topic {}", self.topic)
    }
}
