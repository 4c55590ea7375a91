//! Counters of a run, shared by every stage (lock-free where hot), and the summary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use fusionstream_core::record::Stream;
use fusionstream_core::Lane;

/// Most latency samples kept (a uniform sample of the run beyond that).
const LATENCY_SAMPLES: usize = 100_000;

/// Live counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events read from the source.
    pub read: AtomicU64,
    /// Events finished (outputs or dead letter acknowledged).
    pub finished: AtomicU64,
    /// Finished with outputs.
    pub processed: AtomicU64,
    /// Finished with outputs, flagged degraded.
    pub degraded: AtomicU64,
    /// Dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Records written per stream.
    pub outputs: [AtomicU64; 5],
    /// Model batches per lane.
    pub batches: [AtomicU64; 2],
    /// Items in those batches per lane.
    pub batch_items: [AtomicU64; 2],
    /// Time the model thread spent in forward passes, ns.
    pub model_ns: AtomicU64,
    /// Events waiting in the batcher's open batches.
    pub batcher_pending: AtomicU64,
    reasons: Mutex<Reasons>,
    latencies: Mutex<Latencies>,
}

#[derive(Debug, Default)]
struct Reasons {
    dead_letter: BTreeMap<String, u64>,
    degraded: BTreeMap<String, u64>,
    skipped: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Latencies {
    seen: u64,
    samples: Vec<f32>,
    rng: u64,
}

/// A finished event, as the stats see it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Outputs written.
    Processed {
        /// Degradation reason codes.
        degraded: Vec<String>,
        /// Skipped `task:reason` pairs.
        skipped: Vec<String>,
    },
    /// Dead-lettered with this reason.
    DeadLetter(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Stats {
    /// Count a finished event.
    pub fn finish(&self, outcome: &Outcome, latency: Duration, streams: &[Stream]) {
        self.finished.fetch_add(1, Relaxed);
        for s in streams {
            self.outputs[s.index()].fetch_add(1, Relaxed);
        }
        let mut r = lock(&self.reasons);
        match outcome {
            Outcome::Processed { degraded, skipped } => {
                self.processed.fetch_add(1, Relaxed);
                if !degraded.is_empty() {
                    self.degraded.fetch_add(1, Relaxed);
                }
                for d in degraded {
                    *r.degraded.entry(d.clone()).or_default() += 1;
                }
                for s in skipped {
                    *r.skipped.entry(s.clone()).or_default() += 1;
                }
            }
            Outcome::DeadLetter(reason) => {
                self.dead_lettered.fetch_add(1, Relaxed);
                *r.dead_letter.entry(reason.clone()).or_default() += 1;
            }
        }
        drop(r);
        let mut l = lock(&self.latencies);
        l.seen += 1;
        let ms = latency.as_secs_f32() * 1e3;
        if l.samples.len() < LATENCY_SAMPLES {
            l.samples.push(ms);
        } else {
            // Reservoir sampling (xorshift; quality is not critical here).
            l.rng = if l.rng == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                l.rng
            };
            l.rng ^= l.rng << 13;
            l.rng ^= l.rng >> 7;
            l.rng ^= l.rng << 17;
            let j = (l.rng % l.seen) as usize;
            if j < LATENCY_SAMPLES {
                l.samples[j] = ms;
            }
        }
    }

    /// Count a model batch.
    pub fn batch(&self, lane: Lane, items: usize, took: Duration) {
        self.batches[lane.index()].fetch_add(1, Relaxed);
        self.batch_items[lane.index()].fetch_add(items as u64, Relaxed);
        self.model_ns.fetch_add(took.as_nanos() as u64, Relaxed);
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = lock(&self.reasons);
        let mut lat = lock(&self.latencies).samples.clone();
        lat.sort_by(f32::total_cmp);
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() - 1) as f64 * p).round() as usize] as f64
            }
        };
        StatsSnapshot {
            read: self.read.load(Relaxed),
            finished: self.finished.load(Relaxed),
            processed: self.processed.load(Relaxed),
            degraded: self.degraded.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            outputs: Stream::ALL.map(|s| (s, self.outputs[s.index()].load(Relaxed))),
            batches: Lane::ALL.map(|l| {
                (
                    l,
                    self.batches[l.index()].load(Relaxed),
                    self.batch_items[l.index()].load(Relaxed),
                )
            }),
            model_seconds: self.model_ns.load(Relaxed) as f64 / 1e9,
            dead_letter_reasons: r.dead_letter.clone(),
            degraded_reasons: r.degraded.clone(),
            skipped: r.skipped.clone(),
            latency_p50_ms: pct(0.50),
            latency_p99_ms: pct(0.99),
        }
    }
}

/// Counters at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsSnapshot {
    /// Events read.
    pub read: u64,
    /// Events finished.
    pub finished: u64,
    /// With outputs.
    pub processed: u64,
    /// With outputs, degraded.
    pub degraded: u64,
    /// Dead-lettered.
    pub dead_lettered: u64,
    /// Records per stream.
    pub outputs: [(Stream, u64); 5],
    /// (lane, batches, items).
    pub batches: [(Lane, u64, u64); 2],
    /// Model time.
    pub model_seconds: f64,
    /// Dead letters by reason.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Degradations by reason.
    pub degraded_reasons: BTreeMap<String, u64>,
    /// Skipped `task:reason` counts.
    pub skipped: BTreeMap<String, u64>,
    /// Median event latency (read → acknowledged).
    pub latency_p50_ms: f64,
    /// 99th percentile event latency.
    pub latency_p99_ms: f64,
}
