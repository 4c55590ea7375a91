//! The sink task: write finished events, wait for the acknowledgement (flush), then mark
//! their positions done and commit the contiguous done prefix.
//!
//! A group whose acknowledgement fails with a retryable error (brokers away, timeouts) is
//! sent again, with backoff, until it is acknowledged: outputs are never dropped, at worst
//! duplicated. A fatal error (authorisation, a record the broker refuses) stops the worker
//! with nothing of the group acknowledged.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fusionstream_core::backoff::Backoff;
use fusionstream_core::position::PositionTracker;
use fusionstream_core::{Classify as _, ErrorClass};
use fusionstream_io::kafka::KafkaSinkError;
use tokio::sync::mpsc;

use super::assemble::Finished;
use super::stats::{Stage, Stats};
use super::{lock, Committer, OutputSink};

/// Most events written between two flushes (group commit).
const GROUP: usize = 256;

/// Delays between attempts to publish a group again (no limit on attempts: the drain
/// timeout bounds them at shutdown).
const REPUBLISH: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(10),
    retries: u32::MAX,
};

pub(crate) async fn run<K: OutputSink, C: Committer>(
    mut rx: mpsc::Receiver<Finished>,
    mut sink: K,
    tracker: Arc<Mutex<PositionTracker>>,
    committer: Arc<Mutex<C>>,
    stats: Arc<Stats>,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut last_commit = Instant::now();
    let mut group = Vec::with_capacity(GROUP);
    loop {
        // Commit on a timer too, so the tail of a stream that goes quiet is committed.
        let first = tokio::select! {
            f = rx.recv() => match f {
                Some(f) => f,
                None => break,
            },
            _ = tokio::time::sleep(interval) => {
                commit(&tracker, &committer, &stats);
                last_commit = Instant::now();
                continue;
            }
        };
        group.push(first);
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(f) => group.push(f),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        publish(&mut sink, &group, &stats).await?;
        stats.stage(Stage::Publish, started.elapsed());
        {
            let mut t = lock(&tracker);
            for f in &group {
                if let Err(e) = t.complete(f.partition, f.offset) {
                    // The partition was revoked while the event was in flight: its outputs
                    // are published, its offset belongs to the new owner (who may repeat it).
                    tracing::debug!(error = %e, "completion of a revoked position");
                }
            }
        }
        for f in group.drain(..) {
            f.span.record("event.outcome", f.outcome.name());
            let streams: Vec<_> = f.records.iter().map(|(s, _)| *s).collect();
            stats.finish(&f.outcome, f.latency, &streams);
            stats.stage(Stage::Total, f.latency);
            // Returning the in-flight permit lets the source read one more event; dropping
            // the span ends the event's trace span.
            drop(f.permit);
        }
        if last_commit.elapsed() >= interval {
            commit(&tracker, &committer, &stats);
            last_commit = Instant::now();
        }
    }
    commit(&tracker, &committer, &stats);
    Ok(())
}

/// Write every record of `group` and wait for the acknowledgement, sending the whole group
/// again after a retryable failure.
async fn publish<K: OutputSink>(
    sink: &mut K,
    group: &[Finished],
    stats: &Stats,
) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        let r = async {
            for f in group {
                for (stream, json) in &f.records {
                    sink.write(*stream, &f.key, json, f.traceparent.as_deref())
                        .await?;
                }
            }
            sink.flush().await
        }
        .await;
        let Err(e) = r else { return Ok(()) };
        if class(&e) == ErrorClass::Fatal {
            return Err(e).context("acknowledging outputs");
        }
        stats.publish_retries.fetch_add(1, Relaxed);
        let delay = REPUBLISH
            .delay(attempt, super::intake::jitter())
            .unwrap_or(REPUBLISH.max);
        tracing::warn!(
            error = format!("{e:#}"),
            attempt,
            events = group.len(),
            "outputs not acknowledged; sending them again"
        );
        tokio::time::sleep(delay).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Kafka delivery errors know their class; anything else a sink reports (a local file that
/// cannot be written) is fatal.
fn class(e: &anyhow::Error) -> ErrorClass {
    e.chain()
        .find_map(|c| c.downcast_ref::<KafkaSinkError>())
        .map_or(ErrorClass::Fatal, |k| k.class())
}

/// Commit the done prefix. A failed commit is not fatal: nothing is lost, those events
/// replay after a restart, and the next commit supersedes it.
fn commit<C: Committer>(tracker: &Mutex<PositionTracker>, committer: &Mutex<C>, stats: &Stats) {
    let commits = lock(tracker).take_commits();
    if commits.is_empty() {
        return;
    }
    stats.commits.fetch_add(1, Relaxed);
    if let Err(e) = lock(committer).commit(&commits) {
        stats.commit_failures.fetch_add(1, Relaxed);
        tracing::warn!(
            error = format!("{e:#}"),
            "committing positions failed; they will be committed with the next ones"
        );
    }
}
