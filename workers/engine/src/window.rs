//! The adaptive read-ahead: the source's in-flight permits start at `pipeline.min_in_flight`,
//! and this task resizes them every [`TICK`] to the model's measured capacity ×
//! `pipeline.latency_target` (Little's law, [`fusionstream_core::schedule::read_ahead`]),
//! within `[min_in_flight, max_in_flight]`.
//!
//! Growing adds permits at once. Shrinking takes permits as events finish and forgets them:
//! the task queues for them like the source does (the semaphore is fair), so the source reads
//! again only once the in-flight count is under the new window.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusionstream_core::schedule::read_ahead;
use tokio::sync::Semaphore;

use super::report::{Report, Reporter};

/// How often the window is resized.
const TICK: Duration = Duration::from_millis(500);

/// What the window is sized from: events finished and time in forward passes so far (the
/// sink and the assembler add to it).
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// Events finished.
    pub(crate) finished: AtomicU64,
    /// Time the model thread spent in forward passes, ns.
    pub(crate) model_ns: AtomicU64,
}

impl Load {
    fn now(&self) -> (Instant, u64, u64) {
        (
            Instant::now(),
            self.finished.load(Relaxed),
            self.model_ns.load(Relaxed),
        )
    }
}

/// Resize the window until the task is aborted; `permits` holds `min` at the start.
pub(crate) async fn run(
    permits: Arc<Semaphore>,
    min: usize,
    max: usize,
    target: Duration,
    load: Arc<Load>,
    reporter: Arc<dyn Reporter>,
) {
    let mut window = min;
    reporter.report(Report::WindowResized(window));
    if min >= max {
        return;
    }
    let mut last = load.now();
    // Smoothed capacity estimate, as the window it gives.
    let mut smooth: Option<f64> = None;
    loop {
        tokio::time::sleep(TICK).await;
        let now = load.now();
        let secs = now.0.duration_since(last.0).as_secs_f64();
        let rate = now.1.saturating_sub(last.1) as f64 / secs;
        let busy = now.2.saturating_sub(last.2) as f64 / 1e9 / secs;
        last = now;
        let Some(w) = read_ahead(rate, busy, target, min, max) else {
            continue;
        };
        let s = match smooth {
            None => w as f64,
            Some(s) => 0.7 * s + 0.3 * w as f64,
        };
        smooth = Some(s);
        let want = (s.round() as usize).clamp(min, max);
        // Hysteresis: small changes are noise.
        if want.abs_diff(window) * 10 >= window {
            resize(&permits, &mut window, want).await;
            reporter.report(Report::WindowResized(window));
        }
    }
}

/// Add or take away permits so that `want` exist.
async fn resize(permits: &Semaphore, window: &mut usize, want: usize) {
    if want > *window {
        permits.add_permits(want - *window);
        *window = want;
    }
    while *window > want {
        // Queue for a permit like the source; give up for this tick if events are slow to
        // finish (the next tick tries again).
        match tokio::time::timeout(TICK, permits.acquire()).await {
            Ok(Ok(p)) => {
                p.forget();
                *window -= 1;
            }
            _ => break,
        }
    }
}
