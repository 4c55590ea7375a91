//! Prometheus metrics: a collector that renders the pipeline's [`Stats`] at scrape time, so
//! the run summary and `/metrics` read the same counters. The catalogue, with what each
//! metric is for, is `docs/metrics.md` (a test keeps the two in step).
//!
//! Long (~540 lines) because it renders the whole catalogue in one collector, in the order of
//! `docs/metrics.md`, with the test that keeps the two in step.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use fusionstream_core::moderation::Action;
use fusionstream_core::record::Stream;
use fusionstream_core::schedule::Ready;
use fusionstream_core::{Lane, Priority};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::health::Health;
use super::stats::{Stage, Stats};

/// Renders [`Stats`] (with the adapters' counters) and [`Health`] as Prometheus metrics.
#[derive(Debug)]
pub struct StatsCollector {
    stats: Arc<Stats>,
    health: Arc<Health>,
}

/// A registry holding the pipeline's metrics (names prefixed `fusionstream_`).
pub fn registry(stats: Arc<Stats>, health: Arc<Health>) -> Registry {
    let mut r = Registry::with_prefix("fusionstream");
    r.register_collector(Box::new(StatsCollector { stats, health }));
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

/// A counter family with one label, from `(label value, count)` pairs.
fn counters<'a>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let mut f = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (k, v) in values {
        ConstCounter::new(v).encode(f.encode_family(&[(label, k)])?)?;
    }
    Ok(())
}

fn by_lane(h: &[Histogram; 2]) -> [(&'static str, &Histogram); 2] {
    Lane::ALL.map(|l| (l.name(), &h[l.index()]))
}

/// A histogram family with one label.
fn histograms<'a>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, &'a Histogram)>,
) -> std::fmt::Result {
    let mut f = e.encode_descriptor(name, help, unit, MetricType::Histogram)?;
    for (k, h) in values {
        h.encode(f.encode_family(&[(label, k)])?)?;
    }
    Ok(())
}

