//! Prometheus metrics: a collector that renders the [`Recorder`] (with the adapters'
//! counters and [`Health`]) at scrape time, so the run summary and `/metrics` read the same
//! figures. The catalogue is data: `CATALOGUE` lists every metric with its help text and
//! how to read it, in the order of `docs/metrics.md` (a test keeps the two in step).
//!
//! Long because the catalogue is the whole metrics surface, one entry per series with its
//! help text beside how it is read; the code around it is short.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use fusionstream_core::moderation::Action;
use fusionstream_core::record::Stream;
use fusionstream_core::schedule::Ready;
use fusionstream_core::{Lane, Priority};
use fusionstream_engine::Stage;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::health::Health;
use super::recorder::Recorder;

/// Renders the [`Recorder`] (with the adapters' counters) and [`Health`] as Prometheus
/// metrics.
#[derive(Debug)]
pub struct RecorderCollector {
    recorder: Arc<Recorder>,
    health: Arc<Health>,
}

/// A registry holding the worker's metrics (names prefixed `fusionstream_`).
pub fn registry(recorder: Arc<Recorder>, health: Arc<Health>) -> Registry {
    let mut r = Registry::with_prefix("fusionstream");
    r.register_collector(Box::new(RecorderCollector { recorder, health }));
    r
}

/// The text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// One constant counter.
pub(crate) fn counter<N>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: N,
) -> std::fmt::Result
where
    ConstCounter<N>: EncodeMetric,
{
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// One constant gauge.
pub(crate) fn gauge<N>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: N,
) -> std::fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// What a metric is read from.
struct Src<'a> {
    r: &'a Recorder,
    h: &'a Health,
}

/// A value as it is exposed: counts as integers, times and rates as floats.
#[derive(Debug, Clone, Copy)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

/// Label values (in the order of the metric's label names) and a value.
type Series<T> = Vec<(Vec<String>, T)>;

