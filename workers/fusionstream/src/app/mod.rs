//! The worker as a library call: [`run`] loads the model the configuration names, builds the
//! media stores, the source, the sink and the committer, runs the pipeline until the source
//! ends or shutdown is asked for, and returns the run's [`Summary`]. The binary (`cli/`) parses
//! arguments into a configuration, turns signals into the shutdown token and prints the
//! summary; tests and embedders can call [`run`] in-process. `model.rs` loads the model for
//! every command.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fusionstream_core::record::OUTPUT_SCHEMA_VERSION;
use fusionstream_io::backfill::{backfill, BackfillSpec};
use fusionstream_io::kafka::{GroupSettings, KafkaCommitter, KafkaSink, KafkaSource};
use fusionstream_io::local::{Checkpoint, JsonlSink, LocalCheckpoint, LocalJsonl};
use fusionstream_io::media::LocalMedia;
use fusionstream_io::ports::{Committer, OutputSink, Source};
use fusionstream_io::stores::Media;
use fusionstream_model::preprocess::{DecodeOptions, ImageLimits};
use fusionstream_model::FusionModel;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Progress, SinkKind, SourceKind};
use crate::pipeline::memory::{self, MemoryBound, SourceBuffers};
use crate::pipeline::{self, Parts, RunEnd, Settings};
use crate::telemetry::health::Health;
use crate::telemetry::stats::{Stats, StatsSnapshot};

mod lists;
pub mod model;

/// The end-of-run summary.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// How the run ended.
    pub end: String,
    /// Wall time.
    pub seconds: f64,
    /// Events per second (finished / wall time, model load excluded).
    pub events_per_second: f64,
    /// Which backend and precision ran each part of the bundle.
    pub backends: String,
    /// The memory bound derived from the configuration (bytes; `pipeline::memory`).
    pub memory_bound_bytes: u64,
    /// The process's peak resident set (bytes; Linux only).
    pub peak_rss_bytes: Option<u64>,
    /// Counters.
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}

