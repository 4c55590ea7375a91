//! The consumer-group source: its positions are Kafka offsets, committed by `commit.rs`.
//!
//! Long because the source, its consumer loop (pausing, held records, the crash guard's
//! admission) and its rebalance, commit and statistics callbacks share the partition map,
//! the tracker and the consumer: split apart they would need all of it public to each other.
//!
//! Offsets are never committed automatically (`enable.auto.commit=false`,
//! `enable.auto.offset.store=false`): only what the position tracker says is done.
//!
//! - **Revoke** (cooperative-sticky assignment): inside the rebalance callback the worker
//!   waits up to `kafka.revoke_timeout` for the revoked partitions' in-flight events to be
//!   acknowledged, commits their done prefix synchronously and forgets the partitions.
//!   Events still running after the bound are abandoned: their outputs may still be
//!   published, their offsets are not committed, the new owner replays them (duplicates,
//!   never a loss). Records read but not yet started for a revoked partition are dropped.
//! - **Back-pressure**: with every in-flight slot taken for `kafka.pause_after`, the
//!   assignment is paused and the consumer keeps polling (heartbeats, rebalances,
//!   `max.poll.interval.ms`) until a slot frees up; librdkafka then resumes fetching from
//!   the next unread offset.
//! - **Commits** are asynchronous and count only once the broker confirms them (the commit
//!   callback); the sink sends what is unconfirmed again at its next interval, so a failed
//!   commit is retried also on a quiet stream. At shutdown the last commit is synchronous,
//!   bounded by `checkpoint.commit_timeout`.
//! - **Lag**: librdkafka's statistics give each assigned partition's high watermark and
//!   committed offset (the broker's, so confirmed commits only); their difference, summed,
//!   feeds `fusionstream_consumer_lag` and the seconds-to-drain gauge.
//!
//! The committer and the crash guard's marks in the commit metadata are `commit.rs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fusionstream_core::lock;
use fusionstream_core::position::{PartitionId, PositionTracker};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use fusionstream_core::crash_guard::Mark;

use super::KafkaConnection;
use crate::crash_marks::CrashGuard;
use crate::metrics::AdapterMetrics;
use crate::ports::{Handover, Source, SourceHandle};
use crate::SourceRecord;
use tokio_util::sync::CancellationToken;

/// A Kafka partition: topic and partition number.
type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct Ids {
    by_partition: HashMap<TopicPartition, PartitionId>,
    by_id: Vec<TopicPartition>,
    assigned: HashSet<PartitionId>,
    /// Revokes per partition: a record read before a revoke is stale even if the
    /// partition has come back since (the new assignment re-reads from the committed offset).
    revokes: HashMap<PartitionId, u64>,
}

/// Kafka (topic, partition) ↔ the tracker's partition ids, and which are assigned now.
#[derive(Debug, Default)]
pub struct PartitionMap {
    ids: Mutex<Ids>,
}

impl PartitionMap {
    pub(super) fn id(&self, topic: &str, partition: i32) -> PartitionId {
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

    pub(super) fn get(&self, id: PartitionId) -> Option<(String, i32)> {
        lock(&self.ids).by_id.get(id as usize).cloned()
    }

    fn set_assigned(&self, id: PartitionId, assigned: bool) {
        let mut m = lock(&self.ids);
        if assigned {
            m.assigned.insert(id);
        } else {
            m.assigned.remove(&id);
            *m.revokes.entry(id).or_default() += 1;
        }
    }

    /// The partition's revoke count now (remember it with a record read from it).
    fn epoch(&self, id: PartitionId) -> u64 {
        lock(&self.ids).revokes.get(&id).copied().unwrap_or(0)
    }

    /// Whether a record read from `id` at `epoch` is still this worker's to process: the
    /// partition is assigned and was not revoked since.
    fn is_current(&self, id: PartitionId, epoch: u64) -> bool {
        let m = lock(&self.ids);
        m.assigned.contains(&id) && m.revokes.get(&id).copied().unwrap_or(0) == epoch
    }
}

/// Shared between the source (which creates the consumer) and the committer (which commits
/// through it until the run's last commit, after the source has ended).
///
/// The consumer's context reaches this slot again (its crash guard keeps marks through the
/// committer's consumer), so the slot is emptied by `KafkaShared::close` when the run is
/// over: without that the consumer would never be dropped, never leave the group, and keep
/// its partitions from the other members until `max.poll.interval.ms` (librdkafka heartbeats
/// on its own thread).
#[derive(Default, Clone)]
pub struct KafkaShared {
    pub(super) map: Arc<PartitionMap>,
    consumer: Arc<Mutex<Option<Arc<StreamConsumer<GroupContext>>>>>,
}

impl KafkaShared {
    /// The consumer, once the source has created it (and until [`KafkaShared::close`]).
    pub(super) fn consumer(&self) -> Option<Arc<StreamConsumer<GroupContext>>> {
        lock(&self.consumer).clone()
    }

