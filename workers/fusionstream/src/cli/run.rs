//! `fusionstream run`: the worker. With no configuration it runs the embedded default:
//! events from `examples/events/*.jsonl`, media from `examples/`, the bundled model, one
//! JSONL file per output stream under `out/`, a checkpoint so a re-run resumes.
//!
//! Long because it wires the whole worker (model, sources, sinks, telemetry, summary); the
//! restructuring issue moves the wiring into an in-process app.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use fusionstream::config::{Config, Progress, SinkKind, SourceKind, WarmUp};
use fusionstream::pipeline::backfill::{backfill, BackfillSpec};
use fusionstream::pipeline::kafka::{GroupSettings, KafkaSource};
use fusionstream::pipeline::kafka_commit::KafkaCommitter;
use fusionstream::pipeline::memory::{self, MemoryBound, SourceBuffers};
use fusionstream::pipeline::{
    self, Committer, LocalCheckpoint, LocalJsonl, Media, OutputSink, Parts, RunEnd, Settings,
    Source, Stats, StatsSnapshot,
};
use fusionstream_core::record::OUTPUT_SCHEMA_VERSION;
use fusionstream_io::checkpoint::Checkpoint;
use fusionstream_io::jsonl_sink::JsonlSink;
use fusionstream_io::kafka::KafkaSink;
use fusionstream_io::media::LocalMedia;
use fusionstream_model::bundle::GenerationSpec;
use fusionstream_model::preprocess::{DecodeOptions, ImageLimits};
use fusionstream_model::{FusionModel, RuntimeOptions};
use tokio_util::sync::CancellationToken;

/// Arguments of `fusionstream run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Events: a JSONL file or a folder of them (overrides source.path).
    #[arg(long)]
    events: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Arguments `run` and `backfill` share.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Configuration file(s) layered over the defaults (TOML; later files win).
    #[arg(long = "config", short = 'c')]
    configs: Vec<PathBuf>,
    /// Output folder (overrides sink.dir; the checkpoint goes with it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Model bundle (overrides model.bundle).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Start over: remove the outputs and checkpoint of earlier runs first.
    #[arg(long)]
    fresh: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Stop (drain, commit and exit) once this many events have finished, e.g. to take a
    /// fixed number of events from a Kafka topic.
    #[arg(long)]
    max_events: Option<u64>,
}

/// `fusionstream config`: print the effective configuration.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Configuration file(s) layered over the defaults.
    #[arg(long = "config", short = 'c')]
    configs: Vec<PathBuf>,
    /// Print the configuration reference (Markdown, from the embedded defaults) instead.
    #[arg(long)]
    markdown: bool,
}

/// Run `fusionstream config`.
pub fn print_config(args: ConfigArgs) -> anyhow::Result<()> {
    if args.markdown {
        print!("{}", fusionstream::config::markdown_reference());
        return Ok(());
    }
    let c = Config::load(&args.configs, std::env::vars())?;
    print!("{}", c.to_toml());
    Ok(())
}

