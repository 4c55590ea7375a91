//! Pure logic of fusionstream: what an event is, what it gets, how work is batched and
//! when a source position may be acknowledged. No I/O, no async runtime, no model: every
//! rule here is unit- and property-tested on its own.
//!
//! | module | owns |
//! |---|---|
//! | [`task`] | tasks, lanes, skip reasons |
//! | [`event`] | input event v1: parsing, validation, limits, rejection codes |
//! | [`degrade`] | the degradation matrix and its policy |
//! | [`batch`] | the micro-batcher (lanes, max items, max wait, pixel/token budgets) |
//! | [`schedule`] | the model thread's scheduler: priorities, aging, deadlines, lanes, time slices |
//! | [`embedlist`] | lists of known embeddings: format, matching by cosine similarity |
//! | [`hashlist`] | lists of known perceptual hashes: format, multi-index search within a distance |
//! | [`moderation`] | moderation signals, policy (thresholds, actions, tenants), the decision |
//! | [`isolate`] | bisection of a failed batch down to the item(s) that fail it |
//! | [`crash_guard`] | the crash-loop guard: marks beside commits, suspect mode, `poison_suspected` |
//! | [`position`] | per-partition tracker of the contiguous done prefix |
//! | [`held_back`] | exactly-once: outputs held until their events are in the done prefix |
//! | [`record`] | output records v1 and the output streams |
//! | [`reason`] | every reason code (degradations, dead letters, metric labels) |
//! | [`backoff`] | retry schedule with full jitter |
//! | [`backfill_shard`] | backfill over an object-store prefix: which objects a shard takes (object filter), the event each becomes |
//! | [`error`] | the retryable / poison / fatal taxonomy |

pub mod backfill_shard;
pub mod backoff;
pub mod batch;
pub mod checkpoint;
pub mod crash_guard;
pub mod degrade;
pub mod embedlist;
pub mod error;
pub mod event;
pub mod hashlist;
pub mod held_back;
pub mod isolate;
pub mod moderation;
pub mod position;
pub mod reason;
pub mod record;
pub mod schedule;
pub mod task;

pub use error::{Classify, ErrorClass};
pub use reason::ReasonCode;
pub use schedule::Priority;
pub use task::{Lane, SkipReason, Skipped, Task, TaskSet};

/// Lock a mutex, taking the data of a poisoned one: every holder in the worker leaves the
/// data it guards consistent between statements, so a panic elsewhere is no reason to stop.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