    /// Drop the shared handle of the consumer: the last one, once the source has ended, so
    /// the consumer closes here (leaving the group; its revoke callback commits what is
    /// done). Blocks while librdkafka closes it: call it off the async runtime.
    pub(super) fn close(&self) {
        let consumer = lock(&self.consumer).take();
        if let Some(c) = consumer {
            let others = Arc::strong_count(&c) - 1;
            if others > 0 {
                tracing::warn!(
                    others,
                    "the Kafka consumer is still held elsewhere; it closes when they let go"
                );
            }
            drop(c);
            tracing::info!("Kafka consumer closed");
        }
    }
}

impl std::fmt::Debug for KafkaShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaShared")
            .field("map", &self.map)
            .field("consumer", &self.consumer().is_some())
            .finish()
    }
}

/// Consumer-group behaviour settings.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// Consumer group.
    pub group_id: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Bound on finishing a revoked partition's in-flight events.
    pub revoke_timeout: Duration,
    /// Pause after waiting this long for an in-flight slot.
    pub pause_after: Duration,
    /// librdkafka statistics interval (zero: off).
    pub statistics_interval: Duration,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
}

/// Rebalance, commit and statistics callbacks.
#[allow(missing_debug_implementations)]
pub struct GroupContext {
    map: Arc<PartitionMap>,
    tracker: Arc<Mutex<PositionTracker>>,
    stats: Arc<AdapterMetrics>,
    stopping: CancellationToken,
    revoke_timeout: Duration,
    guard: Option<Arc<CrashGuard>>,
    /// Exactly-once: the engine settles the open transaction for revoked partitions.
    handover: Option<Arc<dyn Handover>>,
}

impl GroupContext {
    /// Exactly-once revoke: the engine commits (or aborts) the open transaction with the
    /// done prefix of the revoked partitions and forgets them; nothing is committed outside
    /// a transaction (a plain offset commit could pass outputs still in the open one).
    fn hand_over(&self, h: &dyn Handover, ids: &[PartitionId], abandoned: usize, started: Instant) {
        let r = off_runtime(|| h.hand_over(ids, self.revoke_timeout.max(Duration::from_secs(5))));
        if let Err(e) = r {
            self.stats.commit_failures.fetch_add(1, Relaxed);
            tracing::warn!(
                error = format!("{e:#}"),
                "handing revoked partitions over: their open transaction did not commit; \
                 their uncommitted events replay at the new owner"
            );
        }
        for id in ids {
            if let Some(g) = &self.guard {
                g.forget(*id);
            }
        }
        self.revoked(ids.len(), abandoned, started, "their transaction settled");
    }

    /// Count and log a revoke of `n` partitions.
    fn revoked(&self, n: usize, abandoned: usize, started: Instant, what: &str) {
        self.stats
            .revoke_abandoned
            .fetch_add(abandoned as u64, Relaxed);
        tracing::info!(
            partitions = n,
            waited_ms = started.elapsed().as_millis() as u64,
            abandoned,
            "partitions revoked; {what}"
        );
    }