impl Collector for StatsCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let s = &*self.stats;
        let [dead, degraded, skipped] = s.reasons();
        counter(
            &mut e,
            "events_read",
            "Events read from the source.",
            s.read.load(Relaxed),
        )?;
        let dl = s.dead_lettered.load(Relaxed);
        let deg = s.degraded.load(Relaxed);
        let ok = s.processed.load(Relaxed).saturating_sub(deg);
        counters(
            &mut e,
            "events",
            "Events finished (outputs or dead letter acknowledged), by outcome.",
            "outcome",
            [("ok", ok), ("degraded", deg), ("dead_letter", dl)],
        )?;
        counters(
            &mut e,
            "dead_letters",
            "Dead letters by reason code.",
            "reason",
            dead.iter().map(|(k, v)| (k.as_str(), *v)),
        )?;
        counters(
            &mut e,
            "degradations",
            "Unusable modalities of processed events, by reason code.",
            "reason",
            degraded.iter().map(|(k, v)| (k.as_str(), *v)),
        )?;
        {
            let mut f = e.encode_descriptor(
                "skipped_tasks",
                "Requested tasks skipped, by task and reason.",
                None,
                MetricType::Counter,
            )?;
            for (k, v) in &skipped {
                let (task, reason) = k.split_once(':').unwrap_or((k.as_str(), ""));
                ConstCounter::new(*v)
                    .encode(f.encode_family(&[("task", task), ("reason", reason)])?)?;
            }
        }
        counters(
            &mut e,
            "outputs",
            "Output records acknowledged, by stream.",
            "stream",
            Stream::ALL.map(|st| (st.name(), s.outputs[st.index()].load(Relaxed))),
        )?;
        counters(
            &mut e,
            "moderation_decisions",
            "Moderation decisions made, by action.",
            "action",
            [Action::Allow, Action::Review, Action::Block]
                .map(|a| (a.name(), s.moderation[a as usize].load(Relaxed))),
        )?;
        {
            let matches = fusionstream_core::lock(&s.list_matches).clone();
            counters(
                &mut e,
                "list_matches",
                "Known-hash list entries matched on moderation records, by list.",
                "list",
                matches.iter().map(|(k, v)| (k.as_str(), *v)),
            )?;
        }
        counter(
            &mut e,
            "list_reload_failures",
            "Known-hash list versions that changed but could not be loaded (the previous version stays).",
            s.list_reload_failures.load(Relaxed),
        )?;
        counters(
            &mut e,
            "model_batches",
            "Model batches, by lane.",
            "lane",
            Lane::ALL.map(|l| (l.name(), s.batches[l.index()].load(Relaxed))),
        )?;
        counters(
            &mut e,
            "model_batch_items",
            "Items in model batches, by lane.",
            "lane",
            Lane::ALL.map(|l| (l.name(), s.batch_items[l.index()].load(Relaxed))),
        )?;
        let (size, fill) = s.batch_histograms();
        histograms(
            &mut e,
            "model_batch_size",
            "Items per model batch, by lane.",
            None,
            "lane",
            by_lane(size),
        )?;
        histograms(
            &mut e,
            "model_batch_fill_ratio",
            "Items per model batch over the lane's max_items, by lane.",
            None,
            "lane",
            by_lane(fill),
        )?;
        {
            let (wait, latency) = s.lane_histograms();
            for (name, help, h) in [
                (
                    "queue_wait",
                    "Time a lane part waited for its model batch to start, by lane and priority.",
                    wait,
                ),
                (
                    "lane_latency",
                    "Read to a lane's outputs acknowledged, by lane and priority.",
                    latency,
                ),
            ] {
                let mut f =
                    e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
                for lane in Lane::ALL {
                    for p in Priority::ALL {
                        h[lane.index()][p.level() as usize].encode(
                            f.encode_family(&[("lane", lane.name()), ("priority", p.name())])?,
                        )?;
                    }
                }
            }
        }
        {
            let mut f = e.encode_descriptor(
                "scheduler_decisions",
                "Batches the scheduler started, by lane and why the lane was ready (full, budget, urgent, waited, drain).",
                None,
                MetricType::Counter,
            )?;
            for lane in Lane::ALL {
                for (i, r) in Ready::ALL.iter().enumerate() {
                    ConstCounter::new(s.decisions[lane.index()][i].load(Relaxed))
                        .encode(f.encode_family(&[("lane", lane.name()), ("ready", r.name())])?)?;
                }
            }
        }
        counters(
            &mut e,
            "scheduler_slices",
            "Batches the time slice cut short (the other lane had items waiting), by lane.",
            "lane",
            Lane::ALL.map(|l| (l.name(), s.slices[l.index()].load(Relaxed))),
        )?;
        gauge(
            &mut e,
            "in_flight_window",
            "Events the source may have in flight now (the adaptive read-ahead).",
            s.in_flight_window.load(Relaxed) as i64,
        )?;
        histograms(
            &mut e,
            "stage",
            "Time spent per event in each stage (publish: per group of events).",
            Some(&Unit::Seconds),
            "stage",
            Stage::ALL
                .iter()
                .map(|st| st.name())
                .zip(s.stage_histograms()),
        )?;
        counter(
            &mut e,
            "model_busy_seconds",
            "Time the model thread spent in forward passes.",
            s.model_ns.load(Relaxed) as f64 / 1e9,
        )?;
        gauge(
            &mut e,
            "events_in_flight",
            "Events read and not yet finished.",
            s.in_flight() as i64,
        )?;
        gauge(
            &mut e,
            "fetches_in_flight",
            "Media fetches running.",
            s.fetches_in_flight.load(Relaxed),
        )?;
        {
            let mut f = e.encode_descriptor(
                "queue_depth",
                "Items waiting between stages: batcher (events in open batches), model (batches queued for the model thread).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(s.batcher_pending.load(Relaxed) as i64)
                .encode(f.encode_family(&[("queue", "batcher")])?)?;
            ConstGauge::new(s.model_queue.load(Relaxed))
                .encode(f.encode_family(&[("queue", "model")])?)?;
        }
        gauge(
            &mut e,
            "partitions_assigned",
            "Kafka partitions assigned to this worker (-1: not a consumer-group source).",
            s.adapter.partitions_assigned.load(Relaxed),
        )?;
        gauge(
            &mut e,
            "consumer_lag",
            "Events behind the end of the assigned partitions, from the last committed offsets (-1: unknown).",
            s.adapter.consumer_lag.load(Relaxed),
        )?;
        gauge(
            &mut e,
            "throughput_events_per_second",
            "Events finished per second over the last minute.",
            s.recent_throughput(),
        )?;
        gauge(
            &mut e,
            "seconds_to_drain",
            "Consumer lag divided by the recent throughput (floor 1 event/s); the autoscaling signal (-1: lag unknown).",
            s.seconds_to_drain(),
        )?;
        gauge(
            &mut e,
            "source_paused",
            "1 while the source is paused because every in-flight slot is taken.",
            i64::from(s.adapter.paused.load(Relaxed)),
        )?;
        counter(
            &mut e,
            "source_pauses",
            "Times the source paused for back-pressure.",
            s.adapter.pauses.load(Relaxed),
        )?;
        counter(
            &mut e,
            "commits",
            "Position commits.",
            s.adapter.commits.load(Relaxed),
        )?;
        counter(
            &mut e,
            "commit_failures",
            "Position commits that failed or were refused by the broker (each is retried).",
            s.adapter.commit_failures.load(Relaxed),
        )?;
        gauge(
            &mut e,
            "uncommitted_partitions",
            "Partitions whose done position is not yet confirmed as committed (alert if it stays above 0).",
            s.uncommitted_partitions.load(Relaxed),
        )?;
        counter(
            &mut e,
            "publish_retries",
            "Output groups sent again after the sink failed to acknowledge them.",
            s.publish_retries.load(Relaxed),
        )?;
        counter(
            &mut e,
            "outputs_too_large",
            "Output records the broker refused as too large, replaced by output_too_large dead letters.",
            s.outputs_too_large.load(Relaxed),
        )?;
        counter(
            &mut e,
            "model_batch_splits",
            "Model batches split in halves to isolate the items that fail them (or after out-of-memory).",
            s.model_splits.load(Relaxed),
        )?;
        counter(
            &mut e,
            "model_item_failures",
            "Items the model failed on alone; their events are dead-lettered (model_error, internal_error).",
            s.model_item_failures.load(Relaxed),
        )?;
        counter(
            &mut e,
            "model_panics",
            "Panics caught around model calls (each an internal_error dead letter).",
            s.model_panics.load(Relaxed),
        )?;
        counter(
            &mut e,
            "intake_panics",
            "Panics caught while decoding or preprocessing an event (each an internal_error dead letter).",
            s.intake_panics.load(Relaxed),
        )?;
        counter(
            &mut e,
            "suspect_resumes",
            "Partitions resumed after an unclean exit of their last owner (crash guard: their next events run alone).",
            s.adapter.suspect_resumes.load(Relaxed),
        )?;
        counter(
            &mut e,
            "run_alone",
            "Events run alone, their attempt recorded first, after an unclean exit (crash guard).",
            s.adapter.run_alone.load(Relaxed),
        )?;
        counter(
            &mut e,
            "rebalances",
            "Consumer-group rebalance callbacks (assign and revoke).",
            s.adapter.rebalances.load(Relaxed),
        )?;
        counter(
            &mut e,
            "partitions_revoked",
            "Partitions taken from this worker by consumer-group rebalances.",
            s.adapter.partitions_revoked.load(Relaxed),
        )?;
        counter(
            &mut e,
            "source_retries",
            "Source requests retried after a retryable error (a backfill's listing of its prefix).",
            s.adapter.source_retries.load(Relaxed),
        )?;
        counter(
            &mut e,
            "revoke_abandoned",
            "In-flight events of revoked partitions not finished within kafka.revoke_timeout (replayed by the new owner).",
            s.adapter.revoke_abandoned.load(Relaxed),
        )?;
        gauge(
            &mut e,
            "model_loaded",
            "1 once the model bundle is loaded.",
            i64::from(self.health.model_loaded.load(Relaxed)),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::stats::Outcome;
    use std::time::{Duration, Instant};

    #[test]
    fn exposition_carries_the_counters_of_the_run() {
        let stats = Arc::new(Stats::default());
        stats.read.store(3, Relaxed);
        stats.finish(
            &Outcome::Processed {
                degraded: vec![fusionstream_core::ReasonCode::ImageNotFound],
                skipped: vec!["caption:no_image".into()],
            },
            Duration::from_millis(12),
        );
        stats.published(&[Stream::Embeddings]);
        stats.finish(
            &Outcome::DeadLetter(fusionstream_core::ReasonCode::MalformedJson),
            Duration::from_millis(1),
        );
        stats.published(&[Stream::DeadLetters]);
        stats.queue_wait(
            Lane::Generate,
            fusionstream_core::Priority::High,
            Duration::from_millis(7),
        );
        stats.lane_latency(
            Lane::Encode,
            fusionstream_core::Priority::Low,
            Duration::from_millis(30),
        );
        stats.decision(
            Lane::Generate,
            fusionstream_core::schedule::Ready::Urgent,
            true,
        );
        stats.lane_max_items[0].store(4, Relaxed);
        stats.batch(Lane::Encode, 2, Duration::from_millis(5));
        stats.stage(Stage::Fetch, Duration::from_millis(3));
        let text = render(&registry(stats, Arc::default()));
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
        let s = Stats::default();
        let t0 = Instant::now();
        s.sample_throughput(t0);
        s.finished.store(100, Relaxed);
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
        let text = render(&registry(Arc::new(Stats::default()), Arc::default()));
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
