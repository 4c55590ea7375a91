//! Loading the model a configuration names, for every command that runs it (`run` and
//! `backfill` through [`super::run`], `infer` directly): the bundle (a folder, or an `s3://`
//! prefix copied into the bundle cache), the runtime options of `[model]`, its generation
//! overrides (`0` = the bundle's) and the warm-up policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use fusionstream_model::moderation::ModerationModels;
use fusionstream_model::preprocess::DecodeOptions;
use fusionstream_model::{FusionModel, RuntimeOptions};

use crate::config::{Config, ModelConfig, ModerationConfig, WarmUp};

/// Load the bundle at `bundle` as `m` says (blocking: run it off the async runtime). The
/// generation settings are the bundle's unless `m` overrides them; the model is warmed up
/// when `m.warm_up` asks for it.
pub fn load(
    m: &ModelConfig,
    bundle: &Path,
    decode: DecodeOptions,
    moderation: Option<&ModerationConfig>,
) -> anyhow::Result<FusionModel> {
    let opts = RuntimeOptions {
        decode,
        generation: None,
        ..m.runtime_options()?
    };
    let mut model = FusionModel::load(bundle, &opts)
        .with_context(|| format!("loading model bundle {}", bundle.display()))?;
    if let Some(mc) = moderation {
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
