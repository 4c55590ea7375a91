//! The worker as a library call: [`run`] loads the model the configuration names, builds the
//! media stores, the source, the sink and the committer, runs the engine until the source
//! ends or shutdown is asked for, and returns the run's [`Summary`]. The binary (`cli/`) parses
//! arguments into a configuration, turns signals into the shutdown token and prints the
//! summary and the progress line; tests and embedders can call [`run`] in-process.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`run`]: the wiring of configuration, model, stores, source, sink and committer |
//! | `settings.rs` | the engine's settings from the configuration |
//! | `model.rs` | loading the model for every command (`run`, `backfill`, `infer`, `index`) |
//! | `backfill.rs` | the backfill source, resumed from its checkpoint or from the lake |
//! | `lists.rs` | loading the known lists of `[matching]` and reloading them when they change |

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fusionstream_core::embedlist::EmbeddingKind;
use fusionstream_core::record::OUTPUT_SCHEMA_VERSION;
use fusionstream_io::kafka::{
    GroupSettings, KafkaCommitter, KafkaShared, KafkaSink, KafkaSource, KafkaTransactions,
    TransactionSettings,
};
use fusionstream_io::local::{Checkpoint, JsonlSink, LocalCheckpoint, LocalJsonl};
use fusionstream_io::media::LocalMedia;
use fusionstream_io::media::MediaStores;
use fusionstream_io::ports::{Committer, OutputSink, Source};
use fusionstream_model::preprocess::{DecodeOptions, ImageLimits};
use fusionstream_model::FusionModel;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{Config, Delivery, SinkKind, SourceKind};
use crate::telemetry::health::Health;
use crate::telemetry::{Recorder, Snapshot};
use backfill::{backfill_spec, lake_writer, open_lake, start_backfill};
use fusionstream_engine::memory::{self, MemoryBound, SourceBuffers};
use fusionstream_engine::{self, Parts, RunEnd, Settings};

mod backfill;
mod list_loader;
pub mod model;
mod settings;

pub use settings::engine_settings;

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
    /// When the bundle ran on candle for want of ONNX Runtime: how to get the faster backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faster_backend_hint: Option<String>,
    /// The memory bound derived from the configuration (bytes; `fusionstream_engine::memory`).
    pub memory_bound_bytes: u64,
    /// The process's peak resident set (bytes; Linux only).
    pub peak_rss_bytes: Option<u64>,
    /// Counters.
    #[serde(flatten)]
    pub stats: Snapshot,
}

/// Run the worker the configuration describes until its source ends, `cancel` fires (the
/// in-flight events drain) or `max_events` events have finished; returns the summary.
/// Signals are the caller's: the binary turns SIGINT/SIGTERM into `cancel`.
pub async fn run(
    c: &Config,
    cancel: CancellationToken,
    max_events: Option<u64>,
) -> anyhow::Result<Summary> {
    run_recorded(c, Arc::new(Recorder::default()), cancel, max_events).await
}

/// [`run`], reporting into `recorder`: the caller may watch the run's figures while it goes
/// (the CLI's progress line).
pub async fn run_recorded(
    c: &Config,
    recorder: Arc<Recorder>,
    cancel: CancellationToken,
    max_events: Option<u64>,
) -> anyhow::Result<Summary> {
    let mut settings = engine_settings(c);
    settings.lists = list_loader::load_and_watch(
        &c.matching,
        c.bundle_s3_settings(),
        recorder.clone(),
        cancel.clone(),
    )
    .await?;
    let health = Arc::new(Health::default());
    // Up before the model loads, so liveness answers and readiness says why not yet.
    let _server = serve_metrics(c, &recorder, &health, &cancel).await?;
    let model = load_model(c, &settings, &health).await?;
    let bound = memory_bound(c, &settings, &model);
    tracing::info!(bound = %bound.describe(), "memory bound");
    let media = media_stores(c).await;
    if let Some(n) = max_events {
        tokio::spawn(stop_after(n, recorder.clone(), cancel.clone()));
    }
    let backends = model.backend_summary();
    let faster_backend_hint = faster_backend_hint(c, &model);
    let start = Instant::now();
    let common = Common {
        settings,
        model: Arc::new(model),
        media,
        recorder: recorder.clone(),
        health,
        cancel,
    };
    let end = with_source(c, common).await?;
    let seconds = start.elapsed().as_secs_f64();
    let snap = recorder.snapshot();
    Ok(Summary {
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
        faster_backend_hint,
        memory_bound_bytes: bound.total(),
        peak_rss_bytes: memory::rss().map(|r| r.1),
        stats: snap,
    })
}

