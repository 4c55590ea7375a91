//! CPU model throughput of the Rust backends at real sizes, through the backend seam:
//! candle f32, ONNX Runtime f32 and ONNX Runtime int8 on the same checkpoints (and their
//! exported graphs), batch sizes and timing protocol as `benches/model_cpu_torch.py`
//! (one warm-up call, then calls for at least `SECONDS` and 2 calls; items per second).
//! `benches/compare_model_cpu.sh` runs both and prints one table.
//!
//!     cargo run --release -p fusionstream-model --example backend_bench -- MODELS_DIR \
//!         [--backends candle,onnx-f32,onnx-int8] [--batches 1,8,32] [--seconds 10]
//!
//! MODELS_DIR holds `clip-vit-b32` and `blip-base-caption` (benches/make_models.py) with
//! `onnx/` graphs (python -m models.export_onnx --int8). ONNX needs `ORT_DYLIB_PATH`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use fusionstream_model::backend::onnx::{
    self, BlipTextDims, OnnxBlip, OnnxClip, OnnxOptions, Precision,
};
use fusionstream_model::backend::{
    BlipBackend, CandleBlip, CandleDualEncoder, DualEncoderBackend, PixelBatch,
};
use fusionstream_model::generate::GenerationParams;
use fusionstream_model::models::blip::{BlipCaptioner, BlipConfig};
use fusionstream_model::models::clip::{ClipConfig, ClipModel};
use fusionstream_model::nn::load_weights;

fn rate(mut f: impl FnMut(), items: usize, seconds: f64) -> f64 {
    f();
    let (mut n, t0) = (0usize, Instant::now());
    while n < 2 || t0.elapsed().as_secs_f64() < seconds {
        f();
        n += 1;
    }
    (n * items) as f64 / t0.elapsed().as_secs_f64()
}

/// Deterministic pseudo-random pixels (normalised-range values).
fn pixels(n: usize, size: usize) -> PixelBatch {
    let mut x = 0x2545_f491_u32;
    let data = (0..n * 3 * size * size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) * 4.0 - 2.0
        })
        .collect();
    PixelBatch {
        data,
        n,
        height: size,
        width: size,
    }
}

fn texts(b: usize) -> Vec<Vec<u32>> {
    // 16 tokens: BOS, 14 words, EOS (as the PyTorch side).
    (0..b)
        .map(|i| {
            std::iter::once(49406)
                .chain((0..14).map(|j| 320 + (i * 14 + j) as u32))
                .chain([49407])
                .collect()
        })
        .collect()
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn clip(dir: &Path, backend: &str, threads: usize) -> Box<dyn DualEncoderBackend> {
    let cfg = ClipConfig::from_file(&dir.join("config.json")).unwrap();
    match backend {
        "candle" => {
            let vb = load_weights(&dir.join("model.safetensors"), DType::F32, &Device::Cpu);
            Box::new(CandleDualEncoder::Clip(
                ClipModel::new(vb.unwrap(), &cfg).unwrap(),
                Device::Cpu,
                DType::F32,
            ))
        }
        b => {
            Box::new(OnnxClip::load(dir, cfg.text_config.eos_token_id, &opts(b, threads)).unwrap())
        }
    }
}

fn opts(backend: &str, threads: usize) -> OnnxOptions {
    OnnxOptions {
        library: None,
        precision: if backend == "onnx-int8" {
            Precision::Int8
        } else {
            Precision::F32
        },
        intra_threads: threads,
        cuda_device: None,
        // The model alone on the machine, as PyTorch's OpenMP threads: ONNX Runtime's default.
        spinning: true,
    }
}

fn blip(dir: &Path, backend: &str, threads: usize) -> Box<dyn BlipBackend> {
    let cfg = BlipConfig::from_file(&dir.join("config.json")).unwrap();
    match backend {
        "candle" => {
            let vb = load_weights(&dir.join("model.safetensors"), DType::F32, &Device::Cpu);
            Box::new(CandleBlip::Caption(
                BlipCaptioner::new(vb.unwrap(), &cfg).unwrap(),
                Device::Cpu,
                DType::F32,
            ))
        }
        b => {
            let dims = BlipTextDims::from(&cfg.text_config);
            Box::new(OnnxBlip::load(dir, false, dims, &opts(b, threads)).unwrap())
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(
        args.first()
            .cloned()
            .unwrap_or("target/bench-models".into()),
    );
    let backends = arg(&args, "--backends", "candle,onnx-f32,onnx-int8");
    let batches: Vec<usize> = arg(&args, "--batches", "1,8,32")
        .split(',')
        .map(|b| b.parse().unwrap())
        .collect();
    let caption_batches: Vec<usize> = arg(&args, "--caption-batches", "1,8,32")
        .split(',')
        .map(|b| b.parse().unwrap())
        .collect();
    let seconds: f64 = arg(&args, "--seconds", "10").parse().unwrap();
    let threads: usize = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    if backends.contains("onnx") {
        let lib = std::env::var_os("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH");
        onnx::load_library(Path::new(&lib)).unwrap();
    }
    println!("rust backends, {threads} threads");
    for backend in backends.split(',') {
        let c = clip(&root.join("clip-vit-b32"), backend, threads);
        for &b in &batches {
            let px = pixels(b, 224);
            let r = rate(|| drop(c.image_embeddings(&px).unwrap()), b, seconds);
            println!("{backend} clip_b32_cpu/image/batch{b} {r:.2} items/s");
        }
        for &b in &batches {
            let ids = texts(b);
            let r = rate(|| drop(c.text_embeddings(&ids).unwrap()), b, seconds);
            println!("{backend} clip_b32_cpu/text16/batch{b} {r:.2} items/s");
        }
        drop(c);
        let m = blip(&root.join("blip-base-caption"), backend, threads);
        // An EOS that never comes: every caption is exactly 20 tokens, as on the PyTorch side.
        let params = GenerationParams {
            max_new_tokens: 20,
            num_beams: 1,
            length_penalty: 1.0,
            eos_token_id: u32::MAX,
        };
        for &b in &caption_batches {
            let px = pixels(b, 384);
            let r = rate(
                || {
                    let s = m.image_states(&px).unwrap();
                    let out = m.generate(&s, None, &params).unwrap();
                    assert!(out.iter().all(|o| o.len() == 21));
                },
                b,
                seconds,
            );
            println!("{backend} blip_base_caption_cpu/greedy20/batch{b} {r:.2} items/s");
        }
    }
}
