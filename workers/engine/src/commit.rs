//! When positions are committed. A position counts as committed only when the store confirmed
//! it ([`PositionTracker::confirm`]). Every `checkpoint.interval`, also on a quiet stream, what
//! is done but unconfirmed is committed (again): a failed or lost commit is retried, backing
//! off up to 30 s while commits keep failing. At shutdown the last commit waits for its
//! confirmation, retrying within `checkpoint.commit_timeout`. The sink task (`sink.rs`) drives
//! both.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fusionstream_core::backoff::Backoff;
use fusionstream_core::lock;
use fusionstream_core::position::PositionTracker;
use fusionstream_io::metrics::AdapterMetrics;
use fusionstream_io::ports::{CommitAck, Committer};
use fusionstream_io::retry::jitter;

use super::report::{Report, Reporter};

/// Delays between commits while they keep failing (the first retry is at the next
/// interval).
const RECOMMIT_MAX: Duration = Duration::from_secs(30);

/// When commits happen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitTiming {
    /// Between commits.
    pub interval: Duration,
    /// Bound on the last commit at shutdown.
    pub final_timeout: Duration,
    /// The committer keeps crash-guard marks: the last commit marks every partition clean.
    pub mark_clean: bool,
}

/// The commit schedule: every interval, backing off while commits fail.
pub(crate) struct Commits {
    backoff: Backoff,
    /// Consecutive failed commits.
    failures: u32,
    /// The last `commit` returned an error.
    returned_failure: bool,
    /// The adapter's count of failures it saw after `commit` returned (the Kafka committer's
    /// callback), and that count when last looked at.
    adapter: Arc<AdapterMetrics>,
    seen_failures: u64,
    not_before: Instant,
    reporter: Arc<dyn Reporter>,
}

impl Commits {
    pub(crate) fn new(
        interval: Duration,
        adapter: Arc<AdapterMetrics>,
        reporter: Arc<dyn Reporter>,
    ) -> Self {
        Self {
            backoff: Backoff {
                initial: interval,
                max: RECOMMIT_MAX.max(interval),
                retries: u32::MAX,
            },
            failures: 0,
            returned_failure: false,
            seen_failures: adapter.commit_failures.load(Relaxed),
            adapter,
            not_before: Instant::now(),
            reporter,
        }
    }

    /// Whether a commit failed since the last call: `commit` returned an error, or the
    /// store reported one later.
    fn failed_since(&mut self) -> bool {
        let reported = self.adapter.commit_failures.load(Relaxed);
        let failed = std::mem::take(&mut self.returned_failure) || reported > self.seen_failures;
        self.seen_failures = reported;
        failed
    }

    /// Commit what is done and unconfirmed, unless backing off. A failed commit is not
    /// fatal: nothing is lost (those events replay after a restart) and it is retried.
    pub(crate) fn commit<C: Committer>(
        &mut self,
        tracker: &Mutex<PositionTracker>,
        committer: &Mutex<C>,
    ) {
        let failed_since = self.failed_since();
        let pending = lock(tracker).pending_commits();
        self.reporter
            .report(Report::UncommittedPartitions(pending.len()));
        if pending.is_empty() {
            self.failures = 0;
            return;
        }
        if failed_since {
            self.failures = self.failures.saturating_add(1);
            let delay = self.backoff.delay(self.failures - 1, jitter());
            self.not_before = Instant::now() + delay.unwrap_or(self.backoff.max);
        } else if self.failures > 0 && Instant::now() >= self.not_before {
            // The last retry was not reported as failed: start over at the interval.
            self.failures = 0;
        }
        if Instant::now() < self.not_before {
            return;
        }
        self.reporter.report(Report::CommitSent);
        match lock(committer).commit(&pending) {
            Ok(CommitAck::Confirmed) => {
                let mut t = lock(tracker);
                for (p, o) in &pending {
                    t.confirm(*p, *o);
                }
                self.reporter.report(Report::UncommittedPartitions(0));
            }
            Ok(CommitAck::Sent) => {}
            Err(e) => {
                self.returned_failure = true;
                self.reporter.report(Report::CommitFailed);
                tracing::warn!(
                    error = format!("{e:#}"),
                    "committing positions failed; retrying"
                );
            }
        }
    }
}