/// How a metric reads its series.
enum Read {
    /// A counter: one series, or one per label value.
    Counter(fn(&Src<'_>) -> Series<Num>),
    /// A gauge.
    Gauge(fn(&Src<'_>) -> Series<Num>),
    /// A histogram, with its unit.
    Histogram(
        Option<Unit>,
        for<'a, 'b> fn(&'b Src<'a>) -> Series<&'a Histogram>,
    ),
}

/// One metric of the catalogue.
struct Metric {
    /// Name, after the `fusionstream_` prefix (counters gain `_total`).
    name: &'static str,
    help: &'static str,
    /// Label names, matching the label values of each series.
    labels: &'static [&'static str],
    read: Read,
}

/// One unlabelled series.
fn one(v: Num) -> Series<Num> {
    vec![(Vec::new(), v)]
}

fn load(a: &std::sync::atomic::AtomicU64) -> Num {
    Num::U(a.load(Relaxed))
}

/// One series per lane.
fn per_lane<T>(f: impl Fn(usize) -> T) -> Series<T> {
    Lane::ALL
        .iter()
        .map(|l| (vec![l.name().to_owned()], f(l.index())))
        .collect()
}

/// One series per lane and priority.
fn per_lane_priority<T>(f: impl Fn(usize, usize) -> T) -> Series<T> {
    Lane::ALL
        .iter()
        .flat_map(|l| {
            let f = &f;
            Priority::ALL.iter().map(move |p| {
                let labels = vec![l.name().to_owned(), p.name().to_owned()];
                (labels, f(l.index(), p.level() as usize))
            })
        })
        .collect()
}

/// Counts by a label value that is not known in advance (reason codes, list ids).
fn by_key(m: &std::collections::BTreeMap<String, u64>) -> Series<Num> {
    m.iter()
        .map(|(k, v)| (vec![k.clone()], Num::U(*v)))
        .collect()
}

/// Every metric of the worker, in the order of `docs/metrics.md`.
static CATALOGUE: &[Metric] = &[
    Metric {
        name: "events_read",
        help: "Events read from the source.",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.read))),
    },
    Metric {
        name: "events",
        help: "Events finished (outputs or dead letter acknowledged), by outcome.",
        labels: &["outcome"],
        read: Read::Counter(|s| {
            let dl = s.r.dead_lettered.load(Relaxed);
            let deg = s.r.degraded.load(Relaxed);
            let ok = s.r.processed.load(Relaxed).saturating_sub(deg);
            [("ok", ok), ("degraded", deg), ("dead_letter", dl)]
                .map(|(k, v)| (vec![k.to_owned()], Num::U(v)))
                .into()
        }),
    },
    Metric {
        name: "dead_letters",
        help: "Dead letters by reason code.",
        labels: &["reason"],
        read: Read::Counter(|s| by_key(&s.r.reasons()[0])),
    },
    Metric {
        name: "degradations",
        help: "Unusable modalities of processed events, by reason code.",
        labels: &["reason"],
        read: Read::Counter(|s| by_key(&s.r.reasons()[1])),
    },
    Metric {
        name: "skipped_tasks",
        help: "Requested tasks skipped, by task and reason.",
        labels: &["task", "reason"],
        read: Read::Counter(|s| {
            let [_, _, skipped] = s.r.reasons();
            skipped
                .iter()
                .map(|(k, v)| {
                    let (task, reason) = k.split_once(':').unwrap_or((k.as_str(), ""));
                    (vec![task.to_owned(), reason.to_owned()], Num::U(*v))
                })
                .collect()
        }),
    },
    Metric {
        name: "outputs",
        help: "Output records acknowledged, by stream.",
        labels: &["stream"],
        read: Read::Counter(|s| {
            Stream::ALL
                .iter()
                .map(|st| (vec![st.name().to_owned()], load(&s.r.outputs[st.index()])))
                .collect()
        }),
    },
    Metric {
        name: "moderation_decisions",
        help: "Moderation decisions made, by action.",
        labels: &["action"],
        read: Read::Counter(|s| {
            [Action::Allow, Action::Review, Action::Block]
                .iter()
                .map(|a| (vec![a.name().to_owned()], load(&s.r.moderation[*a as usize])))
                .collect()
        }),
    },
    Metric {
        name: "list_matches",
        help: "Known-hash list entries matched on moderation records, by list.",
        labels: &["list"],
        read: Read::Counter(|s| by_key(&fusionstream_core::lock(&s.r.list_matches))),
    },
    Metric {
        name: "list_reload_failures",
        help: "Known-hash list versions that changed but could not be loaded (the previous version stays).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.list_reload_failures))),
    },
    Metric {
        name: "model_batches",
        help: "Model batches, by lane.",
        labels: &["lane"],
        read: Read::Counter(|s| per_lane(|l| load(&s.r.batches[l]))),
    },
    Metric {
        name: "model_batch_items",
        help: "Items in model batches, by lane.",
        labels: &["lane"],
        read: Read::Counter(|s| per_lane(|l| load(&s.r.batch_items[l]))),
    },
    Metric {
        name: "model_batch_size",
        help: "Items per model batch, by lane.",
        labels: &["lane"],
        read: Read::Histogram(None, |s| per_lane(|l| &s.r.batch_histograms().0[l])),
    },
    Metric {
        name: "model_batch_fill_ratio",
        help: "Items per model batch over the lane's max_items, by lane.",
        labels: &["lane"],
        read: Read::Histogram(None, |s| per_lane(|l| &s.r.batch_histograms().1[l])),
    },
    Metric {
        name: "queue_wait",
        help: "Time a lane part waited for its model batch to start, by lane and priority.",
        labels: &["lane", "priority"],
        read: Read::Histogram(Some(Unit::Seconds), |s| {
            per_lane_priority(|l, p| &s.r.lane_histograms().0[l][p])
        }),
    },
    Metric {
        name: "lane_latency",
        help: "Read to a lane's outputs acknowledged, by lane and priority.",
        labels: &["lane", "priority"],
        read: Read::Histogram(Some(Unit::Seconds), |s| {
            per_lane_priority(|l, p| &s.r.lane_histograms().1[l][p])
        }),
    },
    Metric {
        name: "scheduler_decisions",
        help: "Batches the scheduler started, by lane and why the lane was ready (full, budget, urgent, waited, drain).",
        labels: &["lane", "ready"],
        read: Read::Counter(|s| {
            let mut out = Vec::new();
            for lane in Lane::ALL {
                for (i, r) in Ready::ALL.iter().enumerate() {
                    let labels = vec![lane.name().to_owned(), r.name().to_owned()];
                    out.push((labels, load(&s.r.decisions[lane.index()][i])));
                }
            }
            out
        }),
    },
    Metric {
        name: "scheduler_slices",
        help: "Batches the time slice cut short (the other lane had items waiting), by lane.",
        labels: &["lane"],
        read: Read::Counter(|s| per_lane(|l| load(&s.r.slices[l]))),
    },
    Metric {
        name: "in_flight_window",
        help: "Events the source may have in flight now (the adaptive read-ahead).",
        labels: &[],
        read: Read::Gauge(|s| one(Num::I(s.r.in_flight_window.load(Relaxed) as i64))),
    },
    Metric {
        name: "stage",
        help: "Time spent per event in each stage (publish: per group of events).",
        labels: &["stage"],
        read: Read::Histogram(Some(Unit::Seconds), |s| {
            Stage::ALL
                .iter()
                .map(|st| (vec![st.name().to_owned()], &s.r.stage_histograms()[st.index()]))
                .collect()
        }),
    },
    Metric {
        name: "model_busy_seconds",
        help: "Time the model thread spent in forward passes.",
        labels: &[],
        read: Read::Counter(|s| one(Num::F(s.r.model_ns.load(Relaxed) as f64 / 1e9))),
    },
    Metric {
        name: "events_in_flight",
        help: "Events read and not yet finished.",
        labels: &[],
        read: Read::Gauge(|s| one(Num::I(s.r.in_flight() as i64))),
    },
    Metric {
        name: "fetches_in_flight",
        help: "Media fetches running.",
        labels: &[],
        read: Read::Gauge(|s| one(Num::I(s.r.fetches_in_flight.load(Relaxed)))),
    },
    Metric {
        name: "queue_depth",
        help: "Items waiting between stages: batcher (events in open batches), model (batches queued for the model thread).",
        labels: &["queue"],
        read: Read::Gauge(|s| {
            vec![
                (
                    vec!["batcher".to_owned()],
                    Num::I(s.r.batcher_pending.load(Relaxed) as i64),
                ),
                (
                    vec!["model".to_owned()],
                    Num::I(s.r.model_queue.load(Relaxed)),
                ),
            ]
        }),
    },
    Metric {
        name: "partitions_assigned",
        help: "Kafka partitions assigned to this worker (-1: not a consumer-group source).",
        labels: &[],
        read: Read::Gauge(|s| one(Num::I(s.r.adapter.partitions_assigned.load(Relaxed)))),
    },
    Metric {
        name: "consumer_lag",
        help: "Events behind the end of the assigned partitions, from the last committed offsets (-1: unknown).",
        labels: &[],
        read: Read::Gauge(|s| one(Num::I(s.r.adapter.consumer_lag.load(Relaxed)))),
    },
    Metric {
        name: "throughput_events_per_second",
        help: "Events finished per second over the last minute.",
        labels: &[],
        read: Read::Gauge(|s| one(Num::F(s.r.recent_throughput()))),
    },
    Metric {
        name: "seconds_to_drain",
        help: "Consumer lag divided by the recent throughput (floor 1 event/s); the autoscaling signal (-1: lag unknown).",
        labels: &[],
        read: Read::Gauge(|s| one(Num::F(s.r.seconds_to_drain()))),
    },
    Metric {
        name: "source_paused",
        help: "1 while the source is paused because every in-flight slot is taken.",
        labels: &[],
        read: Read::Gauge(|s| one(Num::I(i64::from(s.r.adapter.paused.load(Relaxed))))),
    },
    Metric {
        name: "source_pauses",
        help: "Times the source paused for back-pressure.",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.adapter.pauses))),
    },
    Metric {
        name: "commits",
        help: "Position commits.",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.commits))),
    },
    Metric {
        name: "commit_failures",
        help: "Position commits that failed or were refused by the broker (each is retried).",
        labels: &[],
        read: Read::Counter(|s| one(Num::U(s.r.commit_failures()))),
    },
    Metric {
        name: "uncommitted_partitions",
        help: "Partitions whose done position is not yet confirmed as committed (alert if it stays above 0).",
        labels: &[],
        read: Read::Gauge(|s| one(Num::I(s.r.uncommitted_partitions.load(Relaxed)))),
    },
    Metric {
        name: "transactions_committed",
        help: "Exactly-once: transactions committed (outputs and input offsets together).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.transactions.committed))),
    },
    Metric {
        name: "transactions_aborted",
        help: "Exactly-once: transactions aborted (their records are sent again, or replayed by a revoked partition's new owner).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.transactions.aborted))),
    },
    Metric {
        name: "transactional_producers_recreated",
        help: "Exactly-once: transactional producers recreated after a fatal error (unknown producer id, a commit without answer).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.transactions.recovered))),
    },
    Metric {
        name: "transactions_fenced",
        help: "Exactly-once: times a newer worker with the same transactional id fenced this one (it stops).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.transactions.fenced))),
    },
    Metric {
        name: "transaction_commit",
        help: "Exactly-once: time to flush a transaction's records, send its offsets and commit it.",
        labels: &[],
        read: Read::Histogram(Some(Unit::Seconds), |s| {
            vec![(Vec::new(), s.r.transaction_histogram())]
        }),
    },
    Metric {
        name: "held_back_outputs",
        help: "Exactly-once: output pieces held back until their events join the done prefix (bounded by the in-flight window).",
        labels: &[],
        read: Read::Gauge(|s| one(Num::I(s.r.held_back.load(Relaxed)))),
    },
    Metric {
        name: "publish_retries",
        help: "Output groups sent again after the sink failed to acknowledge them.",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.publish_retries))),
    },
    Metric {
        name: "outputs_too_large",
        help: "Output records the broker refused as too large, replaced by output_too_large dead letters.",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.outputs_too_large))),
    },
    Metric {
        name: "model_batch_splits",
        help: "Model batches split in halves to isolate the items that fail them (or after out-of-memory).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.model_splits))),
    },
    Metric {
        name: "model_item_failures",
        help: "Items the model failed on alone; their events are dead-lettered (model_error, internal_error).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.model_item_failures))),
    },
    Metric {
        name: "model_panics",
        help: "Panics caught around model calls (each an internal_error dead letter).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.model_panics))),
    },
    Metric {
        name: "intake_panics",
        help: "Panics caught while decoding or preprocessing an event (each an internal_error dead letter).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.intake_panics))),
    },
    Metric {
        name: "suspect_resumes",
        help: "Partitions resumed after an unclean exit of their last owner (crash guard: their next events run alone).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.adapter.suspect_resumes))),
    },
    Metric {
        name: "run_alone",
        help: "Events run alone, their attempt recorded first, after an unclean exit (crash guard).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.adapter.run_alone))),
    },
    Metric {
        name: "rebalances",
        help: "Consumer-group rebalance callbacks (assign and revoke).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.adapter.rebalances))),
    },
    Metric {
        name: "partitions_revoked",
        help: "Partitions taken from this worker by consumer-group rebalances.",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.adapter.partitions_revoked))),
    },
    Metric {
        name: "source_retries",
        help: "Source requests retried after a retryable error (a backfill's listing of its prefix).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.adapter.source_retries))),
    },
    Metric {
        name: "revoke_abandoned",
        help: "In-flight events of revoked partitions not finished within kafka.revoke_timeout (replayed by the new owner).",
        labels: &[],
        read: Read::Counter(|s| one(load(&s.r.adapter.revoke_abandoned))),
    },
    Metric {
        name: "model_loaded",
        help: "1 once the model bundle is loaded.",
        labels: &[],
        read: Read::Gauge(|s| one(Num::I(i64::from(s.h.model_loaded.load(Relaxed))))),
    },
];

