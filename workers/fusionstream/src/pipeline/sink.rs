//! The sink task: write finished events, wait for the acknowledgement (flush), then mark
//! their positions done and commit the contiguous done prefix.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fusionstream_core::position::PositionTracker;
use tokio::sync::mpsc;

use super::assemble::Finished;
use super::stats::Stats;
use super::{lock, Committer, OutputSink};

/// Most events written between two flushes (group commit).
const GROUP: usize = 256;

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
                commit(&tracker, &committer)?;
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
        for f in &group {
            for (stream, json) in &f.records {
                sink.write(*stream, &f.key, json).await?;
            }
        }
        sink.flush().await.context("acknowledging outputs")?;
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
            let streams: Vec<_> = f.records.iter().map(|(s, _)| *s).collect();
            stats.finish(&f.outcome, f.latency, &streams);
            // Returning the in-flight permit lets the source read one more event.
            drop(f.permit);
        }
        if last_commit.elapsed() >= interval {
            commit(&tracker, &committer)?;
            last_commit = Instant::now();
        }
    }
    commit(&tracker, &committer)
}

fn commit<C: Committer>(
    tracker: &Mutex<PositionTracker>,
    committer: &Mutex<C>,
) -> anyhow::Result<()> {
    let commits = lock(tracker).take_commits();
    if !commits.is_empty() {
        lock(committer).commit(&commits)?;
    }
    Ok(())
}
