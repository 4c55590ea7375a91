//! CPU model throughput by batch size at real sizes (CLIP ViT-B/32, BLIP-base captioning) with
//! random weights written by `benches/make_models.py`; `benches/compare_model_cpu.sh` runs
//! this beside PyTorch on the same checkpoints. Set FUSIONSTREAM_BENCH_MODELS to their folder
//! (default: <workspace>/target/bench-models); without them the bench reports and skips.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fusionstream_model::generate::{generate, GenerationParams};
use fusionstream_model::models::blip::{BlipCaptioner, BlipConfig};
use fusionstream_model::models::clip::{ClipConfig, ClipModel};
use fusionstream_model::nn::load_weights;

fn models() -> PathBuf {
    std::env::var_os("FUSIONSTREAM_BENCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_MANIFEST_DIR")
                .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
                .join("../../target/bench-models")
        })
}

fn pixels(b: usize, size: usize) -> Tensor {
    Tensor::randn(0f32, 1.0, (b, 3, size, size), &Device::Cpu).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = models();
    let dev = Device::Cpu;
    let clip_dir = dir.join("clip-vit-b32");
    if clip_dir.join("model.safetensors").exists() {
        let cfg = ClipConfig::from_file(&clip_dir.join("config.json")).unwrap();
        let m = ClipModel::new(
            load_weights(&clip_dir.join("model.safetensors"), DType::F32, &dev).unwrap(),
            &cfg,
        )
        .unwrap();
        let mut g = c.benchmark_group("clip_b32_cpu");
        g.sample_size(10).measurement_time(Duration::from_secs(20));
        for b in [1usize, 8] {
            let px = pixels(b, 224);
            g.throughput(Throughput::Elements(b as u64));
            g.bench_function(format!("image/batch{b}"), |bench| {
                bench.iter(|| m.image_embeddings(&px).unwrap())
            });
        }
        for b in [1usize, 32] {
            // 16 tokens: BOS, 14 words, EOS.
            let ids: Vec<Vec<u32>> = (0..b)
                .map(|i| {
                    std::iter::once(49406)
                        .chain((0..14).map(|j| 320 + (i * 14 + j) as u32))
                        .chain([49407])
                        .collect()
                })
                .collect();
            g.throughput(Throughput::Elements(b as u64));
            g.bench_function(format!("text16/batch{b}"), |bench| {
                bench.iter(|| m.text_embeddings(&ids, &dev).unwrap())
            });
        }
        g.finish();
    } else {
        eprintln!(
            "no {}: run `python benches/make_models.py {}`",
            clip_dir.display(),
            dir.display()
        );
    }
    let blip_dir = dir.join("blip-base-caption");
    if blip_dir.join("model.safetensors").exists() {
        let cfg = BlipConfig::from_file(&blip_dir.join("config.json")).unwrap();
        let m = BlipCaptioner::new(
            load_weights(&blip_dir.join("model.safetensors"), DType::F32, &dev).unwrap(),
            &cfg,
        )
        .unwrap();
        // An EOS that never comes: every caption is exactly 20 tokens, as on the PyTorch side.
        let params = GenerationParams {
            max_new_tokens: 20,
            num_beams: 1,
            length_penalty: 1.0,
            eos_token_id: u32::MAX,
        };
        let mut g = c.benchmark_group("blip_base_caption_cpu");
        g.sample_size(10).measurement_time(Duration::from_secs(30));
        for b in [1usize, 4] {
            let px = pixels(b, 384);
            g.throughput(Throughput::Elements(b as u64));
            g.bench_function(format!("greedy20/batch{b}"), |bench| {
                bench.iter(|| {
                    let states = m.vision.forward(&px).unwrap();
                    let cache = m.decoder.start(&states, None).unwrap();
                    generate(
                        &m.decoder,
                        cache,
                        &[cfg.text_config.bos_token_id],
                        b,
                        &params,
                    )
                    .unwrap()
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
