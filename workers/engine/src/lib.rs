//! fusionstream's streaming engine: source → decode event → fetch media → preprocess →
//! micro-batcher → model thread → assemble → sink → acknowledge → commit.
//!
//! The binary (`fusionstream`) chooses the adapters from its configuration and runs the engine
//! over them with [`run`]; tests run it over local files or any [`Backend`].
//!
//! Every hop is a bounded channel or a semaphore, and a permit per in-flight event (at most
//! `pipeline.max_in_flight`) is taken before the source reads the next event and returned
//! only when that event's outputs are acknowledged: memory is bounded and back-pressure
//! reaches the source. Image decoding runs on the blocking pool under a CPU semaphore, the
//! model on its own OS thread; tokio worker threads only move data.
//!
//! Positions are acknowledged by the
//! [`PositionTracker`](fusionstream_core::position::PositionTracker): the contiguous done prefix per
//! partition, so completions in any order never skip an event. Shutdown (the cancel token):
//! the source stops, in-flight events drain within `shutdown.drain_timeout`, what is done is
//! committed.
//!
//! The engine knows its source, sink and committer only by their ports
//! (`fusionstream_io::ports`); the adapters are in `fusionstream_io`. It keeps no counters for
//! others: what happens is reported to the caller's [`Reporter`].
//!
//! | file | owns |
//! |---|---|
//! | `lib.rs` | what a run needs ([`Parts`]) and how it ended ([`RunEnd`]) |
//! | `run.rs` | [`run`]: the stages started over bounded channels, the wait, the drain, the last commit |
//! | `settings.rs` | the engine's settings (plain values; the app derives them from its configuration) |
//! | `report.rs` | what the engine reports as it runs ([`Report`], one variant per thing that happens) and where reports go ([`Reporter`]) |
//! | `trace_context.rs` | W3C trace context: event spans parented to their records, batch spans linked, outputs' `traceparent` |
//! | `envelope.rs` | the messages between stages (event context, parts, finished events) |
//! | `emitter.rs` | the engine's [`fusionstream_io::ports::SourceHandle`]: permits, crash guard, tracking |
//! | `intake.rs` | one task per event: decode, validate, fetch, preprocess, degrade or dead-letter |
//! | `fetch.rs` | an image fetch with per-attempt timeout and retries |
//! | `modalities.rs` | modalities prepared for the model, or why each is unusable |
//! | `scheduler.rs` | the `priority` scheduler's queue: the intake pushes, the model thread takes the batch `core::schedule` picks |
//! | `batching.rs` | the `fifo` micro-batcher task over `core::batch` |
//! | `model_thread.rs` | the model's OS thread, failure isolation around each call |
//! | `window.rs` | the adaptive read-ahead (in-flight permits sized by Little's law) |
//! | `assemble.rs` | each lane's outputs as records, as soon as the lane is done; the event's outcome |
//! | `sink.rs` | writing and acknowledging outputs, completing positions |
//! | `transaction.rs` | exactly-once: outputs held back to the done prefix, committed with the offsets in one transaction |
//! | `commit.rs` | the commit schedule: interval, backoff while failing, the last commit |
//! | `known_lists.rs` | known-hash lists: the snapshot, swapped on reload, and an image's matches |
//! | `oversize.rs` | records too large for the broker: cut dead letters, `output_too_large` |
//! | `memory.rs` | the worker's memory bound, computed from the settings |
//! | `faults.rs` | faults injected for tests (`FUSIONSTREAM_TEST_FAULTS`) |

mod assemble;
mod batching;
mod commit;
mod emitter;
mod envelope;
pub mod faults;
mod fetch;
mod intake;
pub mod known_lists;
pub mod memory;
mod modalities;
mod model_thread;
mod oversize;
pub mod report;
mod run;
mod scheduler;
mod settings;
mod sink;
pub mod trace_context;
mod transaction;
mod window;

use std::sync::Arc;

use fusionstream_io::media::MediaStores;
use fusionstream_io::metrics::AdapterMetrics;
use fusionstream_model::{Backend, FusionModel};
use tokio_util::sync::CancellationToken;

pub(crate) use emitter::Taken;
pub use emitter::{Emitter, Slot};
pub use report::{Discard, Outcome, Report, Reporter, Stage};
pub use run::run;
pub use settings::{Settings, TransactionTiming};

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The source was read to its end and everything finished.
    Completed,
    /// Shutdown was requested; in-flight events drained.
    Drained,
    /// Shutdown was requested and the drain timed out; unfinished events were abandoned
    /// (not acknowledged: they run again on the next start).
    DrainTimedOut {
        /// Events abandoned.
        abandoned: usize,
    },
}

/// Everything the pipeline needs.
#[derive(Debug)]
pub struct Parts<S, K, C> {
    /// Settings.
    pub settings: Settings,
    /// The model: its manifest, and preprocessing for the intake.
    pub model: Arc<FusionModel>,
    /// What runs the batches on the model thread: the model itself in production, any
    /// [`Backend`] in tests.
    pub backend: Arc<dyn Backend>,
    /// Media stores.
    pub media: MediaStores,
    /// Source.
    pub source: S,
    /// Sink.
    pub sink: K,
    /// Committer.
    pub committer: C,
    /// What the source and committer adapters count (shared with them through their
    /// context; the engine reads the commit failures the store reports late).
    pub adapter_metrics: Arc<AdapterMetrics>,
    /// Cancelled by the engine when its drain begins: readiness goes away, and sources stop
    /// waiting for in-flight events that can no longer finish.
    pub stopping: CancellationToken,
}
