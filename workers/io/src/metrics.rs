//! What the adapters count: the consumer group's assignment, lag, pauses, rebalances and
//! revoked partitions, a source's retried requests, commits, and the crash guard's suspect
//! partitions. The engine holds one [`AdapterMetrics`] and hands it to its source and
//! committer; the worker's `/metrics` and run summary read it.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};

/// Counters and gauges the adapters keep (lock-free; `Relaxed` is enough for each alone).
#[derive(Debug)]
pub struct AdapterMetrics {
    /// Partitions assigned to this worker (-1: not a consumer-group source).
    pub partitions_assigned: AtomicI64,
    /// Consumer lag summed over the assigned partitions (-1: unknown).
    pub consumer_lag: AtomicI64,
    /// Whether the source is paused for back-pressure.
    pub paused: AtomicBool,
    /// Times the source paused.
    pub pauses: AtomicU64,
    /// Rebalances seen (assign and revoke callbacks).
    pub rebalances: AtomicU64,
    /// Partitions taken from this worker by rebalances.
    pub partitions_revoked: AtomicU64,
    /// Source operations retried after a retryable error (a backfill's listing requests).
    pub source_retries: AtomicU64,
    /// Revoked in-flight events abandoned after `kafka.revoke_timeout`.
    pub revoke_abandoned: AtomicU64,
    /// Commits of positions.
    pub commits: AtomicU64,
    /// Failed commits (those `commit` returns and those a store reports later).
    pub commit_failures: AtomicU64,
    /// Partitions resumed after an unclean exit (crash guard: suspect mode).
    pub suspect_resumes: AtomicU64,
    /// Events run alone in suspect mode.
    pub run_alone: AtomicU64,
}

impl Default for AdapterMetrics {
    fn default() -> Self {
        Self {
            partitions_assigned: AtomicI64::new(-1),
            consumer_lag: AtomicI64::new(-1),
            paused: AtomicBool::new(false),
            pauses: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            partitions_revoked: AtomicU64::new(0),
            source_retries: AtomicU64::new(0),
            revoke_abandoned: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            suspect_resumes: AtomicU64::new(0),
            run_alone: AtomicU64::new(0),
        }
    }
}
