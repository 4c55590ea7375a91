//! The engine's reports turned into numbers: the [`Recorder`] is the worker's
//! [`Reporter`], keeping the counters, gauges and histograms
//! `/metrics` renders (`metrics.rs`) and the run summary reads ([`Recorder::snapshot`]).
//! Nothing outside telemetry writes a figure: the engine reports what happened
//! ([`Report`]), the adapters count in their own [`AdapterMetrics`].
//!
//! Long because every figure of the worker lives here, beside the one `match` that fills it
//! from the reports and the summary that reads it: one place to add a figure.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fusionstream_core::lock;
use fusionstream_core::record::Stream;
use fusionstream_core::schedule::Ready;
use fusionstream_core::{Lane, Priority};
use fusionstream_engine::{Outcome, Report, Reporter, Stage};
use fusionstream_io::metrics::AdapterMetrics;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};

/// Most latency samples kept (a uniform sample of the run beyond that).
const LATENCY_SAMPLES: usize = 100_000;

/// How long the throughput used for "seconds to drain" looks back.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(60);

/// Live counters, gauges and histograms of a worker: the run summary and `/metrics` both
/// read them; the engine's [`Report`]s fill them.
#[derive(Debug)]
pub struct Recorder {
    /// Events read from the source.
    pub(super) read: AtomicU64,
    /// Events finished (outputs or dead letter acknowledged).
    pub(super) finished: AtomicU64,
    /// Finished with outputs.
    pub(super) processed: AtomicU64,
    /// Finished with outputs, flagged degraded.
    pub(super) degraded: AtomicU64,
    /// Dead-lettered.
    pub(super) dead_lettered: AtomicU64,
    /// Records written per stream.
    pub(super) outputs: [AtomicU64; Stream::COUNT],
    /// Model batches per lane.
    pub(super) batches: [AtomicU64; 2],
    /// Items in those batches per lane.
    pub(super) batch_items: [AtomicU64; 2],
    /// Time the model thread spent in forward passes, ns.
    pub(super) model_ns: AtomicU64,
    /// Events waiting in the batcher's open batches.
    pub(super) batcher_pending: AtomicU64,
    /// Batches queued for the model thread.
    pub(super) model_queue: AtomicI64,
    /// Media fetches running.
    pub(super) fetches_in_flight: AtomicI64,
    /// Position commits sent.
    pub(super) commits: AtomicU64,
    /// Commits that failed as the engine saw them (the adapters count those the store
    /// reports later).
    pub(super) commit_failures: AtomicU64,
    /// Each lane's `max_items` (for the batch fill ratio).
    pub(super) lane_max_items: [AtomicU64; 2],
    /// Partitions whose done position is not yet confirmed as committed.
    pub(super) uncommitted_partitions: AtomicI64,
    /// Output groups sent again after a failed acknowledgement.
    pub(super) publish_retries: AtomicU64,
    /// Output records the broker refused as too large (replaced by `output_too_large` dead
    /// letters).
    pub(super) outputs_too_large: AtomicU64,
    /// Model batches split to isolate failing items (or out-of-memory).
    pub(super) model_splits: AtomicU64,
    /// Items the model failed on alone (dead-lettered `model_error` / `internal_error`).
    pub(super) model_item_failures: AtomicU64,
    /// Panics caught around model calls.
    pub(super) model_panics: AtomicU64,
    /// Panics caught while an event was decoded or preprocessed.
    pub(super) intake_panics: AtomicU64,
    /// Moderation decisions made, by action (`allow`, `review`, `block`).
    pub(super) moderation: [AtomicU64; 3],
    /// Known-hash list matches on moderation records, by list.
    pub(super) list_matches: Mutex<BTreeMap<String, u64>>,
    /// Known-hash list versions that changed but could not be loaded.
    pub(super) list_reload_failures: AtomicU64,
    /// What the source and committer adapters count.
    pub(super) adapter: Arc<AdapterMetrics>,
    /// Scheduler decisions per lane, by [`Ready`] reason.
    pub(super) decisions: [[AtomicU64; 5]; 2],
    /// Batches the time slice cut short, per lane.
    pub(super) slices: [AtomicU64; 2],
    /// The read-ahead window now (events in flight allowed).
    pub(super) in_flight_window: AtomicU64,
    /// Exactly-once: transactions committed and aborted, producers recreated, fencings.
    pub(super) transactions: Transactions,
    /// Exactly-once: output pieces held back behind a gap in the done prefix.
    pub(super) held_back: AtomicI64,
    transaction_seconds: Histogram,
    stages: [Histogram; 6],
    queue_wait: [[Histogram; 3]; 2],
    lane_latency: [[Histogram; 3]; 2],
    lane_samples: Mutex<[[Latencies; 3]; 2]>,
    batch_size: [Histogram; 2],
    batch_fill: [Histogram; 2],
    throughput: Mutex<VecDeque<(Instant, u64)>>,
    reasons: Mutex<Reasons>,
    latencies: Mutex<Latencies>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl Recorder {
    /// A recorder that also renders what `adapter` counts.
    pub fn new(adapter: Arc<AdapterMetrics>) -> Self {
        let stage = || Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let size = || Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let fill = || Histogram::new(linear_buckets(0.1, 0.1, 10));
        Self {
            read: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            degraded: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            outputs: Default::default(),
            batches: Default::default(),
            batch_items: Default::default(),
            model_ns: AtomicU64::new(0),
            batcher_pending: AtomicU64::new(0),
            model_queue: AtomicI64::new(0),
            fetches_in_flight: AtomicI64::new(0),
            commits: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            lane_max_items: Default::default(),
            uncommitted_partitions: AtomicI64::new(0),
            transactions: Transactions::default(),
            held_back: AtomicI64::new(0),
            transaction_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            publish_retries: AtomicU64::new(0),
            outputs_too_large: AtomicU64::new(0),
            model_splits: AtomicU64::new(0),
            model_item_failures: AtomicU64::new(0),
            model_panics: AtomicU64::new(0),
            intake_panics: AtomicU64::new(0),
            moderation: Default::default(),
            list_matches: Mutex::default(),
            list_reload_failures: AtomicU64::new(0),
            adapter,
            decisions: Default::default(),
            slices: Default::default(),
            in_flight_window: AtomicU64::new(0),
            stages: std::array::from_fn(|_| stage()),
            queue_wait: std::array::from_fn(|_| std::array::from_fn(|_| stage())),
            lane_latency: std::array::from_fn(|_| std::array::from_fn(|_| stage())),
            lane_samples: Mutex::default(),
            batch_size: std::array::from_fn(|_| size()),
            batch_fill: std::array::from_fn(|_| fill()),
            throughput: Mutex::new(VecDeque::new()),
            reasons: Mutex::default(),
            latencies: Mutex::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Reasons {
    dead_letter: BTreeMap<String, u64>,
    degraded: BTreeMap<String, u64>,
    skipped: BTreeMap<String, u64>,
}

/// A uniform sample of latencies (reservoir), for percentiles in the summary.
#[derive(Debug, Default, Clone)]
struct Latencies {
    seen: u64,
    samples: Vec<f32>,
    rng: u64,
}

impl Latencies {
    fn add(&mut self, latency: Duration) {
        self.seen += 1;
        let ms = latency.as_secs_f32() * 1e3;
        if self.samples.len() < LATENCY_SAMPLES {
            self.samples.push(ms);
        } else {
            // Reservoir sampling (xorshift; quality is not critical here).
            if self.rng == 0 {
                self.rng = 0x9E37_79B9_7F4A_7C15;
            }
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let j = (self.rng % self.seen) as usize;
            if j < LATENCY_SAMPLES {
                self.samples[j] = ms;
            }
        }
    }

    /// (p50, p99, count) in milliseconds.
    fn percentiles(&self) -> (f64, f64, u64) {
        let mut lat = self.samples.clone();
        lat.sort_by(f32::total_cmp);
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() - 1) as f64 * p).round() as usize] as f64
            }
        };
        (pct(0.50), pct(0.99), self.seen)
    }
}

