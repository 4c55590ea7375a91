//! The ports of the pipeline: what a source, an output sink and a committer are to the
//! engine, so that every adapter (local files, Kafka, the S3 backfill) lives beside its
//! client here and the engine names none of them.
//!
//! - A [`Source`] reads records and hands them to the engine through a [`SourceHandle`]:
//!   the handle reserves room for one more event (back-pressure), asks the crash guard
//!   about the record and tracks its position. The engine implements the handle.
//! - An [`OutputSink`] writes output records; they count as acknowledged when `flush`
//!   returns. Its errors are typed ([`PublishError`]): the engine retries, cuts or stops
//!   by their kind, never by looking at a client's error type.
//! - A [`Committer`] records acknowledged positions; a position counts as committed only once
//!   confirmed ([`CommitAck`]).
//! - [`Transactions`]: a sink that commits its outputs and the input positions in one
//!   transaction (exactly-once, Kafka transactions) offers them through
//!   [`OutputSink::transactions`]; the engine then holds outputs back until their events are
//!   in the done prefix and commits through it instead of the committer. A source whose
//!   partitions can be taken away mid-transaction asks the engine to settle it first
//!   ([`Handover`]).
//! - A [`Feed`] is the other kind of input: every record of a stream from positions its
//!   reader saved itself, polled from a blocking thread, without permits or commits per
//!   record (the live index reads the embeddings this way).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusionstream_core::crash_guard::Admit;
use fusionstream_core::position::{PartitionId, PositionTracker};
use fusionstream_core::record::Stream;
use fusionstream_core::{Classify, ErrorClass};
use tokio_util::sync::CancellationToken;

use crate::crash_marks::CrashGuard;
use crate::metrics::AdapterMetrics;
use crate::SourceRecord;

/// What a source's callbacks (a consumer group's rebalances and commit confirmations) share
/// with the engine.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The positions in flight and done, per partition.
    pub positions: Arc<Mutex<PositionTracker>>,
    /// What the adapters count.
    pub metrics: Arc<AdapterMetrics>,
    /// The crash guard of the run's committer, if it keeps marks.
    pub guard: Option<Arc<CrashGuard>>,
    /// Shutdown was requested: stop reading.
    pub shutdown: CancellationToken,
    /// The engine is stopping (draining or given up): nothing in flight will finish any
    /// more, so nothing should wait for it.
    pub stopping: CancellationToken,
    /// Longest payload a record may carry (longer ones are cut and flagged `oversized`).
    pub max_event_bytes: usize,
    /// Exactly-once: how the source hands revoked partitions over (their open transaction
    /// settled first); `None`: the source commits what is done itself.
    pub handover: Option<Arc<dyn Handover>>,
}

/// Revoked partitions handed over by the engine (exactly-once): the open transaction is
/// committed with their done prefix, or aborted, and the engine forgets them, before the
/// source gives them up. Blocking: called from a rebalance callback.
pub trait Handover: Send + Sync + std::fmt::Debug {
    /// Settle the open transaction for `partitions` and forget them, within `timeout`.
    fn hand_over(&self, partitions: &[PartitionId], timeout: Duration) -> anyhow::Result<()>;
}

/// Why a transaction did not commit, by what the engine does next.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// Abort the transaction and send its records again in a new one (a failed delivery,
    /// `txn_requires_abort`).
    #[error("transaction must be aborted: {0}")]
    Abortable(BoxError),
    /// The producer is unusable (unknown producer id, a commit that timed out: the outcome
    /// is unknown): recreate it, find out from the committed positions whether the
    /// transaction committed, send again if not.
    #[error("transactional producer failed: {0}")]
    Fatal(BoxError),
    /// A newer worker with the same transactional id took over: this one must stop without
    /// writing anything more.
    #[error("fenced by a newer worker with the same transactional id: {0}")]
    Fenced(BoxError),
}

