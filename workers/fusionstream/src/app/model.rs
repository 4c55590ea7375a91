//! Loading the model a configuration names, for every command that runs it (`run` and
//! `backfill` through [`super::run`], `infer` directly): the bundle (a folder, or an `s3://`
//! prefix copied into the bundle cache), the runtime options of `[model]`, its generation
//! overrides (`0` = the bundle's) and the warm-up policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use fusionstream_model::moderation::ModerationModels;
use fusionstream_model::photo::{PhotoOptions, PhotoPacks};
use fusionstream_model::preprocess::DecodeOptions;
use fusionstream_model::{FusionModel, RuntimeOptions};

use crate::config::{Config, ModelConfig, ModerationConfig, WarmUp};

/// The packs loaded beside the bundle.
#[derive(Debug, Clone, Copy, Default)]
pub struct Packs<'a> {
    /// `[moderation]`, when the worker serves `moderate`.
    pub moderation: Option<&'a ModerationConfig>,
    /// The photo packs of `[tags]` and `[embeddings]`.
    pub photo: Option<&'a PhotoOptions>,
}

/// Load the bundle at `bundle` as `m` says (blocking: run it off the async runtime), with
/// `packs`. The generation settings are the bundle's unless `m` overrides them; the model is
/// warmed up when `m.warm_up` asks for it.
pub fn load(
    m: &ModelConfig,
    bundle: &Path,
    decode: DecodeOptions,
    packs: Packs<'_>,
) -> anyhow::Result<FusionModel> {
    let opts = RuntimeOptions {
        decode,
        generation: None,
        ..m.runtime_options()?
    };
    let mut model = FusionModel::load(bundle, &opts)
        .with_context(|| format!("loading model bundle {}", bundle.display()))?;
    log_onnx_library(&model);
    if let Some(po) = packs.photo {
        let started = Instant::now();
        let photo =
            PhotoPacks::load(po).context("loading the photo packs ([tags], [embeddings])")?;
        tracing::info!(
            packs = %photo.names().join(","),
            seconds = started.elapsed().as_secs_f64(),
            "photo packs loaded"
        );
        model = model.with_photo_packs(Arc::new(photo));
    }
    if let Some(mc) = packs.moderation {
        let started = Instant::now();
        let packs = ModerationModels::load(&mc.options(opts.onnx.clone()))
            .context("loading the moderation packs ([moderation])")?;
        tracing::info!(
            packs = %packs.packs().join(","),
            seconds = started.elapsed().as_secs_f64(),
            "moderation packs loaded"
        );
        model = model.with_moderation(Arc::new(packs));
    }
    let bundle_gen = model.generation().clone();
    let or_bundle = |v: usize, default: usize| if v == 0 { default } else { v };
    model.set_generation(
        or_bundle(m.max_new_tokens, bundle_gen.max_new_tokens),
        or_bundle(m.num_beams, bundle_gen.num_beams),
    );
    let warm_up = match m.warm_up {
        WarmUp::Auto => !model.device().is_cpu(),
        WarmUp::Always => true,
        WarmUp::Never => false,
    };
    if warm_up {
        // First use of each GPU kernel compiles it: pay that before reporting ready.
        let started = Instant::now();
        model.warm_up().context("warming up the model")?;
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "model warmed up");
    }
    Ok(model)
}

/// Say which ONNX Runtime library runs the bundle and where it was found, or — when `auto`
/// fell back to candle — how to get the faster backend.
fn log_onnx_library(model: &FusionModel) {
    match model.onnx_library() {
        Some((lib, source)) => {
            tracing::info!(library = %lib.display(), from = %source, "ONNX Runtime loaded");
        }
        None => tracing::info!(
            "the bundle runs on candle: {}; with it, `model.backend = \"auto\"` runs the \
             bundle's int8 graphs (on the embedded default's mix ~2x a Python worker's speed, \
             candle ~0.6x: benches/README.md)",
            fusionstream_model::backend::onnx::library::not_found_hint()
        ),
    }
}

/// A local bundle folder: `model.bundle` itself, or for an `s3://bucket/prefix` its copy in
/// the bundle cache (downloaded on first use).
pub async fn resolve_bundle(c: &Config) -> anyhow::Result<PathBuf> {
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