impl Reporter for Recorder {
    fn report(&self, r: Report<'_>) {
        match r {
            Report::LanesConfigured { max_items } => {
                for (m, v) in self.lane_max_items.iter().zip(max_items) {
                    m.store(v as u64, Relaxed);
                }
            }
            Report::EventRead => add(&self.read),
            Report::EventFinished { outcome, latency } => self.finish(outcome, latency),
            Report::RecordsAcked { streams } => self.published(streams),
            Report::LaneAcked {
                lane,
                priority,
                since_read,
            } => self.lane_latency(lane, priority, since_read),
            Report::StageTimed { stage, took } => self.stage(stage, took),
            Report::FetchStarted => {
                self.fetches_in_flight.fetch_add(1, Relaxed);
            }
            Report::FetchEnded => {
                self.fetches_in_flight.fetch_sub(1, Relaxed);
            }
            Report::PartsWaiting(n) => self.batcher_pending.store(n as u64, Relaxed),
            Report::BatchQueued => {
                self.model_queue.fetch_add(1, Relaxed);
            }
            Report::BatchTaken => {
                self.model_queue.fetch_sub(1, Relaxed);
            }
            Report::BatchScheduled {
                lane,
                ready,
                sliced,
            } => self.decision(lane, ready, sliced),
            Report::BatchRan { lane, items, took } => self.batch(lane, items, took),
            Report::QueueWaited {
                lane,
                priority,
                waited,
            } => self.queue_wait(lane, priority, waited),
            other => self.failure_or_control(other),
        }
    }
}