/// The transactional side of a sink: blocking calls the engine makes off the async runtime.
/// Records are written into the open transaction with [`OutputSink::write`] (which begins one
/// if none is open) and their deliveries awaited with [`OutputSink::flush`].
pub trait Transactions: Send + Sync + std::fmt::Debug {
    /// Commit the open transaction with `positions` (the next position to read, per
    /// partition) as the consumer group's offsets; the crash guard's marks of the `clean`
    /// partitions say they were left in order (a handover, a clean stop). `last`: the clean
    /// stop's commit, which also marks clean the assigned partitions this worker read nothing
    /// from and that have nothing left to read.
    fn commit(
        &self,
        positions: &[(PartitionId, u64)],
        clean: &[PartitionId],
        last: bool,
        timeout: Duration,
    ) -> Result<(), TxnError>;
    /// Whether an event's in-flight permit may return once its outputs are written into the
    /// open transaction, the transaction being bounded by its event count instead of the
    /// in-flight window (a sink that stages what is written, the lake: its commits would
    /// otherwise be as small as the window). Default: the permit returns at the commit.
    fn release_on_write(&self) -> bool {
        false
    }
    /// Whether the engine also records each committed transaction's positions with the
    /// run's committer, for information (the lake: its commits are the truth; a Kafka
    /// group's offsets then show the lag to monitoring, a backfill's checkpoint file the
    /// progress). Default: no, the transaction carries them.
    fn informs_committer(&self) -> bool {
        false
    }
    /// Abort the open transaction (if any): nothing of it becomes visible.
    fn abort(&self, timeout: Duration) -> Result<(), TxnError>;
    /// Replace an unusable producer by a new one with the same transactional id (which
    /// finishes or aborts what the old one left open).
    fn recover(&self, timeout: Duration) -> Result<(), TxnError>;
    /// The group's committed positions of `partitions` now (`None`: none committed).
    fn committed(
        &self,
        partitions: &[PartitionId],
        timeout: Duration,
    ) -> anyhow::Result<Vec<(PartitionId, Option<u64>)>>;
}

/// The durable names of a source's positions, for a sink that stores them with its outputs
/// (the lake: in each commit): a position of this run (a backfill's ordinal) as what a
/// later run resumes from (the last key done).
pub trait PositionLabels: Send + Sync + std::fmt::Debug {
    /// Source → durable position, for `positions` (the next position, per partition).
    fn durable(&self, positions: &[(PartitionId, u64)])
        -> anyhow::Result<BTreeMap<String, String>>;

    /// The partition a durable source name stands for in this run, if the source can say
    /// (Kafka: `kafka:<topic>/<partition>`); a backfill's shard has no use for it.
    fn partition_of(&self, _source: &str) -> Option<PartitionId> {
        None
    }
}

/// The source's handle into the engine.
pub trait SourceHandle: Clone + Send + Sync + 'static {
    /// Room for one more event in the engine.
    type Slot: Send + 'static;

    /// What the source's callbacks share with the engine.
    fn context(&self) -> &SourceContext;

    /// Wait for room for one more event; `None` when shutting down.
    fn slot(&self) -> impl Future<Output = Option<Self::Slot>> + Send;

    /// Room for one more event, if there is some now.
    fn try_slot(&self) -> Option<Self::Slot>;

    /// Ask the crash guard about `rec` (see [`CrashGuard`]): after an unclean exit this may
    /// wait until nothing else of its partition is in flight. `None` when shutting down.
    /// `still_ours` tells whether the partition is still this worker's after the wait.
    fn admit(
        &self,
        rec: &SourceRecord,
        still_ours: &(dyn Fn() -> bool + Sync),
    ) -> impl Future<Output = Option<Admit>> + Send;

    /// Hand one record to the engine in the room `slot` reserved, with the crash guard's
    /// decision on it; false when shutting down.
    fn emit_in(
        &self,
        rec: SourceRecord,
        slot: Self::Slot,
        admit: Admit,
    ) -> impl Future<Output = bool> + Send;

    /// Hand one record to the engine, waiting for room; false when shutting down.
    fn emit(&self, rec: SourceRecord) -> impl Future<Output = bool> + Send {
        async move {
            let Some(slot) = self.slot().await else {
                return false;
            };
            match self.admit(&rec, &|| true).await {
                Some(admit) => self.emit_in(rec, slot, admit).await,
                None => false,
            }
        }
    }
}

/// Anything that feeds events into the pipeline.
pub trait Source: Send + 'static {
    /// `kind` of the source positions (`local`, `kafka`, `s3`).
    fn kind(&self) -> &'static str;
    /// Partitions and their start positions.
    fn partitions(&self) -> Vec<(PartitionId, u64)>;
    /// Read until the end (returns true) or until the handle refuses a record (shutdown).
    fn run<H: SourceHandle>(self, handle: H) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// A boxed error of an adapter's client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why outputs were not acknowledged, by what the engine does next.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Transient (a broker away, a timeout): the engine writes the records again.
    #[error(transparent)]
    Retryable(BoxError),
    /// The store refuses a record as too large: it cannot go as it is, but it can be cut or
    /// replaced by a dead letter.
    #[error(transparent)]
    TooLarge(BoxError),
    /// Nothing later can fix it (authorisation, a file that cannot be written): the worker
    /// stops; nothing unacknowledged is committed.
    #[error(transparent)]
    Fatal(BoxError),
}

