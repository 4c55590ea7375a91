//! Model throughput and parity at real sizes, on CPU or (feature `cuda`) on a GPU: the Rust
//! side of `benches/gpu/run.sh`, which runs it beside PyTorch (`benches/gpu/torch_side.py`) on
//! the same random-weight checkpoints (`benches/make_models.py`) in one run.
//!
//! ```text
//! model_bench bench --models DIR [--device cuda] [--dtype f16] [--quick] [--f16-accumulate]
//! model_bench check --models DIR [--device cuda] --out FILE
//! ```
//!
//! `bench` prints one JSON line per measurement: the median of timed calls after a warm-up,
//! each call followed by a device synchronisation (the same protocol as the PyTorch side).
//! `check` runs f32 on deterministic inputs (the formula is repeated in `torch_side.py`) and
//! writes the embeddings and greedy caption tokens, which `benches/gpu/compare.py` compares
//! with PyTorch's.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use fusionstream_model::generate::{generate, GenerationParams};
use fusionstream_model::models::blip::{BlipCaptioner, BlipConfig};
use fusionstream_model::models::clip::{ClipConfig, ClipModel};
use fusionstream_model::nn::load_weights;
use serde_json::json;

struct Args {
    mode: String,
    models: PathBuf,
    device: String,
    dtype: String,
    quick: bool,
    f16_accumulate: bool,
    out: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .context("usage: model_bench bench|check --models DIR ...")?;
    let mut a = Args {
        mode,
        models: PathBuf::from("target/bench-models"),
        device: "cpu".into(),
        dtype: "f32".into(),
        quick: false,
        f16_accumulate: false,
        out: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--models" => a.models = value()?.into(),
            "--device" => a.device = value()?,
            "--dtype" => a.dtype = value()?,
            "--out" => a.out = Some(value()?.into()),
            "--quick" => a.quick = true,
            "--f16-accumulate" => a.f16_accumulate = true,
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(a)
}

/// Deterministic pixels, exactly representable in f32; `torch_side.pixels` is the same formula.
fn pixels(b: usize, size: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let mut v = Vec::with_capacity(b * 3 * size * size);
    for n in 0..b {
        for c in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    v.push(((n * 31 + c * 17 + y * 3 + x * 5) % 251) as f32 / 125.0 - 1.0);
                }
            }
        }
    }
    Ok(Tensor::from_vec(v, (b, 3, size, size), dev)?.to_dtype(dtype)?)
}

/// Token rows: BOS, `len - 2` word ids, EOS; `torch_side.text_ids` is the same formula.
fn text_ids(b: usize, len: impl Fn(usize) -> usize) -> Vec<Vec<u32>> {
    (0..b)
        .map(|i| {
            let words = (0..len(i) - 2).map(|j| 320 + ((i * 30 + j) % 4000) as u32);
            std::iter::once(49406).chain(words).chain([49407]).collect()
        })
        .collect()
}

/// Median seconds of `iters` calls after `warm` untimed ones, synchronising after each.
fn median_secs(dev: &Device, warm: usize, iters: usize, mut f: impl FnMut()) -> Result<f64> {
    for _ in 0..warm {
        f();
    }
    dev.synchronize()?;
    let mut ts = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        f();
        dev.synchronize()?;
        ts.push(t0.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[ts.len() / 2])
}

fn report(name: &str, batch: usize, secs: f64, a: &Args) {
    let line = json!({
        "side": "candle", "name": name, "batch": batch, "device": a.device, "dtype": a.dtype,
        "f16_accumulate": a.f16_accumulate,
        "median_ms": secs * 1e3, "items_per_s": batch as f64 / secs,
    });
    println!("{line}");
}

fn load_clip(dir: &Path, dtype: DType, dev: &Device) -> Result<ClipModel> {
    let cfg = ClipConfig::from_file(&dir.join("config.json"))?;
    Ok(ClipModel::new(
        load_weights(&dir.join("model.safetensors"), dtype, dev)?,
        &cfg,
    )?)
}

fn load_blip(dir: &Path, dtype: DType, dev: &Device) -> Result<(BlipCaptioner, BlipConfig)> {
    let cfg = BlipConfig::from_file(&dir.join("config.json"))?;
    let m = BlipCaptioner::new(
        load_weights(&dir.join("model.safetensors"), dtype, dev)?,
        &cfg,
    )?;
    Ok((m, cfg))
}