    /// Wait (bounded) for the in-flight events of `ids`; returns how many are left. Once
    /// the worker is stopping (the consumer closes after the pipeline has drained or given
    /// up) nothing more will finish: no wait.
    fn wait_in_flight(&self, ids: &[PartitionId]) -> usize {
        let timeout = if self.stopping.is_cancelled() {
            Duration::ZERO
        } else {
            self.revoke_timeout
        };
        let deadline = Instant::now() + timeout;
        let wait = || loop {
            let left: usize = {
                let t = lock(&self.tracker);
                ids.iter().map(|id| t.in_flight_of(*id)).sum()
            };
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        off_runtime(wait)
    }
}

/// Run a blocking call from a rebalance callback, which runs inside the consumer's poll on
/// a runtime worker: the runtime moves its other tasks away while this one blocks.
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, s: Statistics) {
        let mut lag = 0i64;
        for t in s.topics.values() {
            for p in t.partitions.values() {
                if p.partition < 0 || !p.desired || p.hi_offset < 0 {
                    continue;
                }
                let done = if p.committed_offset >= 0 {
                    p.committed_offset
                } else {
                    p.lo_offset.max(0)
                };
                lag += (p.hi_offset - done).max(0);
            }
        }
        self.stats.consumer_lag.store(lag, Relaxed);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        self.stats.rebalances.fetch_add(1, Relaxed);
        let revoked: Vec<(PartitionId, String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| {
                (
                    self.map.id(e.topic(), e.partition()),
                    e.topic().to_owned(),
                    e.partition(),
                )
            })
            .collect();
        self.stats
            .partitions_revoked
            .fetch_add(revoked.len() as u64, Relaxed);
        // Stop taking their work, then give what is running a bounded time to finish.
        for (id, ..) in &revoked {
            self.map.set_assigned(*id, false);
        }
        let ids: Vec<PartitionId> = revoked.iter().map(|r| r.0).collect();
        let started = Instant::now();
        let abandoned = self.wait_in_flight(&ids);
        if let Some(h) = &self.handover {
            self.hand_over(h.as_ref(), &ids, abandoned, started);
            return;
        }
        let mut commit = TopicPartitionList::new();
        for (id, topic, partition) in &revoked {
            if let Some(next) = lock(&self.tracker).revoke(*id) {
                let _ = commit.add_partition_offset(topic, *partition, Offset::Offset(next as i64));
                if let Some(g) = &self.guard {
                    // Handed over in order: the next owner needs no suspect mode.
                    set_mark(&mut commit, topic, *partition, g.mark_for(*id, next, true));
                }
            }
            if let Some(g) = &self.guard {
                g.forget(*id);
            }
        }
        self.revoked(revoked.len(), abandoned, started, "committing what is done");
        if commit.count() > 0 {
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                self.stats.commit_failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "commit on revoke failed; those events replay");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.stats.rebalances.fetch_add(1, Relaxed);
                for e in tpl.elements() {
                    self.map
                        .set_assigned(self.map.id(e.topic(), e.partition()), true);
                }
                tracing::info!(partitions = tpl.count(), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
        if let Ok(a) = consumer.assignment() {
            self.stats
                .partitions_assigned
                .store(a.count() as i64, Relaxed);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            // The broker confirmed: only now do these positions count as committed.
            Ok(()) => {
                let mut t = lock(&self.tracker);
                for e in offsets.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        t.confirm(self.map.id(e.topic(), e.partition()), o.max(0) as u64);
                    }
                }
            }
            Err(e) => {
                self.stats.commit_failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "offset commit failed; it will be retried");
            }
        }
    }
}

/// A consumer-group source.
#[derive(Debug)]
pub struct KafkaSource {
    conn: KafkaConnection,
    group: GroupSettings,
    shared: KafkaShared,
}

impl KafkaSource {
    /// A source reading `group.topics` as member of `group.group_id`.
    pub fn new(conn: KafkaConnection, group: GroupSettings) -> (Self, KafkaShared) {
        let shared = KafkaShared::default();
        (
            Self {
                conn,
                group,
                shared: shared.clone(),
            },
            shared,
        )
    }
}

/// The pipeline's record of a message, with the partition's epoch at read time.
fn record(map: &PartitionMap, msg: &BorrowedMessage<'_>, limit: usize) -> (SourceRecord, u64) {
    let partition = map.id(msg.topic(), msg.partition());
    let traceparent = msg.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == "traceparent")
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    });
    let payload = msg.payload().unwrap_or_default();
    let rec = SourceRecord {
        partition,
        stream: msg.topic().to_owned(),
        offset: msg.offset().max(0) as u64,
        oversized: payload.len() > limit,
        payload: payload[..payload.len().min(limit)].to_vec(),
        traceparent,
    };
    (rec, map.epoch(partition))
}

