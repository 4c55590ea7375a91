//! The pipeline's Kafka adapters: a consumer-group source whose positions are Kafka offsets,
//! a committer that commits the contiguous done prefix per partition, and the Kafka sink.
//!
//! Offsets are never committed automatically (`enable.auto.commit=false`,
//! `enable.auto.offset.store=false`): only what the position tracker says is done. On a
//! revoke (cooperative-sticky assignment), the done prefix of the revoked partitions is
//! committed synchronously inside the rebalance callback and the partitions are forgotten;
//! their in-flight events still finish and publish (the new owner may repeat them:
//! at-least-once, never lost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;
use fusionstream_core::position::{PartitionId, PositionTracker};
use fusionstream_core::record::Stream;
use fusionstream_io::kafka::{KafkaConnection, KafkaSink};
use fusionstream_io::SourceRecord;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{lock, Committer, Emitter, OutputSink, Source};

/// A Kafka partition: topic and partition number.
type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct Ids {
    by_partition: HashMap<TopicPartition, PartitionId>,
    by_id: Vec<TopicPartition>,
}

/// Kafka (topic, partition) ↔ the tracker's partition ids.
#[derive(Debug, Default)]
pub struct PartitionMap {
    ids: Mutex<Ids>,
}

impl PartitionMap {
    fn id(&self, topic: &str, partition: i32) -> PartitionId {
        let mut m = lock(&self.ids);
        let key = (topic.to_owned(), partition);
        if let Some(id) = m.by_partition.get(&key) {
            return *id;
        }
        let id = m.by_id.len() as PartitionId;
        m.by_id.push(key.clone());
        m.by_partition.insert(key, id);
        id
    }

    fn get(&self, id: PartitionId) -> Option<(String, i32)> {
        lock(&self.ids).by_id.get(id as usize).cloned()
    }
}

/// Shared between the source (which owns the consumer) and the committer.
#[derive(Default, Clone)]
pub struct KafkaShared {
    map: Arc<PartitionMap>,
    consumer: Arc<OnceLock<Arc<StreamConsumer<GroupContext>>>>,
}

impl std::fmt::Debug for KafkaShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaShared")
            .field("map", &self.map)
            .field("consumer", &self.consumer.get().is_some())
            .finish()
    }
}

/// Rebalance callbacks: commit what is done before a partition goes away.
#[allow(missing_debug_implementations)]
pub struct GroupContext {
    map: Arc<PartitionMap>,
    tracker: Arc<Mutex<PositionTracker>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut commit = TopicPartitionList::new();
            for e in tpl.elements() {
                let id = self.map.id(e.topic(), e.partition());
                if let Some(next) = lock(&self.tracker).revoke(id) {
                    let _ = commit.add_partition_offset(
                        e.topic(),
                        e.partition(),
                        Offset::Offset(next as i64),
                    );
                }
            }
            tracing::info!(
                partitions = tpl.count(),
                "partitions revoked; committing what is done"
            );
            if commit.count() > 0 {
                if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                    tracing::warn!(error = %e, "commit on revoke failed; those events replay");
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A consumer-group source.
#[derive(Debug)]
pub struct KafkaSource {
    conn: KafkaConnection,
    group_id: String,
    topics: Vec<String>,
    shared: KafkaShared,
}

impl KafkaSource {
    /// A source reading `topics` as member of `group_id`.
    pub fn new(
        conn: KafkaConnection,
        group_id: String,
        topics: Vec<String>,
    ) -> (Self, KafkaShared) {
        let shared = KafkaShared::default();
        (
            Self {
                conn,
                group_id,
                topics,
                shared: shared.clone(),
            },
            shared,
        )
    }
}

impl Source for KafkaSource {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn partitions(&self) -> Vec<(PartitionId, u64)> {
        // Assigned by the group at run time; positions start at the first offset read.
        Vec::new()
    }

    async fn run(self, emit: Emitter) -> anyhow::Result<bool> {
        let ctx = GroupContext {
            map: self.shared.map.clone(),
            tracker: emit.tracker.clone(),
        };
        let consumer: StreamConsumer<GroupContext> = self
            .conn
            .client_config()
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("queued.max.messages.kbytes", "16384")
            .create_with_context(ctx)
            .context("creating the Kafka consumer")?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).context("subscribing")?;
        let consumer = Arc::new(consumer);
        let _ = self.shared.consumer.set(consumer.clone());
        loop {
            let msg = tokio::select! {
                biased;
                _ = emit.cancel.cancelled() => return Ok(false),
                m = consumer.recv() => m,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    // librdkafka reconnects by itself (broker restarts); keep polling.
                    tracing::warn!(error = %e, "kafka consumer error");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let partition = self.shared.map.id(msg.topic(), msg.partition());
            let traceparent = msg.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "traceparent")
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_owned)
            });
            let payload = msg.payload().unwrap_or_default();
            let limit = emit.max_event_bytes;
            let rec = SourceRecord {
                partition,
                stream: msg.topic().to_owned(),
                offset: msg.offset().max(0) as u64,
                oversized: payload.len() > limit,
                payload: payload[..payload.len().min(limit)].to_vec(),
                traceparent,
            };
            drop(msg);
            if !emit.emit(rec).await {
                return Ok(false);
            }
        }
    }
}

/// Commits the done prefix as consumer-group offsets.
#[derive(Debug)]
pub struct KafkaCommitter {
    shared: KafkaShared,
}

impl KafkaCommitter {
    /// A committer for the consumer of `shared`.
    pub fn new(shared: KafkaShared) -> Self {
        Self { shared }
    }
}

impl Committer for KafkaCommitter {
    fn commit(&mut self, positions: &[(PartitionId, u64)]) -> anyhow::Result<()> {
        let Some(consumer) = self.shared.consumer.get() else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        for (id, next) in positions {
            if let Some((topic, p)) = self.shared.map.get(*id) {
                tpl.add_partition_offset(&topic, p, Offset::Offset(*next as i64))?;
            }
        }
        if tpl.count() > 0 {
            // Async: a lost commit only means a replay; the next commit supersedes it.
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(error = %e, "offset commit failed; will retry with the next one");
            }
        }
        Ok(())
    }
}

impl OutputSink for KafkaSink {
    async fn write(&mut self, stream: Stream, key: &str, json: &[u8]) -> anyhow::Result<()> {
        KafkaSink::write(self, stream, key, json, None)
            .await
            .map_err(Into::into)
    }
    async fn flush(&mut self) -> anyhow::Result<()> {
        KafkaSink::flush(self).await.map_err(Into::into)
    }
}
