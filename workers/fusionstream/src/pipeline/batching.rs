//! The micro-batcher task (the pure [`Batcher`] driven by a clock) and the model thread.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use fusionstream_core::batch::{Batch, Batcher, Cost, LanePolicy};
use fusionstream_core::Lane;
use fusionstream_model::FusionModel;
use tokio::sync::mpsc;

use super::assemble::{ModelDone, Part};
use super::stats::Stats;

/// A batch for the model thread.
pub(crate) struct ModelJob {
    lane: Lane,
    parts: Vec<Part>,
}

/// Collect parts into per-lane batches and hand them to the model thread; `send` waits
/// while the model's queue is full, so back-pressure reaches the intake.
pub(crate) async fn run(
    mut rx: mpsc::Receiver<(Lane, Part, Cost)>,
    model: mpsc::Sender<ModelJob>,
    lanes: [LanePolicy; 2],
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    for l in Lane::ALL {
        stats.lane_max_items[l.index()].store(lanes[l.index()].max_items as u64, Relaxed);
    }
    let mut batcher: Batcher<Part> = Batcher::new(lanes);
    let pending = |b: &Batcher<Part>| {
        stats
            .batcher_pending
            .store(b.pending() as u64, std::sync::atomic::Ordering::Relaxed)
    };
    loop {
        let deadline = batcher.next_deadline();
        let ready: Vec<Batch<Part>> = tokio::select! {
            msg = rx.recv() => match msg {
                Some((lane, part, cost)) => batcher.push(lane, part, cost, Instant::now()),
                None => {
                    for b in batcher.flush() {
                        send(&model, b, &stats).await?;
                    }
                    pending(&batcher);
                    return Ok(());
                }
            },
            _ = sleep_until(deadline), if deadline.is_some() => batcher.poll(Instant::now()),
        };
        pending(&batcher);
        for b in ready {
            send(&model, b, &stats).await?;
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t.into()).await;
    }
}

async fn send(model: &mpsc::Sender<ModelJob>, b: Batch<Part>, stats: &Stats) -> anyhow::Result<()> {
    stats.model_queue.fetch_add(1, Relaxed);
    model
        .send(ModelJob {
            lane: b.lane,
            parts: b.items,
        })
        .await
        .ok()
        .context("the model thread stopped")
}

/// Start the model thread: batches in, results out, forward passes off the async runtime.
pub(crate) fn spawn_model_thread(
    model: Arc<FusionModel>,
    mut rx: mpsc::Receiver<ModelJob>,
    tx: mpsc::Sender<ModelDone>,
    stats: Arc<Stats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fusionstream-model".into())
        .spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                stats.model_queue.fetch_sub(1, Relaxed);
                // One span per batch, a root linked to the span of every event it serves
                // (the OpenTelemetry pattern for batch work).
                let span = tracing::info_span!(
                    parent: None,
                    "model_batch",
                    otel.name = "fusionstream.model_batch",
                    lane = job.lane.name(),
                    items = job.parts.len(),
                );
                for p in &job.parts {
                    crate::telemetry::traces::link(&span, &p.ctx.span);
                }
                let (prepared, parts): (Vec<_>, Vec<_>) = job
                    .parts
                    .into_iter()
                    .map(|p| (p.prepared, (p.ctx, p.enqueued)))
                    .unzip();
                let started = Instant::now();
                let result = span.in_scope(|| model.infer_batch(&prepared));
                drop(span);
                let took = started.elapsed();
                drop(prepared);
                let done = ModelDone {
                    lane: job.lane,
                    parts,
                    started,
                    took,
                    result,
                };
                if tx.blocking_send(done).is_err() {
                    return;
                }
            }
        })
}