/// The last commit: what is done and unconfirmed is committed and its confirmation awaited,
/// retried with backoff within `timeout`. What is still unconfirmed after it replays on the
/// next start (never a loss). With `mark_clean` (the committer keeps crash-guard marks)
/// every partition's position is committed, confirmed ones too, so that each carries the
/// `clean` mark of this stop.
pub(crate) async fn final_commit<C: Committer>(
    tracker: &Arc<Mutex<PositionTracker>>,
    committer: &Arc<Mutex<C>>,
    reporter: &dyn Reporter,
    timeout: Duration,
    mark_clean: bool,
) {
    let deadline = Instant::now() + timeout;
    let mut attempt = 0u32;
    loop {
        let pending = {
            let t = lock(tracker);
            if mark_clean {
                t.snapshot().into_iter().collect()
            } else {
                t.pending_commits()
            }
        };
        reporter.report(Report::UncommittedPartitions(pending.len()));
        if pending.is_empty() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        reporter.report(Report::CommitSent);
        let c = committer.clone();
        let p = pending.clone();
        // A Kafka commit waits on the broker: off the async workers.
        let r = tokio::task::spawn_blocking(move || lock(&c).commit_and_wait(&p, left))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("commit task failed: {e}")));
        match r {
            Ok(()) => {
                let mut t = lock(tracker);
                for (p, o) in &pending {
                    t.confirm(*p, *o);
                }
                if mark_clean {
                    reporter.report(Report::UncommittedPartitions(0));
                    return;
                }
            }
            Err(e) => {
                reporter.report(Report::CommitFailed);
                let delay = Backoff {
                    initial: Duration::from_millis(100),
                    max: Duration::from_secs(2),
                    retries: u32::MAX,
                }
                .delay(attempt, jitter())
                .unwrap_or(Duration::from_secs(2));
                if Instant::now() + delay >= deadline {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        partitions = pending.len(),
                        "last commit not confirmed within checkpoint.commit_timeout; those \
                         events replay on the next start"
                    );
                    return;
                }
                tracing::warn!(
                    error = format!("{e:#}"),
                    attempt,
                    "last commit failed; retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use fusionstream_core::position::PartitionId;
    use std::sync::atomic::{AtomicI64, AtomicU64};

    /// What the commit tests look at: failed commits, and the uncommitted partitions last
    /// reported.
    #[derive(Debug, Default)]
    struct Counts {
        failures: AtomicU64,
        uncommitted: AtomicI64,
    }

    impl Reporter for Counts {
        fn report(&self, r: Report<'_>) {
            match r {
                Report::CommitFailed => {
                    self.failures.fetch_add(1, Relaxed);
                }
                Report::UncommittedPartitions(n) => self.uncommitted.store(n as i64, Relaxed),
                _ => {}
            }
        }
    }

    fn commits(interval: Duration) -> (Commits, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let c = Commits::new(interval, Arc::default(), counts.clone());
        (c, counts)
    }

    /// A committer that fails its first `fail` commits, then stores or only sends.
    struct Flaky {
        fail: usize,
        ack: CommitAck,
        calls: Vec<Vec<(PartitionId, u64)>>,
    }

    impl Committer for Flaky {
        fn commit(&mut self, positions: &[(PartitionId, u64)]) -> anyhow::Result<CommitAck> {
            self.calls.push(positions.to_vec());
            if self.calls.len() <= self.fail {
                anyhow::bail!("coordinator not available");
            }
            Ok(self.ack)
        }
    }

    fn done_tracker(n: u64) -> Arc<Mutex<PositionTracker>> {
        let mut t = PositionTracker::new();
        t.assign(0, 0);
        for o in 0..n {
            t.track(0, o).unwrap();
            t.complete(0, o).unwrap();
        }
        Arc::new(Mutex::new(t))
    }

    #[test]
    fn a_failed_commit_is_retried_on_a_quiet_stream_until_confirmed() {
        let tracker = done_tracker(5);
        let committer = Mutex::new(Flaky {
            fail: 3,
            ack: CommitAck::Confirmed,
            calls: vec![],
        });
        let (mut commits, stats) = commits(Duration::from_millis(1));
        // No new event arrives: only the timer calls commit.
        let start = Instant::now();
        while lock(&tracker).confirmed(0) != Some(5) {
            assert!(start.elapsed() < Duration::from_secs(5), "never confirmed");
            commits.commit(&tracker, &committer);
            std::thread::sleep(Duration::from_millis(1));
        }
        {
            let calls = &lock(&committer).calls;
            assert_eq!(calls.len(), 4, "three failures, then the commit that held");
            assert!(calls.iter().all(|c| c == &vec![(0, 5)]));
        }
        assert_eq!(stats.failures.load(Relaxed), 3);
        assert_eq!(stats.uncommitted.load(Relaxed), 0);
        commits.commit(&tracker, &committer);
        assert_eq!(lock(&committer).calls.len(), 4, "nothing left to commit");
    }

    #[test]
    fn a_sent_commit_is_sent_again_until_the_store_confirms_it() {
        let tracker = done_tracker(3);
        let committer = Mutex::new(Flaky {
            fail: 0,
            ack: CommitAck::Sent,
            calls: vec![],
        });
        let (mut commits, stats) = commits(Duration::from_millis(1));
        commits.commit(&tracker, &committer);
        commits.commit(&tracker, &committer);
        assert_eq!(lock(&committer).calls.len(), 2, "unconfirmed: sent again");
        assert_eq!(stats.uncommitted.load(Relaxed), 1);
        // The callback's confirmation.
        lock(&tracker).confirm(0, 3);
        commits.commit(&tracker, &committer);
        assert_eq!(lock(&committer).calls.len(), 2);
        assert_eq!(stats.uncommitted.load(Relaxed), 0);
    }

    #[test]
    fn commits_back_off_while_they_keep_failing() {
        let tracker = done_tracker(1);
        let committer = Mutex::new(Flaky {
            fail: usize::MAX,
            ack: CommitAck::Confirmed,
            calls: vec![],
        });
        let (mut commits, _) = commits(Duration::from_millis(20));
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(400) {
            commits.commit(&tracker, &committer);
            std::thread::sleep(Duration::from_millis(1));
        }
        // Without backoff that would be ~300 attempts; with it (20, 40, 80, 160 ms caps,
        // full jitter) far fewer.
        let n = lock(&committer).calls.len();
        assert!((2..100).contains(&n), "{n} attempts in 400 ms");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_commit_retries_within_its_timeout() {
        let tracker = done_tracker(4);
        let committer = Arc::new(Mutex::new(Flaky {
            fail: 2,
            ack: CommitAck::Confirmed,
            calls: vec![],
        }));
        let stats = Counts::default();
        final_commit(&tracker, &committer, &stats, Duration::from_secs(10), false).await;
        assert_eq!(lock(&tracker).confirmed(0), Some(4));
        assert_eq!(lock(&committer).calls.len(), 3);

        // Never confirmed: gives up at the bound, positions still pending (they replay).
        let tracker = done_tracker(2);
        let committer = Arc::new(Mutex::new(Flaky {
            fail: usize::MAX,
            ack: CommitAck::Confirmed,
            calls: vec![],
        }));
        let start = Instant::now();
        final_commit(
            &tracker,
            &committer,
            &stats,
            Duration::from_millis(300),
            false,
        )
        .await;
        assert!(start.elapsed() < Duration::from_secs(3));
        assert_eq!(lock(&tracker).pending_commits(), vec![(0, 2)]);
    }
}