/// Run the worker the configuration describes until its source ends, `cancel` fires (the
/// in-flight events drain) or `max_events` events have finished; returns the summary.
/// Signals are the caller's: the binary turns SIGINT/SIGTERM into `cancel`.
pub async fn run(
    c: &Config,
    cancel: CancellationToken,
    max_events: Option<u64>,
) -> anyhow::Result<Summary> {
    let mut settings = Settings::from_config(c);
    let stats = Arc::new(Stats::default());
    settings.lists = lists::load_and_watch(
        &c.matching,
        c.bundle_s3_settings(),
        stats.clone(),
        cancel.clone(),
    )
    .await?;
    let health = Arc::new(Health::default());
    // Up before the model loads, so liveness answers and readiness says why not yet.
    let server_stop = cancel.child_token();
    let _server_guard = server_stop.clone().drop_guard();
    if !c.telemetry.metrics_listen.is_empty() {
        let addr = c.telemetry.metrics_listen.parse()?;
        crate::telemetry::server::spawn(addr, stats.clone(), health.clone(), server_stop).await?;
    }
    let decode = DecodeOptions {
        limits: ImageLimits {
            max_encoded_bytes: usize::try_from(c.media.max_bytes).unwrap_or(usize::MAX),
            max_pixels: c.image.max_pixels,
        },
        jpeg_dct_scaling: c.image.jpeg_dct_scaling,
    };
    let load_start = Instant::now();
    let bundle = model::resolve_bundle(c).await?;
    let model_config = c.model.clone();
    let moderation = c.moderation.enabled.then(|| c.moderation.clone());
    // Known-embedding lists are matched against the image embedding of `moderate` items.
    let list_embeddings = settings
        .lists
        .as_ref()
        .is_some_and(|l| l.has_embedding_lists());
    let model = tokio::task::spawn_blocking(move || {
        model::load(&model_config, &bundle, decode, moderation.as_ref())
            .map(|m| m.with_list_embeddings(list_embeddings))
    })
    .await??;
    health
        .model_loaded
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        bundle = %c.model.bundle.display(),
        id = %model.manifest().id,
        version = %model.manifest().version,
        seconds = load_start.elapsed().as_secs_f64(),
        backends = %model.backend_summary(),
        "model loaded"
    );
    let backends = model.backend_summary();
    let bound = MemoryBound::new(
        &settings,
        match c.source.kind {
            SourceKind::Kafka => SourceBuffers::Kafka,
            SourceKind::Local | SourceKind::Backfill => SourceBuffers::Local,
        },
        memory::rss().map_or(0, |r| r.0),
        // What one event's prepared inputs hold: the bundle's pixels, and the moderation
        // packs' inputs (the OCR image, up to 2000 px a side) when the worker moderates.
        model.prepared_image_bytes() + model.moderation().map_or(0, |m| m.max_input_bytes()),
        model.moderation().map_or(0, |m| m.max_activation_bytes()),
    );
    tracing::info!(bound = %bound.describe(), "memory bound");

    let s3 = match c.s3_settings() {
        Some(s) => Some(fusionstream_io::s3::S3Media::new(s).await),
        None => None,
    };
    let media = Media {
        local: LocalMedia::new(&c.media.root, c.media.max_bytes),
        s3,
    };
    let show = match c.telemetry.progress {
        Progress::Always => true,
        Progress::Never => false,
        Progress::Auto => std::io::stderr().is_terminal(),
    };
    let progress = show.then(|| tokio::spawn(progress(stats.clone())));
    if let Some(n) = max_events {
        let (stats, cancel) = (stats.clone(), cancel.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while stats.finished.load(std::sync::atomic::Ordering::Relaxed) < n {
                tick.tick().await;
            }
            tracing::info!(events = n, "--max-events reached; stopping");
            cancel.cancel();
        });
    }
    let start = Instant::now();
    let common = Common {
        settings,
        model: Arc::new(model),
        media,
        stats: stats.clone(),
        health,
        cancel,
    };
    let end = match c.source.kind {
        SourceKind::Local => {
            let checkpoint = Checkpoint::load(&c.checkpoint.path)?;
            let source = LocalJsonl::open(&c.source.path, c.source.max_event_bytes, &checkpoint)
                .with_context(|| format!("opening events {}", c.source.path.display()))?;
            let committer = LocalCheckpoint::new(
                &c.checkpoint.path,
                source.streams(),
                checkpoint,
                common.settings.crash_guard,
            );
            with_sink(c, common, source, committer).await?
        }
        SourceKind::Backfill => {
            let (bucket, prefix) = c
                .backfill
                .bucket_and_prefix()
                .context("backfill.prefix is not an s3:// URL")?;
            let spec = BackfillSpec {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                shard: c.backfill.shard,
                shards: c.backfill.shards,
                suffixes: c.backfill.include_suffixes.clone(),
                tasks: c.backfill_tasks().map_err(anyhow::Error::msg)?,
                page: c.backfill.list_page,
                backoff: common.settings.fetch_backoff,
            };
            let resume = spec.resume_from(&Checkpoint::load(&c.checkpoint.path)?)?;
            tracing::info!(
                source = %spec.url(),
                shard = spec.shard,
                shards = spec.shards,
                start_after = resume.start_after.as_deref().unwrap_or(""),
                done_before = resume.done,
                "backfill"
            );
            let store = common
                .media
                .s3
                .clone()
                .context("a backfill needs the S3 store (s3.enabled)")?;
            let (source, committer) = backfill(store, spec, resume, &c.checkpoint.path);
            with_sink(c, common, source, committer).await?
        }
        SourceKind::Kafka => {
            let k = &c.kafka;
            let (source, shared) = KafkaSource::new(
                k.connection(),
                GroupSettings {
                    group_id: k.group_id.clone(),
                    topics: k.input_topics.clone(),
                    revoke_timeout: k.revoke_timeout,
                    pause_after: k.pause_after,
                    statistics_interval: k.statistics_interval,
                    session_timeout: k.session_timeout,
                },
            );
            let committer = KafkaCommitter::new(shared, common.settings.crash_guard);
            with_sink(c, common, source, committer).await?
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    if let Some(p) = progress {
        p.abort();
        eprint!("\r\x1b[2K");
    }
    let snap = stats.snapshot();
    let summary = Summary {
        end: match &end {
            RunEnd::Completed => "completed".into(),
            RunEnd::Drained => "stopped (drained)".into(),
            RunEnd::DrainTimedOut { abandoned } => {
                format!("stopped (drain timed out; {abandoned} events will replay)")
            }
        },
        seconds,
        events_per_second: snap.finished as f64 / seconds.max(1e-9),
        backends,
        memory_bound_bytes: bound.total(),
        peak_rss_bytes: memory::rss().map(|r| r.1),
        stats: snap,
    };
    Ok(summary)
}

/// What every source/sink combination shares.
struct Common {
    settings: Settings,
    model: Arc<FusionModel>,
    media: Media,
    stats: Arc<Stats>,
    health: Arc<Health>,
    cancel: CancellationToken,
}

async fn with_sink<S: Source, C: Committer>(
    c: &Config,
    common: Common,
    source: S,
    committer: C,
) -> anyhow::Result<RunEnd> {
    match c.sink.kind {
        SinkKind::Local => {
            let sink = JsonlSink::open(&c.sink.dir).await?;
            run_with(common, source, sink, committer).await
        }
        SinkKind::Kafka => {
            let m = common.model.manifest();
            let headers = vec![
                (
                    "schema_version".to_owned(),
                    OUTPUT_SCHEMA_VERSION.to_string(),
                ),
                ("bundle_id".to_owned(), m.id.clone()),
                ("bundle_version".to_owned(), m.version.clone()),
            ];
            let sink = KafkaSink::new(&c.kafka.connection(), c.kafka.output_topics(), headers)?;
            run_with(common, source, sink, committer).await
        }
    }
}

async fn run_with<S: Source, K: OutputSink, C: Committer>(
    common: Common,
    source: S,
    sink: K,
    committer: C,
) -> anyhow::Result<RunEnd> {
    let Common {
        settings,
        model,
        media,
        stats,
        health,
        cancel,
    } = common;
    let parts = Parts {
        settings,
        backend: model.clone(),
        model,
        media,
        source,
        sink,
        committer,
        health,
    };
    pipeline::run(parts, stats, cancel).await
}

async fn progress(stats: Arc<Stats>) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let s = stats.snapshot();
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r\x1b[2K{} read, {} done ({} degraded, {} dead-lettered), {:.1} events/s, {:.0}s",
            s.read,
            s.finished,
            s.degraded,
            s.dead_lettered,
            s.finished as f64 / secs,
            secs
        );
        let _ = std::io::stderr().flush();
    }
}
