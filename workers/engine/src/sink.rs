//! The sink task: write finished events, wait for the acknowledgement (flush), then mark
//! their positions done and commit the contiguous done prefix.
//!
//! A group whose acknowledgement fails with a retryable error (brokers away, timeouts) is
//! sent again, with backoff, until it is acknowledged: outputs are never dropped, at worst
//! duplicated. A fatal error (authorisation, a record the broker refuses) stops the worker
//! with nothing of the group acknowledged.
//!
//! Commits (`commit.rs`): every `checkpoint.interval` and at the end, what is done and not yet
//! confirmed is committed; a position counts as committed only once the store confirms it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fusionstream_core::backoff::Backoff;
use fusionstream_core::lock;
use fusionstream_core::position::PositionTracker;
use fusionstream_core::record::Stream;
use fusionstream_io::ports::{Committer, OutputSink, PublishError};
use fusionstream_io::retry::Attempts;
use tokio::sync::mpsc;

use super::commit::{final_commit, CommitTiming, Commits};
use super::envelope::Finished;
use super::oversize;
use super::report::{Report, Reporter, Stage};
use super::window::Load;

/// Most events written between two flushes (group commit).
const GROUP: usize = 256;

/// Delays between attempts to publish a group again (no limit on attempts: the drain
/// timeout bounds them at shutdown).
const REPUBLISH: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(10),
    retries: u32::MAX,
};

/// What the sink task acknowledges into: the positions, the committer, the reports.
pub(crate) struct Acks<C> {
    pub tracker: Arc<Mutex<PositionTracker>>,
    pub committer: Arc<Mutex<C>>,
    pub commits: Commits,
    pub timing: CommitTiming,
    pub reporter: Arc<dyn Reporter>,
    pub load: Arc<Load>,
}

pub(crate) async fn run<K: OutputSink, C: Committer>(
    mut rx: mpsc::Receiver<Finished>,
    mut sink: K,
    acks: Acks<C>,
) -> anyhow::Result<()> {
    let Acks {
        tracker,
        committer,
        mut commits,
        timing,
        reporter,
        load,
    } = acks;
    let interval = timing.interval;
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
                commits.commit(&tracker, &committer);
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
        publish(&mut sink, &group, &*reporter).await?;
        reporter.report(Report::StageTimed {
            stage: Stage::Publish,
            took: started.elapsed(),
        });
        complete(&tracker, &group);
        for f in group.drain(..) {
            acknowledged(f, &*reporter, &load);
        }
        if last_commit.elapsed() >= interval {
            commits.commit(&tracker, &committer);
            last_commit = Instant::now();
        }
    }
    final_commit(
        &tracker,
        &committer,
        &*reporter,
        timing.final_timeout,
        timing.mark_clean,
    )
    .await;
    Ok(())
}

/// Complete the positions of the events whose last piece is in `group`: their earlier
/// pieces were in this group or an earlier one, all acknowledged by now.
fn complete(tracker: &Mutex<PositionTracker>, group: &[Finished]) {
    let mut t = lock(tracker);
    for f in group.iter().filter(|f| f.outcome.is_some()) {
        if let Err(e) = t.complete(f.partition, f.offset) {
            // The partition was revoked while the event was in flight: its outputs are
            // published, its offset belongs to the new owner (who may repeat it).
            tracing::debug!(error = %e, "completion of a revoked position");
        }
    }
}

/// Report an acknowledged piece; its last piece finishes the event.
pub(crate) fn acknowledged(f: Finished, reporter: &dyn Reporter, load: &Load) {
    let streams: Vec<_> = f.records.iter().map(|(s, _)| *s).collect();
    reporter.report(Report::RecordsAcked { streams: &streams });
    if let Some((lane, priority)) = f.lane {
        reporter.report(Report::LaneAcked {
            lane,
            priority,
            since_read: f.started.elapsed(),
        });
    }
    if let Some(outcome) = &f.outcome {
        f.span.record("event.outcome", outcome.name());
        load.finished.fetch_add(1, Relaxed);
        reporter.report(Report::EventFinished {
            outcome,
            latency: f.latency,
        });
    }
    // Returning the in-flight permit (the last piece holds it) lets the source read one more
    // event; dropping the span ends the event's trace span.
    drop(f.permit);
}