/// Greedy or beam captions of `px` from BOS; `eos` u32::MAX makes every caption full length.
fn captions(m: &BlipCaptioner, cfg: &BlipConfig, px: &Tensor, eos: u32) -> Result<Vec<Vec<u32>>> {
    let params = GenerationParams {
        max_new_tokens: 20,
        num_beams: 1,
        length_penalty: 1.0,
        eos_token_id: eos,
    };
    let states = m.vision.forward(px)?;
    let cache = m.decoder.start(&states, None)?;
    let b = px.dim(0)?;
    Ok(generate(
        &m.decoder,
        cache,
        &[cfg.text_config.bos_token_id],
        b,
        &params,
    )?)
}

fn bench(a: &Args, dev: &Device, dtype: DType) -> Result<()> {
    let (image_batches, text_batch, caption_batches): (&[usize], usize, &[usize]) = if a.quick {
        (&[1, 2], 4, &[1, 2])
    } else {
        (&[1, 32, 256], 256, &[1, 32, 128])
    };
    let (warm, iters) = if a.quick { (1, 3) } else { (5, 20) };
    for (name, folder) in [("clip_b32", "clip-vit-b32"), ("clip_b16", "clip-vit-b16")] {
        let m = load_clip(&a.models.join(folder), dtype, dev)?;
        for &b in image_batches {
            let px = pixels(b, 224, dtype, dev)?;
            let s = median_secs(dev, warm, iters, || {
                m.image_embeddings(&px).expect("image embeddings");
            })?;
            report(&format!("{name}/image"), b, s, a);
        }
        if name == "clip_b16" {
            // The text tower is the same in both configs: measured once, 32 tokens per row.
            let ids = text_ids(text_batch, |_| 32);
            let s = median_secs(dev, warm, iters, || {
                m.text_embeddings(&ids, dev).expect("text embeddings");
            })?;
            report("clip/text32", text_batch, s, a);
        }
    }
    let (m, cfg) = load_blip(&a.models.join("blip-base-caption"), dtype, dev)?;
    for &b in caption_batches {
        let px = pixels(b, m.vision.image_size(), dtype, dev)?;
        // An EOS that never comes: 20 new tokens per caption, as min_new_tokens does in HF.
        let s = median_secs(dev, 2, if a.quick { 2 } else { 5 }, || {
            captions(&m, &cfg, &px, u32::MAX).expect("captions");
        })?;
        report("blip_base/caption_greedy20", b, s, a);
    }
    Ok(())
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?.to_vec2()?)
}

fn check(a: &Args, dev: &Device) -> Result<()> {
    let out = a.out.as_ref().context("check needs --out FILE")?;
    let mut result = serde_json::Map::new();
    for (name, folder) in [("clip_b32", "clip-vit-b32"), ("clip_b16", "clip-vit-b16")] {
        let m = load_clip(&a.models.join(folder), DType::F32, dev)?;
        let img = m.image_embeddings(&pixels(4, 224, DType::F32, dev)?)?;
        result.insert(format!("{name}/image"), json!(rows(&img)?));
        // Rows of different lengths in one batch: the padding masks must make them independent.
        let txt = m.text_embeddings(&text_ids(4, |i| 8 + 5 * i), dev)?;
        result.insert(format!("{name}/text"), json!(rows(&txt)?));
    }
    let (m, cfg) = load_blip(&a.models.join("blip-base-caption"), DType::F32, dev)?;
    let px = pixels(4, m.vision.image_size(), DType::F32, dev)?;
    let ids = captions(&m, &cfg, &px, cfg.text_config.sep_token_id)?;
    result.insert("blip_base/caption_greedy_ids".into(), json!(ids));
    std::fs::write(out, serde_json::to_string(&result)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn main() -> Result<()> {
    let a = args()?;
    let dev = fusionstream_model::device(&a.device)?;
    let dtype = fusionstream_model::dtype(&a.dtype)?;
    if a.f16_accumulate {
        // cuBLAS f16 GEMMs with f16 accumulation (PyTorch accumulates in f32 by default).
        #[cfg(feature = "cuda")]
        candle_core::cuda_backend::set_gemm_reduced_precision_f16(true);
        #[cfg(not(feature = "cuda"))]
        bail!("--f16-accumulate needs the cuda build");
    }
    let t0 = Instant::now();
    match a.mode.as_str() {
        "bench" => bench(&a, &dev, dtype)?,
        "check" => check(&a, &dev)?,
        other => bail!("unknown mode {other:?} (bench or check)"),
    }
    eprintln!("{} done in {:.1} s", a.mode, t0.elapsed().as_secs_f64());
    Ok(())
}