pub(super) fn set_mark(tpl: &mut TopicPartitionList, topic: &str, partition: i32, mark: Mark) {
    if let Some(mut e) = tpl.find_partition(topic, partition) {
        e.set_metadata(mark.encode());
    }
}

fn set_paused(consumer: &StreamConsumer<GroupContext>, pause: bool) {
    let r = consumer.assignment().and_then(|a| {
        if pause {
            consumer.pause(&a)
        } else {
            consumer.resume(&a)
        }
    });
    if let Err(e) = r {
        tracing::warn!(error = %e, pause, "pausing/resuming the assignment failed");
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

    async fn run<H: SourceHandle>(self, emit: H) -> anyhow::Result<bool> {
        let cx = emit.context();
        let stats = cx.metrics.clone();
        stats.partitions_assigned.store(0, Relaxed);
        let ctx = GroupContext {
            map: self.shared.map.clone(),
            tracker: cx.positions.clone(),
            stats: stats.clone(),
            stopping: cx.stopping.clone(),
            revoke_timeout: self.group.revoke_timeout,
            guard: cx.guard.clone(),
            handover: cx.handover.clone(),
        };
        let consumer = Arc::new(self.consumer(ctx)?);
        *lock(&self.shared.consumer) = Some(consumer.clone());
        let map = &self.shared.map;
        let reader = Reader {
            consumer: &consumer,
            map,
            limit: cx.max_event_bytes,
            stats: &stats,
        };
        let shutdown = cx.shutdown.clone();
        // Records that arrived while paused (a partition assigned during the pause):
        // at most one per newly assigned partition.
        let mut held: VecDeque<(SourceRecord, u64)> = VecDeque::new();
        loop {
            let (rec, epoch) = match held.pop_front() {
                Some(r) => r,
                None => match reader.next(&shutdown).await {
                    Some(r) => r,
                    None => return Ok(false),
                },
            };
            let slot = match emit.try_slot() {
                Some(s) => s,
                None => match tokio::time::timeout(self.group.pause_after, emit.slot()).await {
                    Ok(Some(s)) => s,
                    Ok(None) => return Ok(false),
                    Err(_) => match reader.paused_until_slot(&emit, &mut held).await {
                        Some(s) => s,
                        None => return Ok(false),
                    },
                },
            };
            // A revoke may have run while waiting: its records belong to the new owner (or
            // to this worker again, from the committed offset: taking them now would put the
            // partition's positions out of order).
            held.retain(|(r, e)| map.is_current(r.partition, *e));
            if !map.is_current(rec.partition, epoch) {
                continue;
            }
            let (id, epoch_of) = (rec.partition, epoch);
            let Some(admit) = emit.admit(&rec, &|| map.is_current(id, epoch_of)).await else {
                return Ok(false);
            };
            if !map.is_current(rec.partition, epoch) {
                continue;
            }
            if !emit.emit_in(rec, slot, admit).await {
                return Ok(false);
            }
        }
    }
}

impl KafkaSource {
    /// The group's consumer, subscribed to the input topics: manual commits,
    /// cooperative-sticky assignment, a bounded pre-fetch queue, the group's timings.
    fn consumer(&self, ctx: GroupContext) -> anyhow::Result<StreamConsumer<GroupContext>> {
        let ms = |d: Duration| d.as_millis().to_string();
        let consumer: StreamConsumer<GroupContext> = self
            .conn
            .client_config()
            .set("group.id", &self.group.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Records of aborted upstream transactions are never read (librdkafka's
            // default, stated: exactly-once pipelines chain).
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("queued.max.messages.kbytes", "16384")
            .set("statistics.interval.ms", ms(self.group.statistics_interval))
            .set("session.timeout.ms", ms(self.group.session_timeout))
            // A third of the session (librdkafka's default 3 s at most): a few beats per
            // session, however short it is set.
            .set(
                "heartbeat.interval.ms",
                (self.group.session_timeout.as_millis() / 3)
                    .clamp(1, 3000)
                    .to_string(),
            )
            .create_with_context(ctx)
            .context("creating the Kafka consumer")?;
        let topics: Vec<&str> = self.group.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).context("subscribing")?;
        Ok(consumer)
    }
}

/// Reading records off the group's consumer.
struct Reader<'a> {
    consumer: &'a StreamConsumer<GroupContext>,
    map: &'a PartitionMap,
    limit: usize,
    stats: &'a AdapterMetrics,
}

impl Reader<'_> {
    /// The next record with its partition's epoch; `None` on shutdown. Consumer errors are
    /// logged and polling goes on (librdkafka reconnects by itself: broker restarts).
    async fn next(&self, shutdown: &CancellationToken) -> Option<(SourceRecord, u64)> {
        loop {
            let msg = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                m = self.consumer.recv() => m,
            };
            match msg {
                Ok(m) => return Some(record(self.map, &m, self.limit)),
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Every in-flight slot is taken: pause the assignment (so the group sees a live member
    /// and the pre-fetch stops) until a slot frees, holding what arrives meanwhile (a
    /// partition assigned during the pause is not paused yet). `None` when the engine stops.
    async fn paused_until_slot<H: SourceHandle>(
        &self,
        emit: &H,
        held: &mut VecDeque<(SourceRecord, u64)>,
    ) -> Option<H::Slot> {
        set_paused(self.consumer, true);
        self.stats.paused.store(true, Relaxed);
        self.stats.pauses.fetch_add(1, Relaxed);
        tracing::debug!("every in-flight slot taken: partitions paused");
        let slot = loop {
            tokio::select! {
                biased;
                s = emit.slot() => break s,
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        held.push_back(record(self.map, &m, self.limit));
                        set_paused(self.consumer, true);
                    }
                    Err(e) => tracing::warn!(error = %e, "kafka consumer error"),
                },
            }
        };
        set_paused(self.consumer, false);
        self.stats.paused.store(false, Relaxed);
        slot
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ctx(timeout: Duration) -> GroupContext {
        GroupContext {
            map: Arc::default(),
            tracker: Arc::new(Mutex::new(PositionTracker::new())),
            stats: Arc::default(),
            stopping: CancellationToken::new(),
            revoke_timeout: timeout,
            guard: None,
            handover: None,
        }
    }

    #[test]
    fn a_revoke_waits_for_in_flight_events_to_finish() {
        let c = ctx(Duration::from_secs(10));
        for o in 0..3 {
            lock(&c.tracker).track(0, o).unwrap();
        }
        lock(&c.tracker).track(1, 7).unwrap();
        let tracker = c.tracker.clone();
        let finisher = std::thread::spawn(move || {
            for o in 0..3 {
                std::thread::sleep(Duration::from_millis(30));
                lock(&tracker).complete(0, o).unwrap();
            }
        });
        let started = Instant::now();
        // Partition 1 is not revoked: its event does not hold the revoke up.
        assert_eq!(c.wait_in_flight(&[0]), 0);
        assert!(started.elapsed() >= Duration::from_millis(90));
        finisher.join().unwrap();
    }

    #[test]
    fn a_revoke_abandons_what_is_still_running_after_the_bound() {
        let c = ctx(Duration::from_millis(100));
        lock(&c.tracker).track(0, 0).unwrap();
        lock(&c.tracker).track(0, 1).unwrap();
        lock(&c.tracker).complete(0, 0).unwrap();
        assert_eq!(c.wait_in_flight(&[0]), 1);
    }

    #[test]
    fn records_read_before_a_revoke_are_stale_even_after_a_reassignment() {
        let m = PartitionMap::default();
        let id = m.id("events", 0);
        m.set_assigned(id, true);
        let epoch = m.epoch(id);
        assert!(m.is_current(id, epoch));
        m.set_assigned(id, false);
        assert!(!m.is_current(id, epoch));
        m.set_assigned(id, true);
        assert!(
            !m.is_current(id, epoch),
            "revoked and re-assigned in between"
        );
        assert!(m.is_current(id, m.epoch(id)));
    }

    #[test]
    fn a_revoke_while_stopping_does_not_wait() {
        let c = ctx(Duration::from_secs(3600));
        lock(&c.tracker).track(0, 0).unwrap();
        c.stopping.cancel();
        assert_eq!(c.wait_in_flight(&[0]), 1);
    }
}
