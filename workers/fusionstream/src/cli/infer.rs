//! `fusionstream infer`: one input through the model runtime, one JSON object out.
//!
//! The printed object has the fields that apply: `image_embedding`, `text_embedding`,
//! `fused_embedding`, `match_score`, `caption`, `answer`, `tags`, and always `skipped`.
//! Errors exit non-zero with a one-line reason on stderr. Other tools rely on this interface.
//! On success, stderr says which backend and precision ran each part of the bundle.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fusionstream::config::{ModelConfig, WarmUp};
use fusionstream_model::preprocess::DecodeOptions;
use fusionstream_model::{BackendChoice, Precision, TaskSet};

/// Arguments of `fusionstream infer`.
#[derive(Debug, Args)]
pub struct InferArgs {
    /// Bundle directory (with bundle.toml) or a Hugging Face model directory.
    #[arg(long)]
    model: PathBuf,
    /// Image file (JPEG, PNG, WebP, GIF, BMP).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Text to embed, match and tag.
    #[arg(long)]
    text: Option<String>,
    /// Question about the image.
    #[arg(long)]
    question: Option<String>,
    /// Comma-separated tasks: embed, match, caption, answer, tag, hash (default: the first
    /// five; `moderate` needs the worker's `[moderation]` packs and is not served here).
    #[arg(long, value_parser = TaskSet::parse_list)]
    tasks: Option<TaskSet>,
    /// Beam width for captions and answers (1: greedy; default: the bundle's).
    #[arg(long)]
    beam: Option<usize>,
    /// Most generated tokens (default: the bundle's).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Backend: auto (ONNX Runtime where the library and graphs are found), candle or onnx.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Precision of the ONNX graphs: f32, int8 or f16.
    #[arg(long, default_value = "f32")]
    precision: String,
    /// ONNX Runtime shared library (default: ORT_DYLIB_PATH).
    #[arg(long)]
    onnxruntime_library: Option<PathBuf>,
}

/// Run `fusionstream infer`.
pub fn run(args: InferArgs) -> anyhow::Result<()> {
    if args.image.is_none() && args.text.is_none() && args.question.is_none() {
        anyhow::bail!("nothing to infer: give --image, --text or --question");
    }
    if args.beam == Some(0) {
        anyhow::bail!("--beam must be at least 1");
    }
    if args.max_new_tokens == Some(0) {
        anyhow::bail!("--max-new-tokens must be at least 1");
    }
    // The worker's `[model]` section, from the flags (0 = the bundle's generation settings;
    // no warm-up for one input): the model loads exactly as `fusionstream run` loads it.
    let m = ModelConfig {
        bundle: args.model.clone(),
        cache_dir: PathBuf::new(),
        device: args.device.clone(),
        dtype: args.dtype.clone(),
        backend: BackendChoice::parse(&args.backend)?,
        precision: Precision::parse(&args.precision)?,
        onnxruntime_library: args.onnxruntime_library.clone().unwrap_or_default(),
        intra_op_threads: 0,
        intra_op_spinning: false,
        max_new_tokens: args.max_new_tokens.unwrap_or(0),
        num_beams: args.beam.unwrap_or(0),
        queue: 1,
        warm_up: WarmUp::Never,
    };
    let model = fusionstream::app::model::load(
        &m,
        &args.model,
        DecodeOptions::default(),
        Default::default(),
    )?;

    let image = match &args.image {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let tasks = args.tasks.unwrap_or_else(TaskSet::unnamed);
    let item = model
        .prepare(
            image.as_deref(),
            args.text.as_deref(),
            args.question.as_deref(),
            tasks,
        )
        .context("preparing the input")?;
    let out = model
        .infer_batch(&[item])?
        .into_iter()
        .next()
        .context("no output")?;
    println!("{}", serde_json::to_string(&out)?);
    // Which backend ran each part, on stderr so that stdout stays one JSON object.
    eprintln!("model: {}", model.backend_summary());
    match model.onnx_library() {
        Some((lib, source)) => eprintln!("onnxruntime: {} (from {source})", lib.display()),
        None => eprintln!(
            "onnxruntime: {}",
            fusionstream_model::backend::onnx::library::not_found_hint()
        ),
    }
    Ok(())
}
