//! `fusionstream index` (the live vector index over the embeddings the workers write) and
//! `fusionstream search` (a query against its snapshot, printed as JSON).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use fusionstream::config::{Config, Overrides};
use fusionstream::indexer::{self, query, serve::parse_kinds};
use tokio_util::sync::CancellationToken;

/// Arguments of `fusionstream index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Configuration file(s) layered over the defaults (TOML; later files win).
    #[arg(long = "config", short = 'c')]
    configs: Vec<PathBuf>,
    /// Snapshot folder or s3://bucket/prefix (overrides index.dir).
    #[arg(long)]
    index: Option<PathBuf>,
    /// The workers' output folder, whose embeddings.jsonl is read (overrides sink.dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop once everything that existed at the start is indexed (default: follow the
    /// topic or file until SIGTERM).
    #[arg(long)]
    once: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `fusionstream search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Configuration file(s) layered over the defaults (the model and index.dir).
    #[arg(long = "config", short = 'c')]
    configs: Vec<PathBuf>,
    /// Snapshot folder (overrides index.dir).
    #[arg(long)]
    index: Option<PathBuf>,
    /// Text to search for (text → image and text → text).
    #[arg(long)]
    text: Option<String>,
    /// Image to search for (image → image and image → text).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Results per kind.
    #[arg(short = 'k', long, default_value_t = 10)]
    k: usize,
    /// Kinds searched, comma-separated: image, text, fused (default: every kind indexed).
    #[arg(long)]
    kinds: Option<String>,
    /// Model bundle (overrides model.bundle; must be the index's).
    #[arg(long)]
    model: Option<PathBuf>,
}

fn load(
    configs: &[PathBuf],
    out: Option<PathBuf>,
    model: Option<PathBuf>,
    index: Option<PathBuf>,
) -> anyhow::Result<Config> {
    let overrides = Overrides {
        out,
        model,
        ..Overrides::default()
    };
    let mut c = Config::load_with(configs, std::env::vars(), &overrides)?;
    if let Some(dir) = index {
        c.index.dir = dir;
    }
    Ok(c)
}

/// Run `fusionstream index`.
pub fn run_index(args: IndexArgs) -> anyhow::Result<()> {
    let c = load(&args.configs, args.out, None, args.index)?;
    let telemetry = fusionstream::telemetry::traces::init(&c.telemetry)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("fusionstream-index")
        .build()?;
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        rt.spawn(async move {
            super::run::wait_signal().await;
            tracing::warn!("shutdown requested: writing a last snapshot");
            stop.cancel();
        });
    }
    let summary = indexer::run(&c, rt.handle(), args.once, stop);
    drop(rt);
    drop(telemetry);
    let s = summary?;
    eprintln!("fusionstream index: {}", s.feed);
    eprintln!(
        "  records   {} read: {} vectors added, {} replaced, {} records refused",
        s.records, s.added, s.replaced, s.refused
    );
    let entries: Vec<String> = s
        .entries
        .iter()
        .map(|(k, n)| format!("{} {n}", k.name()))
        .collect();
    eprintln!("  entries   {}", entries.join(", "));
    if let Some(b) = &s.bundle {
        eprintln!("  space     {b}");
    }
    if let Some(d) = &s.snapshot {
        eprintln!("  snapshot  {}", d.display());
    }
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    }
    Ok(())
}

/// Run `fusionstream search`.
pub fn run_search(args: SearchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.text.is_some() || args.image.is_some(),
        "nothing to search for: give --text or --image"
    );
    let c = load(&args.configs, None, args.model, args.index)?;
    anyhow::ensure!(
        (1..=c.index.max_k).contains(&args.k),
        "-k must be between 1 and {} (index.max_k)",
        c.index.max_k
    );
    let kinds = args
        .kinds
        .as_deref()
        .map(parse_kinds)
        .transpose()?
        .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    indexer::sync_down(&c, rt.handle())?;
    let dir = indexer::index_dir(&c);
    anyhow::ensure!(
        fusionstream_index::SnapshotDir::new(&dir)
            .current()?
            .is_some(),
        "no index in {} (run `fusionstream index` first)",
        dir.display()
    );
    let (index, meta) = indexer::open(&c, &dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bundle = rt.block_on(fusionstream::app::model::resolve_bundle(&c))?;
    let model = fusionstream::app::model::load(
        &c.model,
        &bundle,
        Default::default(),
        fusionstream::app::model::Packs {
            moderation: None,
            photo: fusionstream::indexer::query::query_photo_options(&c).as_ref(),
        },
    )?;
    query::check_space(&model, meta.bundle.as_deref())?;
    let image = match &args.image {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let q = query::embed(&model, args.text.as_deref(), image.as_deref())?;
    let results = query::search(&index, meta.bundle.as_deref(), &q, &kinds, args.k)?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