/// A record to write: stream, key, JSON, traceparent.
type Record<'a> = (Stream, &'a str, &'a [u8], Option<&'a str>);

/// Write every record of `group` and wait for the acknowledgement, sending the whole group
/// again after a retryable failure.
async fn publish<K: OutputSink>(
    sink: &mut K,
    group: &[Finished],
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let records: Vec<Record<'_>> = group
        .iter()
        .flat_map(|f| {
            f.records.iter().map(|(s, json)| {
                (
                    *s,
                    f.key.as_str(),
                    json.as_slice(),
                    f.traceparent.as_deref(),
                )
            })
        })
        .collect();
    match send(sink, &records, reporter).await {
        // Some record of the group is over the broker's limit: find it by sending the
        // records one at a time (those already delivered are sent again: duplicates, never
        // a loss).
        Err(PublishError::TooLarge(_)) => publish_each(sink, group, reporter).await,
        r => r.context("acknowledging outputs"),
    }
}

/// Write `records` and wait for the acknowledgement, writing them all again after a
/// retryable failure (no limit on attempts: the drain timeout bounds them at shutdown); a
/// fatal or too-large error is returned.
async fn send<K: OutputSink>(
    sink: &mut K,
    records: &[Record<'_>],
    reporter: &dyn Reporter,
) -> Result<(), PublishError> {
    let mut attempts = Attempts::new(&REPUBLISH);
    loop {
        let r = async {
            for (stream, key, json, traceparent) in records {
                sink.write(*stream, key, json, *traceparent).await?;
            }
            sink.flush().await
        }
        .await;
        match r {
            Ok(()) => return Ok(()),
            Err(e @ PublishError::Retryable(_)) => {
                reporter.report(Report::PublishRetried);
                tracing::warn!(
                    error = format!("{e:#}"),
                    attempt = attempts.count(),
                    records = records.len(),
                    "outputs not acknowledged; sending them again"
                );
                if !attempts.wait().await {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Publish the group record by record. A record refused as too large is never fatal: a dead
/// letter is sent again with its payload cut (halved until it fits, flagged), an output
/// record is replaced by its event's `output_too_large` dead letter.
async fn publish_each<K: OutputSink>(
    sink: &mut K,
    group: &[Finished],
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    for f in group {
        for (stream, json) in &f.records {
            let mut stream = *stream;
            let mut json = std::borrow::Cow::Borrowed(json.as_slice());
            loop {
                let record = (stream, f.key.as_str(), &*json, f.traceparent.as_deref());
                match send(sink, &[record], reporter).await {
                    Ok(()) => break,
                    Err(PublishError::TooLarge(_)) => {}
                    Err(e) => return Err(e).context("acknowledging outputs"),
                }
                let (s, r) = replace_too_large(stream, &json, &f.key, reporter)?;
                stream = s;
                json = std::borrow::Cow::Owned(r);
            }
        }
    }
    Ok(())
}

/// What goes instead of a record the store refused as too large: a dead letter with its
/// payload cut (halved until it fits, flagged), or for an output record its event's
/// `output_too_large` dead letter. An error when not even a dead letter without payload fits.
pub(crate) fn replace_too_large(
    stream: Stream,
    json: &[u8],
    key: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<(Stream, Vec<u8>)> {
    let replacement = if stream == Stream::DeadLetters {
        oversize::shrink_dead_letter(json)
    } else {
        reporter.report(Report::OutputTooLarge);
        tracing::warn!(
            event_id = %key,
            stream = stream.name(),
            bytes = json.len(),
            "output record too large for the broker: dead-lettered as output_too_large"
        );
        oversize::output_too_large(stream, json)
    };
    match replacement {
        Some(r) => Ok((Stream::DeadLetters, r)),
        // The broker's limit is below any record this worker can write.
        None => anyhow::bail!(
            "the broker refuses even a {}-byte dead letter (event {key}): raise the \
             dead-letter topic's max.message.bytes",
            json.len()
        ),
    }
}