/// One more.
fn add(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Recorder {
    /// The reports of failures, moderation, the read-ahead and commits (the rest of
    /// [`Reporter::report`]).
    fn failure_or_control(&self, r: Report<'_>) {
        match r {
            Report::BatchSplit { splits } => {
                self.model_splits.fetch_add(splits as u64, Relaxed);
            }
            Report::ItemFailed { panicked } => {
                add(&self.model_item_failures);
                if panicked {
                    add(&self.model_panics);
                }
            }
            Report::IntakePanicked => add(&self.intake_panics),
            Report::ModerationDecided { action } => add(&self.moderation[action as usize]),
            Report::ListMatched { list } => {
                *lock(&self.list_matches).entry(list.to_owned()).or_default() += 1;
            }
            Report::ListReloadFailed => add(&self.list_reload_failures),
            Report::WindowResized(n) => self.in_flight_window.store(n as u64, Relaxed),
            Report::PublishRetried => add(&self.publish_retries),
            Report::OutputTooLarge => add(&self.outputs_too_large),
            Report::CommitSent => add(&self.commits),
            Report::CommitFailed => add(&self.commit_failures),
            Report::UncommittedPartitions(n) => {
                self.uncommitted_partitions.store(n as i64, Relaxed)
            }
            Report::TransactionCommitted { took, records, .. } => {
                add(&self.transactions.committed);
                self.transactions
                    .records
                    .fetch_add(u64::try_from(records).unwrap_or(u64::MAX), Relaxed);
                self.transaction_seconds.observe(took.as_secs_f64());
            }
            Report::TransactionAborted => add(&self.transactions.aborted),
            Report::ProducerRecovered => add(&self.transactions.recovered),
            Report::Fenced => add(&self.transactions.fenced),
            Report::HeldBack(n) => self.held_back.store(n as i64, Relaxed),
            // Taken by `report` itself (listed so that a new report cannot go unrecorded).
            Report::LanesConfigured { .. }
            | Report::EventRead
            | Report::EventFinished { .. }
            | Report::RecordsAcked { .. }
            | Report::LaneAcked { .. }
            | Report::StageTimed { .. }
            | Report::FetchStarted
            | Report::FetchEnded
            | Report::PartsWaiting(_)
            | Report::BatchQueued
            | Report::BatchTaken
            | Report::BatchScheduled { .. }
            | Report::BatchRan { .. }
            | Report::QueueWaited { .. } => {}
        }
    }

    /// What the adapters count (handed to the engine, which shares it with its source and
    /// committer).
    pub fn adapter(&self) -> Arc<AdapterMetrics> {
        self.adapter.clone()
    }

    /// Events finished so far.
    pub fn finished(&self) -> u64 {
        self.finished.load(Relaxed)
    }

    /// Commits that failed: those the engine saw fail and those the store reported later.
    pub fn commit_failures(&self) -> u64 {
        self.commit_failures.load(Relaxed) + self.adapter.commit_failures.load(Relaxed)
    }

    /// Count acknowledged records.
    fn published(&self, streams: &[Stream]) {
        for s in streams {
            self.outputs[s.index()].fetch_add(1, Relaxed);
        }
    }

    /// Count a finished event.
    fn finish(&self, outcome: &Outcome, latency: Duration) {
        self.finished.fetch_add(1, Relaxed);
        let mut r = lock(&self.reasons);
        match outcome {
            Outcome::Processed { degraded, skipped } => {
                self.processed.fetch_add(1, Relaxed);
                if !degraded.is_empty() {
                    self.degraded.fetch_add(1, Relaxed);
                }
                for d in degraded {
                    *r.degraded.entry(d.as_str().to_owned()).or_default() += 1;
                }
                for s in skipped {
                    *r.skipped.entry(s.clone()).or_default() += 1;
                }
            }
            Outcome::DeadLetter(reason) => {
                self.dead_lettered.fetch_add(1, Relaxed);
                *r.dead_letter.entry(reason.as_str().to_owned()).or_default() += 1;
            }
        }
        drop(r);
        lock(&self.latencies).add(latency);
        self.stage(Stage::Total, latency);
    }

    /// Record the time from an event's read to the acknowledgement of one lane's outputs.
    fn lane_latency(&self, lane: Lane, priority: Priority, d: Duration) {
        let (l, p) = (lane.index(), priority.level() as usize);
        self.lane_latency[l][p].observe(d.as_secs_f64());
        lock(&self.lane_samples)[l][p].add(d);
    }

    /// Record how long a lane part waited for its batch to start.
    fn queue_wait(&self, lane: Lane, priority: Priority, d: Duration) {
        self.queue_wait[lane.index()][priority.level() as usize].observe(d.as_secs_f64());
    }

    /// Count a scheduler decision.
    fn decision(&self, lane: Lane, ready: Ready, sliced: bool) {
        let r = Ready::ALL.iter().position(|x| *x == ready).unwrap_or(0);
        self.decisions[lane.index()][r].fetch_add(1, Relaxed);
        if sliced {
            self.slices[lane.index()].fetch_add(1, Relaxed);
        }
    }

    /// Per-lane, per-priority histograms: queue wait, read to lane outputs acknowledged.
    pub(super) fn lane_histograms(&self) -> (&[[Histogram; 3]; 2], &[[Histogram; 3]; 2]) {
        (&self.queue_wait, &self.lane_latency)
    }

    /// Count a model batch.
    fn batch(&self, lane: Lane, items: usize, took: Duration) {
        let i = lane.index();
        self.batches[i].fetch_add(1, Relaxed);
        self.batch_items[i].fetch_add(items as u64, Relaxed);
        self.model_ns.fetch_add(took.as_nanos() as u64, Relaxed);
        self.batch_size[i].observe(items as f64);
        let max = self.lane_max_items[i].load(Relaxed);
        if max > 0 {
            self.batch_fill[i].observe(items as f64 / max as f64);
        }
    }

    /// Record the duration of a stage.
    fn stage(&self, stage: Stage, d: Duration) {
        self.stages[stage.index()].observe(d.as_secs_f64());
    }

    /// Stage-duration histograms, in [`Stage::ALL`] order.
    pub(super) fn stage_histograms(&self) -> &[Histogram; 6] {
        &self.stages
    }

    /// Exactly-once: time to flush, send the offsets and commit a transaction.
    pub(super) fn transaction_histogram(&self) -> &Histogram {
        &self.transaction_seconds
    }

    /// Batch size and fill-ratio histograms per lane.
    pub(super) fn batch_histograms(&self) -> (&[Histogram; 2], &[Histogram; 2]) {
        (&self.batch_size, &self.batch_fill)
    }

    /// Record the finished count now, for the recent throughput (called every few seconds).
    pub fn sample_throughput(&self, now: Instant) {
        let mut q = lock(&self.throughput);
        q.push_back((now, self.finished.load(Relaxed)));
        while q.len() > 2 && now.duration_since(q[0].0) > THROUGHPUT_WINDOW {
            q.pop_front();
        }
    }

    /// Events finished per second over the last minute (0 until two samples exist).
    pub fn recent_throughput(&self) -> f64 {
        let q = lock(&self.throughput);
        match (q.front(), q.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                (b.1 - a.1) as f64 / b.0.duration_since(a.0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// Seconds to work through the consumer lag at the recent throughput (a floor of one
    /// event per second, so a stalled worker with a backlog reads as far behind); 0 without
    /// lag, -1 when the lag is unknown.
    pub fn seconds_to_drain(&self) -> f64 {
        let lag = self.adapter.consumer_lag.load(Relaxed);
        if lag < 0 {
            return -1.0;
        }
        lag as f64 / self.recent_throughput().max(1.0)
    }

    /// Events read and not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.read
            .load(Relaxed)
            .saturating_sub(self.finished.load(Relaxed))
    }

    /// Count of each dead-letter reason, degradation reason and skipped `task:reason`.
    pub(super) fn reasons(&self) -> [BTreeMap<String, u64>; 3] {
        let r = lock(&self.reasons);
        [r.dead_letter.clone(), r.degraded.clone(), r.skipped.clone()]
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> Snapshot {
        let r = lock(&self.reasons);
        let (p50, p99, _) = lock(&self.latencies).percentiles();
        let mut latency_by_lane = BTreeMap::new();
        let samples = lock(&self.lane_samples);
        for lane in Lane::ALL {
            for priority in Priority::ALL {
                let (p50, p99, n) = samples[lane.index()][priority.level() as usize].percentiles();
                if n > 0 {
                    latency_by_lane.insert(
                        format!("{}/{}", lane.name(), priority.name()),
                        LaneLatency {
                            outputs: n,
                            p50_ms: p50,
                            p99_ms: p99,
                        },
                    );
                }
            }
        }
        drop(samples);
        Snapshot {
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
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            latency_by_lane,
            model_splits: self.model_splits.load(Relaxed),
            model_item_failures: self.model_item_failures.load(Relaxed),
            model_panics: self.model_panics.load(Relaxed),
            intake_panics: self.intake_panics.load(Relaxed),
            run_alone: self.adapter.run_alone.load(Relaxed),
            source_pauses: self.adapter.pauses.load(Relaxed),
            source_retries: self.adapter.source_retries.load(Relaxed),
            partitions_revoked: self.adapter.partitions_revoked.load(Relaxed),
            commit_failures: self.commit_failures(),
            transactions: TransactionCounts {
                committed: self.transactions.committed.load(Relaxed),
                records: self.transactions.records.load(Relaxed),
                aborted: self.transactions.aborted.load(Relaxed),
                producers_recreated: self.transactions.recovered.load(Relaxed),
                fenced: self.transactions.fenced.load(Relaxed),
            },
        }
    }
}

/// Exactly-once transactions, as they happened.
#[derive(Debug, Default)]
pub(super) struct Transactions {
    pub(super) committed: AtomicU64,
    pub(super) records: AtomicU64,
    pub(super) aborted: AtomicU64,
    pub(super) recovered: AtomicU64,
    pub(super) fenced: AtomicU64,
}

/// Exactly-once transactions in the run summary (all zero at least-once).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TransactionCounts {
    /// Committed (outputs and offsets together).
    pub committed: u64,
    /// Output records (lake: rows) in the committed transactions.
    pub records: u64,
    /// Aborted (their records sent again, or replayed by a partition's new owner).
    pub aborted: u64,
    /// Transactional producers recreated after a fatal error.
    pub producers_recreated: u64,
    /// Times a newer worker with the same transactional id fenced this one.
    pub fenced: u64,
}

/// Latency percentiles of one lane and priority.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LaneLatency {
    /// Lane outputs acknowledged.
    pub outputs: u64,
    /// Median, read → acknowledged.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// Counters at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
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
    pub outputs: [(Stream, u64); Stream::COUNT],
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
    /// Read → a lane's outputs acknowledged, by `lane/priority`.
    pub latency_by_lane: BTreeMap<String, LaneLatency>,
    /// Model batches split to isolate failures.
    pub model_splits: u64,
    /// Items the model failed on alone.
    pub model_item_failures: u64,
    /// Panics caught around model calls.
    pub model_panics: u64,
    /// Panics caught in decoding and preprocessing.
    pub intake_panics: u64,
    /// Events run alone after an unclean exit (crash guard).
    pub run_alone: u64,
    /// Times the source paused for back-pressure.
    pub source_pauses: u64,
    /// Source requests retried (a backfill's listing).
    pub source_retries: u64,
    /// Partitions taken from this worker by rebalances.
    pub partitions_revoked: u64,
    /// Position commits that failed (each retried).
    pub commit_failures: u64,
    /// Exactly-once transactions.
    pub transactions: TransactionCounts,
}