/// With `model.backend = "auto"` on the CPU and no ONNX Runtime found, where the worker
/// looked and the command that installs the library (the bundle then ran on candle).
fn faster_backend_hint(c: &Config, model: &FusionModel) -> Option<String> {
    let auto = c.model.backend == fusionstream_model::BackendChoice::Auto;
    (auto && model.onnx_library().is_none() && model.device().is_cpu())
        .then(fusionstream_model::backend::onnx::library::not_found_hint)
}

/// Serve `/metrics`, `/healthz` and `/readyz` when `telemetry.metrics_listen` is set, until
/// the returned guard is dropped or `cancel` fires.
async fn serve_metrics(
    c: &Config,
    recorder: &Arc<Recorder>,
    health: &Arc<Health>,
    cancel: &CancellationToken,
) -> anyhow::Result<DropGuard> {
    let stop = cancel.child_token();
    if !c.telemetry.metrics_listen.is_empty() {
        let addr = c.telemetry.metrics_listen.parse()?;
        let (r, h) = (recorder.clone(), health.clone());
        crate::telemetry::server::spawn(addr, r, h, stop.clone()).await?;
    }
    Ok(stop.drop_guard())
}

/// Load the model (and its moderation and photo packs) off the runtime, and mark it loaded.
async fn load_model(
    c: &Config,
    settings: &Settings,
    health: &Health,
) -> anyhow::Result<FusionModel> {
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
    let photo = c.photo_options();
    // Known-embedding lists are matched against the image embeddings (CLIP's, the photo
    // pack's) of `moderate` items.
    let lists_of = |kind| {
        settings
            .lists
            .as_ref()
            .is_some_and(|l| l.has_embedding_lists(kind))
    };
    let list_embeddings = lists_of(EmbeddingKind::ImageEmbedding);
    let photo_list_embeddings = lists_of(EmbeddingKind::PhotoEmbedding);
    // A policy category of image labels reads the classifier pack's labels.
    let label_moderation = c.moderation.enabled
        && c.moderation
            .categories
            .iter()
            .any(|cat| !cat.labels.is_empty());
    let model = tokio::task::spawn_blocking(move || {
        let packs = model::Packs {
            moderation: moderation.as_ref(),
            photo: photo.as_ref(),
        };
        model::load(&model_config, &bundle, decode, packs).map(|m| {
            m.with_list_embeddings(list_embeddings)
                .with_photo_list_embeddings(photo_list_embeddings)
                .with_photo_label_moderation(label_moderation)
        })
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
    Ok(model)
}

/// The worker's memory bound, from its configuration and the loaded model.
fn memory_bound(c: &Config, settings: &Settings, model: &FusionModel) -> MemoryBound {
    MemoryBound::new(
        settings,
        match c.source.kind {
            SourceKind::Kafka => SourceBuffers::Kafka,
            SourceKind::Local | SourceKind::Backfill => SourceBuffers::Local,
        },
        memory::rss().map_or(0, |r| r.0),
        // What one event's prepared inputs hold: the bundle's pixels, the moderation packs'
        // inputs (the OCR image, up to 2000 px a side) when the worker moderates, and the
        // photo packs' inputs.
        model.prepared_image_bytes()
            + model.moderation().map_or(0, |m| m.max_input_bytes())
            + model.photo_packs().map_or(0, |p| p.max_input_bytes()),
        model.moderation().map_or(0, |m| m.max_activation_bytes()),
    )
}

/// The media stores: local files under `media.root`, and S3 when configured.
async fn media_stores(c: &Config) -> MediaStores {
    let s3 = match c.s3_settings() {
        Some(s) => Some(fusionstream_io::s3::S3Media::new(s).await),
        None => None,
    };
    MediaStores {
        local: LocalMedia::new(&c.media.root, c.media.max_bytes),
        s3,
    }
}

/// Stop the run once `n` events have finished (`--max-events`).
async fn stop_after(n: u64, recorder: Arc<Recorder>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while recorder.finished() < n {
        tick.tick().await;
    }
    tracing::info!(events = n, "--max-events reached; stopping");
    cancel.cancel();
}

/// The source the configuration names, with its committer.
async fn with_source(c: &Config, common: Common) -> anyhow::Result<RunEnd> {
    match c.source.kind {
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
            with_sink(c, common, source, committer).await
        }
        SourceKind::Backfill if c.sink.kind == SinkKind::Lake => {
            let (spec, store) = backfill_spec(c, &common)?;
            let lake = open_lake(c, store.client(), &lake_writer(c, &spec)).await?;
            let resume = match lake
                .last()
                .and_then(|r| r.positions.get(&spec.source_key()))
            {
                Some(label) => spec.resume_from_label(label)?,
                None => spec.resume_from(&Checkpoint::default())?,
            };
            let (source, committer) = start_backfill(c, store, spec, resume);
            let sink = lake.into_sink(committer.labels(), false);
            run_with(common, source, sink, committer).await
        }
        SourceKind::Backfill => {
            let (spec, store) = backfill_spec(c, &common)?;
            let resume = spec.resume_from(&Checkpoint::load(&c.checkpoint.path)?)?;
            let (source, committer) = start_backfill(c, store, spec, resume);
            with_sink(c, common, source, committer).await
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
            let committer = KafkaCommitter::new(shared.clone(), common.settings.crash_guard);
            if c.sink.kind == SinkKind::Lake {
                // Exactly-once through the lake's commits; the group's offsets follow them
                // (informational).
                let store = common
                    .media
                    .s3
                    .clone()
                    .context("the lake needs s3.enabled")?;
                let writer = match c.lake.writer.trim() {
                    "" => k.transactional_id(),
                    w => w.to_owned(),
                };
                let lake = open_lake(c, store.client(), &writer).await?;
                let sink = lake.into_sink(shared.labels(), true);
                return run_with(common, source, sink, committer).await;
            }
            if k.delivery == Delivery::ExactlyOnce {
                let sink = transactional_sink(c, &common, shared, &committer).await?;
                return run_with(common, source, sink, committer).await;
            }
            with_sink(c, common, source, committer).await
        }
    }
}

/// What every source/sink combination shares.
struct Common {
    settings: Settings,
    model: Arc<FusionModel>,
    media: MediaStores,
    recorder: Arc<Recorder>,
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
            let headers = output_headers(&common.model);
            let sink = KafkaSink::new(&c.kafka.connection(), c.kafka.output_topics(), headers)?;
            run_with(common, source, sink, committer).await
        }
        // Validated: the lake takes a backfill source, wired in `with_source`.
        SinkKind::Lake => {
            anyhow::bail!("sink.kind = \"lake\" needs source.kind = \"backfill\" or \"kafka\"")
        }
    }
}