/// Arguments of `fusionstream backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The objects to process: s3://bucket/prefix (overrides backfill.prefix).
    prefix: String,
    /// This job's shard (overrides backfill.shard; an indexed Kubernetes Job sets
    /// JOB_COMPLETION_INDEX).
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    shard: Option<u32>,
    /// Number of shards (overrides backfill.shards).
    #[arg(long)]
    shards: Option<u32>,
    /// Tasks asked of every object, e.g. embed,caption (overrides backfill.tasks).
    #[arg(long, value_delimiter = ',')]
    tasks: Option<Vec<String>>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Run `fusionstream run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut c = Config::load(&args.common.configs, std::env::vars())?;
    if let Some(e) = args.events {
        c.source.path = e;
    }
    execute(c, args.common)
}

/// Run `fusionstream backfill`: `run` with the objects under an S3 prefix as its source.
pub fn backfill_run(args: BackfillArgs) -> anyhow::Result<()> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    // The source and the S3 store are implied by the command; validation sees them.
    env.push(("FUSIONSTREAM__SOURCE__KIND".into(), "backfill".into()));
    env.push(("FUSIONSTREAM__S3__ENABLED".into(), "true".into()));
    env.push(("FUSIONSTREAM__BACKFILL__PREFIX".into(), args.prefix));
    if let Some(s) = args.shard {
        env.push(("FUSIONSTREAM__BACKFILL__SHARD".into(), s.to_string()));
    }
    if let Some(n) = args.shards {
        env.push(("FUSIONSTREAM__BACKFILL__SHARDS".into(), n.to_string()));
    }
    if let Some(t) = args.tasks {
        let list: Vec<String> = t.iter().map(|t| format!("{t:?}")).collect();
        env.push((
            "FUSIONSTREAM__BACKFILL__TASKS".into(),
            format!("[{}]", list.join(",")),
        ));
    }
    let c = Config::load(&args.common.configs, env)?;
    execute(c, args.common)
}

/// The overrides both commands share, then the run itself.
fn execute(mut c: Config, a: CommonArgs) -> anyhow::Result<()> {
    if let Some(o) = a.out {
        c.checkpoint.path = o.join("checkpoint.json");
        c.sink.dir = o;
    }
    if let Some(m) = a.model {
        c.model.bundle = m;
    }
    let telemetry = fusionstream::telemetry::traces::init(&c.telemetry)?;
    if a.fresh {
        fresh(&c)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fusionstream-io")
        .build()?;
    let summary = rt.block_on(run_async(c, a.max_events));
    // Shut the runtime down, then flush the spans (the exporter blocks).
    drop(rt);
    drop(telemetry);
    let summary = summary?;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

fn fresh(c: &Config) -> anyhow::Result<()> {
    for s in fusionstream_core::record::Stream::ALL {
        let p = JsonlSink::path_of(&c.sink.dir, s);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    if c.checkpoint.path.exists() {
        std::fs::remove_file(&c.checkpoint.path)?;
    }
    Ok(())
}

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

async fn run_async(c: Config, max_events: Option<u64>) -> anyhow::Result<Summary> {
    let settings = Settings::from_config(&c);
    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    // Before the model loads: a SIGTERM while it loads (a pod stopped during start-up) stops
    // the worker cleanly once loading ends, instead of killing it by the signal's default.
    spawn_signal_handler(cancel.clone());
    // Up before the model loads, so liveness answers and readiness says why not yet.
    let server_stop = cancel.child_token();
    let _server_guard = server_stop.clone().drop_guard();
    if !c.telemetry.metrics_listen.is_empty() {
        let addr = c.telemetry.metrics_listen.parse()?;
        fusionstream::telemetry::server::spawn(addr, stats.clone(), server_stop).await?;
    }
    let opts = RuntimeOptions {
        decode: DecodeOptions {
            limits: ImageLimits {
                max_encoded_bytes: usize::try_from(c.media.max_bytes).unwrap_or(usize::MAX),
                max_pixels: c.image.max_pixels,
            },
            jpeg_dct_scaling: c.image.jpeg_dct_scaling,
        },
        generation: None,
        ..c.model.runtime_options()?
    };
    let load_start = Instant::now();
    let bundle = resolve_bundle(&c).await?;
    let mut model = tokio::task::spawn_blocking(move || FusionModel::load(&bundle, &opts))
        .await?
        .with_context(|| format!("loading model bundle {}", c.model.bundle.display()))?;
    let g = model.generation().clone();
    let gen = GenerationSpec {
        max_new_tokens: if c.model.max_new_tokens == 0 {
            g.max_new_tokens
        } else {
            c.model.max_new_tokens
        },
        num_beams: if c.model.num_beams == 0 {
            g.num_beams
        } else {
            c.model.num_beams
        },
    };
    model.set_generation(gen.max_new_tokens, gen.num_beams);
    let warm_up = match c.model.warm_up {
        WarmUp::Auto => !model.device().is_cpu(),
        WarmUp::Always => true,
        WarmUp::Never => false,
    };
    if warm_up {
        // First use of each GPU kernel compiles it: pay that before reporting ready.
        let started = Instant::now();
        let (back, warmed) = tokio::task::spawn_blocking(move || {
            let r = model.warm_up();
            (model, r)
        })
        .await?;
        model = back;
        warmed.context("warming up the model")?;
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "model warmed up");
    }
    stats
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
        model.prepared_image_bytes(),
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
            with_sink(&c, common, source, committer).await?
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
            with_sink(&c, common, source, committer).await?
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
            with_sink(&c, common, source, committer).await?
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
    print_summary(&summary, &c);
    Ok(summary)
}

/// A local bundle folder: `model.bundle` itself, or for an `s3://bucket/prefix` its copy in
/// the bundle cache (downloaded on first use).
async fn resolve_bundle(c: &Config) -> anyhow::Result<PathBuf> {
    let url = c.model.bundle.to_string_lossy().into_owned();
    if !url.starts_with("s3://") {
        return Ok(c.model.bundle.clone());
    }
    let (bucket, prefix) = fusionstream_core::event::split_s3_url(&url)
        .with_context(|| format!("model.bundle {url:?} names no bucket"))?;
    let prefix = prefix.trim_matches('/');
    let dest = c.bundle_cache_dir().join(bucket).join(prefix);
    let store = fusionstream_io::s3::S3Media::new(c.bundle_s3_settings()).await;
    let downloaded = store
        .download_prefix(bucket, prefix, &dest)
        .await
        .with_context(|| format!("fetching the model bundle {url}"))?;
    tracing::info!(
        bundle = %url,
        cache = %dest.display(),
        downloaded,
        "model bundle from S3 ({})",
        if downloaded { "downloaded" } else { "cached copy" }
    );
    Ok(dest)
}

