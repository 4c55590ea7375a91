//! The crash-loop guard's waiting and marks. The rules (marks, suspect mode, when an event is
//! refused) are [`fusionstream_core::crash_guard`]; here the guard reads and writes the
//! marks through its store (the committer's: Kafka offset-commit metadata, the local
//! checkpoint file) and holds a suspect partition's next event until nothing else of the
//! partition is in flight, so that the attempt it records is the only thing running.
//!
//! The first record read from a partition is its resume position: the guard reads the
//! partition's mark there, and (unless it is suspect) claims it by committing that position
//! with a `running` mark, so a crash before the first regular commit is known as one too.
//!
//! Committers that keep marks hand out their guard ([`crate::ports::Committer::crash_guard`]); the
//! emitter asks it about every record before the record is tracked; commits carry
//! [`CrashGuard::mark_for`] (`running`, or `clean` for the last commit of a clean stop and
//! for a partition handed over in a rebalance).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusionstream_core::backoff::Backoff;
use fusionstream_core::crash_guard::{Admit, GuardSettings, Mark, PartitionGuard};
use fusionstream_core::position::{PartitionId, PositionTracker};
use tokio_util::sync::CancellationToken;

use crate::metrics::AdapterMetrics;
use crate::retry::retry;
use fusionstream_core::lock;

/// Where marks are kept: beside the committed positions.
pub trait MarkStore: Send + Sync + 'static {
    /// The mark stored with the partition's committed position (`None`: no commit yet, or
    /// metadata that is not a mark).
    fn read(&self, partition: PartitionId) -> anyhow::Result<Option<Mark>>;
    /// Commit `next` for the partition with `mark` and wait for the store's confirmation.
    fn write(&self, partition: PartitionId, next: u64, mark: Mark) -> anyhow::Result<()>;
}

/// The guard of every partition of one worker.
pub struct CrashGuard {
    settings: GuardSettings,
    store: Box<dyn MarkStore>,
    parts: Mutex<HashMap<PartitionId, PartitionGuard>>,
    /// Positions are committed in transactions with the outputs (exactly-once): an event run
    /// alone also waits for everything before it to be committed.
    transactional: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for CrashGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashGuard")
            .field("settings", &self.settings)
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

/// Reading a mark: a few tries, then the partition is taken as suspect (slower, never
/// unsafe).
const READ_TRIES: u32 = 3;

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(5),
        retries: u32::MAX,
    }
}

impl CrashGuard {
    /// A guard keeping its marks in `store`.
    pub fn new(settings: GuardSettings, store: impl MarkStore) -> Arc<Self> {
        Arc::new(Self {
            settings,
            store: Box::new(store),
            parts: Mutex::new(HashMap::new()),
            transactional: false.into(),
        })
    }

    /// Positions are committed in transactions together with the outputs: before an event
    /// runs alone, what precedes it must be committed too (the mark's own commit of its
    /// offset would otherwise move the group past outputs still in the open transaction).
    pub fn commit_in_transactions(&self) {
        self.transactional.store(true, Relaxed);
    }

    /// The mark a commit of `next` for `partition` carries (`clean` for the last commit of
    /// a clean stop or a handover).
    pub fn mark_for(&self, partition: PartitionId, next: u64, clean: bool) -> Mark {
        lock(&self.parts).get(&partition).map_or(
            Mark {
                clean,
                attempt: None,
            },
            |g| g.mark_for(next, clean),
        )
    }

    /// The partition was revoked: a later assignment reads its mark again.
    pub fn forget(&self, partition: PartitionId) {
        lock(&self.parts).remove(&partition);
    }