/// The headers on every output record: schema and bundle versions.
fn output_headers(model: &FusionModel) -> Vec<(String, String)> {
    let m = model.manifest();
    vec![
        (
            "schema_version".to_owned(),
            OUTPUT_SCHEMA_VERSION.to_string(),
        ),
        ("bundle_id".to_owned(), m.id.clone()),
        ("bundle_version".to_owned(), m.version.clone()),
    ]
}

/// Exactly-once: the transactional sink committing the offsets of `shared`'s consumer (with
/// the crash guard's marks of `committer`). Its `init_transactions` fences an older worker
/// with the same transactional id.
async fn transactional_sink(
    c: &Config,
    common: &Common,
    shared: KafkaShared,
    committer: &KafkaCommitter,
) -> anyhow::Result<KafkaTransactions> {
    let k = &c.kafka;
    let conn = k.connection();
    let topics = k.output_topics();
    let limits = conn.message_limits(&topics).await;
    let settings = TransactionSettings {
        transactional_id: k.transactional_id(),
        transaction_timeout: k.transaction_timeout,
        init_timeout: common.settings.transactions.call_timeout,
        message_limits: std::array::from_fn(|i| limits.get(i).copied().flatten()),
    };
    let headers = output_headers(&common.model);
    let guard = committer.crash_guard();
    tokio::task::spawn_blocking(move || {
        KafkaTransactions::new(&conn, settings, topics, headers, shared, guard)
    })
    .await?
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
        recorder,
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
        adapter_metrics: recorder.adapter(),
        stopping: health.stopping.clone(),
    };
    fusionstream_engine::run(parts, recorder, cancel).await
}