/// What every source/sink combination shares.
struct Common {
    settings: Settings,
    model: Arc<FusionModel>,
    media: Media,
    stats: Arc<Stats>,
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
        cancel,
    } = common;
    let parts = Parts {
        settings,
        model,
        media,
        source,
        sink,
        committer,
    };
    pipeline::run(parts, stats, cancel).await
}

fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut first = true;
        loop {
            wait_signal().await;
            if first {
                tracing::warn!("shutdown requested: draining in-flight events (again to force)");
                cancel.cancel();
                first = false;
            } else {
                tracing::error!("forced exit; unfinished events replay on the next run");
                std::process::exit(130);
            }
        }
    });
}

#[cfg(unix)]
async fn wait_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_signal() {
    let _ = tokio::signal::ctrl_c().await;
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

fn print_summary(s: &Summary, c: &Config) {
    let st = &s.stats;
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    let command = match c.source.kind {
        SourceKind::Backfill => "backfill",
        SourceKind::Local | SourceKind::Kafka => "run",
    };
    line(format!("fusionstream {command}: {}", s.end));
    line(format!(
        "  events      {} read, {} finished: {} with outputs ({} degraded), {} dead-lettered",
        st.read, st.finished, st.processed, st.degraded, st.dead_lettered
    ));
    let outputs: Vec<String> = st
        .outputs
        .iter()
        .map(|(k, n)| format!("{} {}", k.name(), n))
        .collect();
    line(format!("  outputs     {}", outputs.join(", ")));
    if !st.degraded_reasons.is_empty() {
        line(format!(
            "  degraded    {}",
            fmt_counts(&st.degraded_reasons)
        ));
    }
    if !st.dead_letter_reasons.is_empty() {
        line(format!(
            "  dead letter {}",
            fmt_counts(&st.dead_letter_reasons)
        ));
    }
    if !st.skipped.is_empty() {
        line(format!("  skipped     {}", fmt_counts(&st.skipped)));
    }
    let batches: Vec<String> = st
        .batches
        .iter()
        .map(|(l, b, i)| {
            let mean = if *b == 0 { 0.0 } else { *i as f64 / *b as f64 };
            format!("{} {} (mean {:.1} items)", l.name(), b, mean)
        })
        .collect();
    line(format!("  batches     {}", batches.join(", ")));
    line(format!("  model       {}", s.backends));
    if let Some(peak) = s.peak_rss_bytes {
        line(format!(
            "  memory      peak RSS {} MiB; bound {} MiB",
            peak >> 20,
            s.memory_bound_bytes >> 20
        ));
    }
    line(format!(
        "  throughput  {:.1} events/s over {:.1}s; model busy {:.1}s; latency p50 {:.0} ms, p99 {:.0} ms",
        s.events_per_second, s.seconds, st.model_seconds, st.latency_p50_ms, st.latency_p99_ms
    ));
    match (c.sink.kind, c.source.kind) {
        (SinkKind::Local, SourceKind::Local | SourceKind::Backfill) => line(format!(
            "  written to  {}/ (checkpoint {})",
            c.sink.dir.display(),
            c.checkpoint.path.display()
        )),
        (SinkKind::Local, SourceKind::Kafka) => {
            line(format!("  written to  {}/", c.sink.dir.display()))
        }
        (SinkKind::Kafka, _) => line(format!(
            "  written to  Kafka topics {}",
            c.kafka.output_topics().join(", ")
        )),
    }
    if st.read == 0 && c.source.kind != SourceKind::Kafka {
        line(
            "  nothing new to read: the checkpoint covers every event (use --fresh to start over)"
                .into(),
        );
    }
    eprint!("{out}");
}

fn fmt_counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