impl Collector for RecorderCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let src = Src {
            r: &self.recorder,
            h: &self.health,
        };
        for m in CATALOGUE {
            m.encode(&src, &mut e)?;
        }
        Ok(())
    }
}

impl Metric {
    /// Its descriptor, then its series.
    fn encode(&self, src: &Src<'_>, e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let (kind, unit) = match &self.read {
            Read::Counter(_) => (MetricType::Counter, None),
            Read::Gauge(_) => (MetricType::Gauge, None),
            Read::Histogram(unit, _) => (MetricType::Histogram, unit.as_ref()),
        };
        let family = e.encode_descriptor(self.name, self.help, unit, kind)?;
        match &self.read {
            Read::Counter(read) => self.each(family, read(src), |m, v| match v {
                Num::U(v) => ConstCounter::new(v).encode(m),
                Num::I(v) => ConstCounter::new(v.max(0) as u64).encode(m),
                Num::F(v) => ConstCounter::new(v).encode(m),
            }),
            Read::Gauge(read) => self.each(family, read(src), |m, v| match v {
                Num::U(v) => ConstGauge::new(v as i64).encode(m),
                Num::I(v) => ConstGauge::new(v).encode(m),
                Num::F(v) => ConstGauge::new(v).encode(m),
            }),
            Read::Histogram(_, read) => self.each(family, read(src), |m, h| h.encode(m)),
        }
    }

    /// Each series under its labels; a metric without labels has one series, encoded
    /// directly.
    fn each<T>(
        &self,
        mut family: MetricEncoder<'_>,
        series: Series<T>,
        encode: impl Fn(MetricEncoder<'_>, T) -> std::fmt::Result,
    ) -> std::fmt::Result {
        if self.labels.is_empty() {
            return match series.into_iter().next() {
                Some((_, v)) => encode(family, v),
                None => Ok(()),
            };
        }
        for (values, v) in series {
            let labels: Vec<(&str, &str)> = self
                .labels
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            encode(family.encode_family(&labels)?, v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusionstream_engine::{Outcome, Report, Reporter as _};
    use std::time::{Duration, Instant};

    #[test]
    fn exposition_carries_the_counters_of_the_run() {
        let rec = Arc::new(Recorder::default());
        for _ in 0..3 {
            rec.report(Report::EventRead);
        }
        let degraded = Outcome::Processed {
            degraded: vec![fusionstream_core::ReasonCode::ImageNotFound],
            skipped: vec!["caption:no_image".into()],
        };
        rec.report(Report::EventFinished {
            outcome: &degraded,
            latency: Duration::from_millis(12),
        });
        rec.report(Report::RecordsAcked {
            streams: &[Stream::Embeddings],
        });
        let dead = Outcome::DeadLetter(fusionstream_core::ReasonCode::MalformedJson);
        rec.report(Report::EventFinished {
            outcome: &dead,
            latency: Duration::from_millis(1),
        });
        rec.report(Report::RecordsAcked {
            streams: &[Stream::DeadLetters],
        });
        rec.report(Report::QueueWaited {
            lane: Lane::Generate,
            priority: Priority::High,
            waited: Duration::from_millis(7),
        });
        rec.report(Report::LaneAcked {
            lane: Lane::Encode,
            priority: Priority::Low,
            since_read: Duration::from_millis(30),
        });
        rec.report(Report::BatchScheduled {
            lane: Lane::Generate,
            ready: Ready::Urgent,
            sliced: true,
        });
        rec.report(Report::LanesConfigured { max_items: [4, 8] });
        rec.report(Report::BatchRan {
            lane: Lane::Encode,
            items: 2,
            took: Duration::from_millis(5),
        });
        rec.report(Report::StageTimed {
            stage: Stage::Fetch,
            took: Duration::from_millis(3),
        });
        let text = render(&registry(rec, Arc::default()));
        for line in [
            "fusionstream_events_read_total 3",
            "fusionstream_events_total{outcome=\"degraded\"} 1",
            "fusionstream_events_total{outcome=\"ok\"} 0",
            "fusionstream_events_total{outcome=\"dead_letter\"} 1",
            "fusionstream_dead_letters_total{reason=\"malformed_json\"} 1",
            "fusionstream_degradations_total{reason=\"image_not_found\"} 1",
            "fusionstream_skipped_tasks_total{task=\"caption\",reason=\"no_image\"} 1",
            "fusionstream_outputs_total{stream=\"embeddings\"} 1",
            "fusionstream_model_batch_size_count{lane=\"encode\"} 1",
            "fusionstream_model_batch_fill_ratio_sum{lane=\"encode\"} 0.5",
            "fusionstream_stage_seconds_count{stage=\"fetch\"} 1",
            "fusionstream_queue_wait_seconds_count{lane=\"generate\",priority=\"high\"} 1",
            "fusionstream_lane_latency_seconds_count{lane=\"encode\",priority=\"low\"} 1",
            "fusionstream_scheduler_decisions_total{lane=\"generate\",ready=\"urgent\"} 1",
            "fusionstream_scheduler_slices_total{lane=\"generate\"} 1",
            "fusionstream_events_in_flight 1",
            "fusionstream_consumer_lag -1",
            "fusionstream_seconds_to_drain -1.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn seconds_to_drain_is_lag_over_recent_throughput() {
        let s = Recorder::default();
        let t0 = Instant::now();
        s.sample_throughput(t0);
        let ok = Outcome::Processed {
            degraded: vec![],
            skipped: vec![],
        };
        for _ in 0..100 {
            s.report(Report::EventFinished {
                outcome: &ok,
                latency: Duration::ZERO,
            });
        }
        s.sample_throughput(t0 + Duration::from_secs(10));
        assert!((s.recent_throughput() - 10.0).abs() < 1e-9);
        s.adapter.consumer_lag.store(500, Relaxed);
        assert!((s.seconds_to_drain() - 50.0).abs() < 1e-9);
        // Nothing finishing: the 1 event/s floor.
        s.sample_throughput(t0 + Duration::from_secs(100));
        s.sample_throughput(t0 + Duration::from_secs(200));
        assert_eq!(s.recent_throughput(), 0.0);
        assert!((s.seconds_to_drain() - 500.0).abs() < 1e-9);
        s.adapter.consumer_lag.store(0, Relaxed);
        assert_eq!(s.seconds_to_drain(), 0.0);
    }
}

#[cfg(test)]
mod catalogue {
    use super::*;

    /// Every metric the worker exposes is described in docs/metrics.md.
    #[test]
    fn every_metric_is_in_the_catalogue() {
        let doc = include_str!("../../../../docs/metrics.md");
        let text = render(&registry(Arc::new(Recorder::default()), Arc::default()));
        let mut n = 0;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            let exposed = if kind == "counter" {
                format!("`{name}_total`")
            } else {
                format!("`{name}`")
            };
            assert!(
                doc.contains(&exposed),
                "{exposed} is not in docs/metrics.md"
            );
            n += 1;
        }
        assert!(n >= 25, "only {n} metrics rendered");
    }
}
