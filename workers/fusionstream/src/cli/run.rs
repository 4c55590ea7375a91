//! `fusionstream run`: the worker. With no configuration it runs the embedded default:
//! events from `examples/events/*.jsonl`, media from `examples/`, the bundled model, one
//! JSONL file per output stream under `out/`, a checkpoint so a re-run resumes.
//!
//! Here: the arguments, their overrides of the configuration, signals, and the summary
//! printer; the wiring of the worker itself is [`fusionstream::app`].

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use fusionstream::app::{self, Summary};
use fusionstream::config::{
    BackfillOverrides, Config, Delivery, Overrides, Progress, SinkKind, SourceKind,
};
use fusionstream::telemetry::Recorder;
use fusionstream_io::local::JsonlSink;
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
    /// Where the outputs go: local, kafka or lake (overrides sink.kind; the lake's tables
    /// are set in [lake]).
    #[arg(long, value_parser = parse_sink)]
    sink: Option<SinkKind>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Run `fusionstream run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        events: args.events,
        ..args.common.overrides()
    };
    execute(&overrides, args.common)
}

/// Run `fusionstream backfill`: `run` with the objects under an S3 prefix as its source.
pub fn backfill_run(args: BackfillArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        backfill: Some(BackfillOverrides {
            prefix: args.prefix,
            shard: args.shard,
            shards: args.shards,
            tasks: args.tasks,
            sink: args.sink,
        }),
        ..args.common.overrides()
    };
    execute(&overrides, args.common)
}

fn parse_sink(s: &str) -> Result<SinkKind, String> {
    match s {
        "local" => Ok(SinkKind::Local),
        "kafka" => Ok(SinkKind::Kafka),
        "lake" => Ok(SinkKind::Lake),
        _ => Err(format!("{s:?}: expected local, kafka or lake")),
    }
}

impl CommonArgs {
    /// The overrides both commands share.
    fn overrides(&self) -> Overrides {
        Overrides {
            out: self.out.clone(),
            model: self.model.clone(),
            ..Overrides::default()
        }
    }
}

/// Load the configuration with the command line's overrides, then run.
fn execute(overrides: &Overrides, a: CommonArgs) -> anyhow::Result<()> {
    let c = Config::load_with(&a.configs, std::env::vars(), overrides)?;
    let telemetry = fusionstream::telemetry::traces::init(&c.telemetry)?;
    if a.fresh {
        fresh(&c)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fusionstream-io")
        .build()?;
    let summary = rt.block_on(async {
        let cancel = CancellationToken::new();
        // Before the model loads: a SIGTERM while it loads (a pod stopped during start-up)
        // stops the worker cleanly once loading ends, instead of killing it by the signal's
        // default.
        spawn_signal_handler(cancel.clone());
        let recorder = Arc::new(Recorder::default());
        let progress =
            show_progress(c.telemetry.progress).then(|| tokio::spawn(progress(recorder.clone())));
        let summary = app::run_recorded(&c, recorder, cancel, a.max_events).await;
        if let Some(p) = progress {
            p.abort();
            eprint!("\r\x1b[2K");
        }
        summary
    });
    // Shut the runtime down, then flush the spans (the exporter blocks).
    drop(rt);
    drop(telemetry);
    let summary = summary?;
    print_summary(&summary, &c);
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// Whether the progress line is shown: `telemetry.progress`, `auto` = on a terminal.
fn show_progress(p: Progress) -> bool {
    match p {
        Progress::Always => true,
        Progress::Never => false,
        Progress::Auto => std::io::stderr().is_terminal(),
    }
}

/// The progress line on stderr, redrawn every 250 ms until aborted.
async fn progress(recorder: Arc<Recorder>) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let s = recorder.snapshot();
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        let committed = match s.transactions.committed {
            0 => String::new(),
            n => format!(
                ", {} records committed in {n} commits",
                s.transactions.records
            ),
        };
        eprint!(
            "\r\x1b[2K{} read, {} done ({} degraded, {} dead-lettered), {:.1} events/s, {:.0}s{committed}",
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

/// SIGINT or SIGTERM.
#[cfg(unix)]
pub(super) async fn wait_signal() {
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
pub(super) async fn wait_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Where the outputs went, and (exactly-once) what the transactions did.
fn destination(s: &Summary, c: &Config) -> Vec<String> {
    let st = &s.stats;
    let mut out = Vec::new();
    match (c.sink.kind, c.source.kind) {
        (SinkKind::Local, SourceKind::Local | SourceKind::Backfill) => out.push(format!(
            "  written to  {}/ (checkpoint {})",
            c.sink.dir.display(),
            c.checkpoint.path.display()
        )),
        (SinkKind::Local, SourceKind::Kafka) => {
            out.push(format!("  written to  {}/", c.sink.dir.display()))
        }
        (SinkKind::Kafka, _) => out.push(format!(
            "  written to  Kafka topics {}",
            c.kafka.output_topics().join(", ")
        )),
        (SinkKind::Lake, _) => out.push(format!(
            "  written to  {} tables in {} ({}): {} rows in {} commits ({} aborted)",
            c.lake.format.title(),
            c.lake.warehouse,
            c.lake.namespace,
            st.transactions.records,
            st.transactions.committed,
            st.transactions.aborted
        )),
    }
    if c.kafka.delivery == Delivery::ExactlyOnce && c.sink.kind == SinkKind::Kafka {
        let t = &st.transactions;
        out.push(format!(
            "  exactly-once {} transactions committed, {} aborted, {} producers recreated, \
             {} fenced (read the outputs with isolation.level=read_committed)",
            t.committed, t.aborted, t.producers_recreated, t.fenced
        ));
    }
    out
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
    if let Some(hint) = &s.faster_backend_hint {
        line(format!(
            "  faster      {hint} (ONNX int8 ran ~3x candle's speed here: benches/README.md)"
        ));
    }
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
    for l in destination(s, c) {
        line(l);
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