    /// Decide for the record at `offset` of `partition`; `None` when shutting down. For an
    /// event to run alone this waits until nothing else of the partition is in flight or
    /// uncommitted, then
    /// records the attempt (retrying until the store confirms it) unless `still_ours` says
    /// the partition was taken away meanwhile.
    pub async fn admit(
        self: &Arc<Self>,
        partition: PartitionId,
        offset: u64,
        tracker: &Mutex<PositionTracker>,
        cancel: &CancellationToken,
        stats: &AdapterMetrics,
        still_ours: &(dyn Fn() -> bool + Sync),
    ) -> Option<Admit> {
        let known = lock(&self.parts).contains_key(&partition);
        if !known {
            let mark = self.read(partition, cancel).await?;
            let g = PartitionGuard::resume(mark, &self.settings);
            if g.is_suspect() {
                stats.suspect_resumes.fetch_add(1, Relaxed);
                tracing::warn!(
                    partition,
                    offset,
                    suspect_events = self.settings.suspect_events,
                    attempt = ?mark.and_then(|m| m.attempt),
                    "resuming a partition whose last owner died: its next events run alone"
                );
            }
            if !g.is_suspect() && still_ours() {
                // Claim the partition: from now on a crash before the first commit leaves a
                // `running` mark too. `offset`, the first one read, is the resume position.
                self.write(partition, offset, Mark::RUNNING, cancel).await?;
            }
            lock(&self.parts).entry(partition).or_insert(g);
        }
        let decision = lock(&self.parts)
            .get_mut(&partition)
            .map_or(Admit::Run, |g| g.admit(offset, &self.settings));
        match decision {
            Admit::Run => {}
            Admit::Refuse { attempts } => tracing::error!(
                partition,
                offset,
                attempts,
                "the worker died every time this event ran alone: dead-lettering it \
                 (poison_suspected)"
            ),
            Admit::RunAlone(a) => {
                // Everything before it done (and, exactly-once, committed: see
                // `commit_in_transactions`).
                let committed_too = self.transactional.load(Relaxed);
                let settled = |t: &PositionTracker| {
                    t.in_flight_of(partition) == 0
                        && (!committed_too || t.confirmed(partition).is_none_or(|c| c >= offset))
                };
                while !settled(&lock(tracker)) {
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
                if still_ours() {
                    let mark = Mark {
                        clean: false,
                        attempt: Some(a),
                    };
                    self.write(partition, offset, mark, cancel).await?;
                    lock(tracker).confirm(partition, offset);
                    stats.run_alone.fetch_add(1, Relaxed);
                    tracing::info!(partition, offset, count = a.count, "running an event alone");
                }
            }
        }
        Some(decision)
    }

    async fn read(
        self: &Arc<Self>,
        partition: PartitionId,
        cancel: &CancellationToken,
    ) -> Option<Option<Mark>> {
        let tries = Backoff {
            retries: READ_TRIES - 1,
            ..backoff()
        };
        let read = retry(
            &tries,
            || {
                let me = self.clone();
                async move {
                    tokio::task::spawn_blocking(move || me.store.read(partition))
                        .await
                        .unwrap_or_else(|e| Err(anyhow::anyhow!("mark read task failed: {e}")))
                }
            },
            |e, _| {
                tracing::warn!(
                    partition,
                    error = format!("{e:#}"),
                    "reading the crash-guard mark failed"
                );
                true
            },
        );
        tokio::select! {
            _ = cancel.cancelled() => None,
            r = read => Some(r.unwrap_or_else(|_| {
                tracing::warn!(
                    partition,
                    "no crash-guard mark could be read: taking the partition as suspect"
                );
                Some(Mark::RUNNING)
            })),
        }
    }

    async fn write(
        self: &Arc<Self>,
        partition: PartitionId,
        next: u64,
        mark: Mark,
        cancel: &CancellationToken,
    ) -> Option<()> {
        // Running the event without its attempt on record could crash-loop: retry for as
        // long as it takes (the backoff never runs out).
        let forever = backoff();
        let write = retry(
            &forever,
            || {
                let me = self.clone();
                async move {
                    tokio::task::spawn_blocking(move || me.store.write(partition, next, mark))
                        .await
                        .unwrap_or_else(|e| Err(anyhow::anyhow!("mark write task failed: {e}")))
                }
            },
            |e, _| {
                tracing::warn!(
                    partition,
                    next,
                    error = format!("{e:#}"),
                    "recording an attempt failed; retrying before the event runs"
                );
                true
            },
        );
        tokio::select! {
            _ = cancel.cancelled() => None,
            r = write => r.ok(),
        }
    }
}