impl PublishError {
    /// A client error by its class (a too-large refusal is told apart by the adapter).
    pub fn classified<E: Classify + std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        match e.class() {
            ErrorClass::Retryable => Self::Retryable(Box::new(e)),
            ErrorClass::Poison | ErrorClass::Fatal => Self::Fatal(Box::new(e)),
        }
    }
}

impl Classify for PublishError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Retryable(_) => ErrorClass::Retryable,
            Self::TooLarge(_) => ErrorClass::Poison,
            Self::Fatal(_) => ErrorClass::Fatal,
        }
    }
}

/// Where outputs go. A record counts as acknowledged when `flush` returns.
pub trait OutputSink: Send + 'static {
    /// Queue one record keyed by its event id, with the trace context of its event.
    fn write(
        &mut self,
        stream: Stream,
        key: &str,
        json: &[u8],
        traceparent: Option<&str>,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
    /// Wait until everything written is acknowledged.
    fn flush(&mut self) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Exactly-once: the transactions this sink commits its outputs and the input positions
    /// in; `None` (the default): outputs count as acknowledged at `flush`, positions go to
    /// the committer.
    fn transactions(&self) -> Option<Arc<dyn Transactions>> {
        None
    }
}

/// What a committer knows when [`Committer::commit`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitAck {
    /// Stored: the positions are confirmed.
    Confirmed,
    /// Sent: the store confirms later (the Kafka commit callback calls
    /// [`PositionTracker::confirm`]); until then the positions stay pending and are sent
    /// again.
    Sent,
}

/// Where acknowledged positions are recorded. A position counts as committed only once
/// confirmed; what is not confirmed is committed again (with backoff after failures), also
/// on a quiet stream and at shutdown.
pub trait Committer: Send + 'static {
    /// Commit positions (the next position to read, per partition).
    fn commit(&mut self, positions: &[(PartitionId, u64)]) -> anyhow::Result<CommitAck>;

    /// Commit and wait for the confirmation, at most `timeout` (at shutdown, when nothing
    /// else will deliver a later confirmation).
    fn commit_and_wait(
        &mut self,
        positions: &[(PartitionId, u64)],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let _ = timeout;
        match self.commit(positions)? {
            CommitAck::Confirmed => Ok(()),
            CommitAck::Sent => anyhow::bail!("commit sent but not confirmed"),
        }
    }

    /// The crash-loop guard whose marks this committer keeps beside its positions (its
    /// commits carry them; `commit_and_wait`, the last commit of a clean stop, marks them
    /// clean); `None` when it keeps none.
    fn crash_guard(&self) -> Option<Arc<CrashGuard>> {
        None
    }

    /// Nothing more will be committed: release what the committer shares with its source
    /// (a consumer group's consumer leaves the group now, not when its session times out).
    /// May block; the engine calls it off the async runtime, once, after the last commit.
    fn close(&mut self) {}
}

/// One record a [`Feed`] read.
#[derive(Debug)]
pub struct FeedRecord {
    /// The key of its position: `topic/partition` or the file's name.
    pub source: String,
    /// The position of the next record.
    pub next: u64,
    /// The record.
    pub payload: Vec<u8>,
}

/// Every record of a stream, from the positions its reader saved with its own state.
pub trait Feed: Send + std::fmt::Debug {
    /// Up to `max` records, waiting at most `wait` for the first.
    fn poll(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<FeedRecord>>;

    /// Whether everything that existed when the feed was opened (Kafka: the high watermarks
    /// then; a file: its end) has been read, given the reader's `positions`.
    fn caught_up(&self, positions: &BTreeMap<String, u64>) -> bool;

    /// The reader saved `positions` durably: record them where the stream keeps positions
    /// (a group's offsets, for lag monitoring), if it does.
    fn saved(&self, _positions: &BTreeMap<String, u64>) {}

    /// What the feed reads, for logs.
    fn describe(&self) -> String;
}
