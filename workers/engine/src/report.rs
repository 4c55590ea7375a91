//! What the engine tells the world as it runs: one [`Report`] variant per thing that happens,
//! emitted where it happens, handed to a [`Reporter`] the caller supplies. The engine keeps
//! no counters for others to read: the worker's telemetry turns reports into Prometheus
//! series and the run summary; a test can count what it wants; an embedder that wants none
//! passes [`Discard`].
//!
//! Reports are cheap to make (plain values and borrows) and emitted per event, per batch or
//! per group of records, never per byte. A [`Reporter`] must not block: it is called from the
//! async stages and from the model thread.

use std::time::Duration;

use fusionstream_core::moderation::Action;
use fusionstream_core::record::Stream;
use fusionstream_core::schedule::Ready;
use fusionstream_core::{Lane, Priority, ReasonCode};

/// Stages of an event whose durations are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Media fetch (with retries).
    Fetch,
    /// Decode, resize, tokenise.
    Preprocess,
    /// Waiting in the batcher and the model queue.
    Queue,
    /// Forward passes (sum over the event's lanes).
    Model,
    /// Writing and acknowledging the outputs (per group of events).
    Publish,
    /// Read to acknowledged.
    Total,
}

impl Stage {
    /// Every stage, in index order.
    pub const ALL: [Stage; 6] = [
        Stage::Fetch,
        Stage::Preprocess,
        Stage::Queue,
        Stage::Model,
        Stage::Publish,
        Stage::Total,
    ];

    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Fetch => "fetch",
            Stage::Preprocess => "preprocess",
            Stage::Queue => "queue",
            Stage::Model => "model",
            Stage::Publish => "publish",
            Stage::Total => "total",
        }
    }

    /// Position in [`Stage::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a finished event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Outputs written.
    Processed {
        /// Degradation reason codes.
        degraded: Vec<ReasonCode>,
        /// Skipped `task:reason` pairs.
        skipped: Vec<String>,
    },
    /// Dead-lettered with this reason.
    DeadLetter(ReasonCode),
}

impl Outcome {
    /// `ok`, `degraded` or `dead_letter`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Processed { degraded, .. } if degraded.is_empty() => "ok",
            Outcome::Processed { .. } => "degraded",
            Outcome::DeadLetter(_) => "dead_letter",
        }
    }
}

/// One thing that happened in the engine.
#[derive(Debug, Clone, Copy)]
pub enum Report<'a> {
    /// The engine starts with these lane limits (`max_items` per lane, for batch fill ratios).
    LanesConfigured {
        /// `[encode, generate]`.
        max_items: [usize; 2],
    },
    /// The source handed an event to the engine.
    EventRead,
    /// An event finished: its outputs or its dead letter are acknowledged.
    EventFinished {
        /// How it ended.
        outcome: &'a Outcome,
        /// Read to acknowledged.
        latency: Duration,
    },
    /// Records of an event were acknowledged (one entry per record).
    RecordsAcked {
        /// The stream of each record.
        streams: &'a [Stream],
    },
    /// A lane's outputs of an event were acknowledged.
    LaneAcked {
        /// The lane.
        lane: Lane,
        /// The event's priority.
        priority: Priority,
        /// Read to acknowledged.
        since_read: Duration,
    },
    /// A stage of an event (or, for `Publish`, of a group of events) took this long.
    StageTimed {
        /// Which stage.
        stage: Stage,
        /// How long.
        took: Duration,
    },
    /// A media fetch started (ends with [`Report::FetchEnded`], also when abandoned).
    FetchStarted,
    /// A media fetch ended.
    FetchEnded,
    /// The parts waiting for a batch (open batches, or the scheduler's queue) now number this.
    PartsWaiting(usize),
    /// A closed batch was queued for the model thread (`fifo`).
    BatchQueued,
    /// The model thread took a queued batch (`fifo`).
    BatchTaken,
    /// The scheduler started a batch.
    BatchScheduled {
        /// Its lane.
        lane: Lane,
        /// Why the lane was ready.
        ready: Ready,
        /// The time slice cut it short.
        sliced: bool,
    },
    /// The model ran a batch.
    BatchRan {
        /// Its lane.
        lane: Lane,
        /// Its items.
        items: usize,
        /// Time in forward passes.
        took: Duration,
    },
    /// A part waited this long for its batch to start.
    QueueWaited {
        /// Its lane.
        lane: Lane,
        /// Its event's priority.
        priority: Priority,
        /// Queued to batch start.
        waited: Duration,
    },
    /// A failed batch was split this many times to isolate the items that fail it.
    BatchSplit {
        /// Splits (halvings).
        splits: usize,
    },
    /// The model failed on an item alone (its event is dead-lettered).
    ItemFailed {
        /// The failure was a panic.
        panicked: bool,
    },
    /// Decoding or preprocessing an event panicked (its event is dead-lettered).
    IntakePanicked,
    /// A moderation decision was made.
    ModerationDecided {
        /// What it decided.
        action: Action,
    },
    /// An entry of this known list matched an event.
    ListMatched {
        /// The list's id.
        list: &'a str,
    },
    /// A known list changed but its new version could not be loaded (the old one stays).
    ListReloadFailed,
    /// The read-ahead window is now this many events.
    WindowResized(usize),
    /// A group of records was sent again after its acknowledgement failed.
    PublishRetried,
    /// The store refused an output record as too large (replaced by a dead letter).
    OutputTooLarge,
    /// Positions were sent to the committer.
    CommitSent,
    /// A commit failed (it is retried).
    CommitFailed,
    /// Partitions whose done position is not yet confirmed as committed.
    UncommittedPartitions(usize),
    /// Exactly-once: a transaction committed outputs and offsets.
    TransactionCommitted {
        /// Events whose outputs it holds (their last pieces).
        events: usize,
        /// Output records it holds.
        records: usize,
        /// Flush, offsets and commit.
        took: Duration,
    },
    /// Exactly-once: a transaction was aborted (its records are sent again in the next one,
    /// or replayed by the new owner of a revoked partition).
    TransactionAborted,
    /// Exactly-once: the transactional producer was recreated after a fatal error.
    ProducerRecovered,
    /// Exactly-once: a newer worker with the same transactional id fenced this one.
    Fenced,
    /// Exactly-once: output pieces held back (their events past a gap in the done prefix).
    HeldBack(usize),
}

/// Where the engine's reports go. Called from async tasks and the model thread: it must not
/// block.
pub trait Reporter: std::fmt::Debug + Send + Sync + 'static {
    /// Something happened.
    fn report(&self, report: Report<'_>);
}

/// A reporter that keeps nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl Reporter for Discard {
    fn report(&self, _: Report<'_>) {}
}
