//! The micro-batcher task: the pure [`Batcher`] driven by a clock, feeding the model thread
//! ([`super::model_thread`]).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use fusionstream_core::batch::{Batch, Batcher, Cost, LanePolicy};
use fusionstream_core::Lane;
use tokio::sync::mpsc;

use super::envelope::Part;
use super::model_thread::ModelJob;
use super::report::{Report, Reporter};

/// Collect parts into per-lane batches and hand them to the model thread; `send` waits
/// while the model's queue is full, so back-pressure reaches the intake.
pub(crate) async fn run(
    mut rx: mpsc::Receiver<(Lane, Part, Cost)>,
    model: mpsc::Sender<ModelJob>,
    lanes: [LanePolicy; 2],
    reporter: Arc<dyn Reporter>,
) -> anyhow::Result<()> {
    let mut batcher: Batcher<Part> = Batcher::new(lanes);
    let pending = |b: &Batcher<Part>| reporter.report(Report::PartsWaiting(b.pending()));
    loop {
        let deadline = batcher.next_deadline();
        let ready: Vec<Batch<Part>> = tokio::select! {
            msg = rx.recv() => match msg {
                Some((lane, part, cost)) => batcher.push(lane, part, cost, Instant::now()),
                None => {
                    for b in batcher.flush() {
                        send(&model, b, &*reporter).await?;
                    }
                    pending(&batcher);
                    return Ok(());
                }
            },
            _ = sleep_until(deadline), if deadline.is_some() => batcher.poll(Instant::now()),
        };
        pending(&batcher);
        for b in ready {
            send(&model, b, &*reporter).await?;
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t.into()).await;
    }
}

async fn send(
    model: &mpsc::Sender<ModelJob>,
    b: Batch<Part>,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    reporter.report(Report::BatchQueued);
    model
        .send(ModelJob {
            lane: b.lane,
            parts: b.items,
        })
        .await
        .ok()
        .context("the model thread stopped")
}
