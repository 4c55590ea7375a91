//! Per-image cost of the photo packs on CPU, for `benches/compare_photo_packs.sh` (which runs
//! `benches/photo_packs_python.py`, the packages' own PyTorch models, in the same run):
//! `imagenet` (EfficientNet-Lite0: preprocessing and the logits) and `photo_embedding`
//! (MobileNetV2: preprocessing and the unit vector), one image at a time and in batches of 8,
//! over the photo packs' parity images (29: generated ones of many sizes, the example scenes
//! and photos), decoded beforehand.
//!
//! Usage: `photo_packs_bench PACKS_DIR [--seconds S]`; threads from `RAYON_NUM_THREADS`.
//! Prints `rust <measure> <value> items/s` lines.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::Device;
use fusionstream_model::packs::classifier::ImageClassifier;
use fusionstream_model::packs::photo_embedding::PhotoEmbedder;
use fusionstream_model::preprocess::{decode_like_pillow, ImageLimits, RgbImage};

/// Items per second of `f` over `n` items, repeated for at least `secs` after a warm-up.
fn rate(n: usize, secs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut rounds = 0usize;
    while start.elapsed() < Duration::from_secs_f64(secs) || rounds == 0 {
        f();
        rounds += 1;
    }
    (rounds * n) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let packs = PathBuf::from(args.next().expect("usage: photo_packs_bench PACKS_DIR"));
    let mut secs = 10.0f64;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => secs = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../..");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("models/fixtures/photo_packs/reference.json")).unwrap(),
    )
    .unwrap();
    let decoded: Vec<RgbImage> = reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let bytes = std::fs::read(root.join(r["file"].as_str().unwrap())).unwrap();
            decode_like_pillow(&bytes, &ImageLimits::default()).unwrap()
        })
        .collect();
    let n = decoded.len();
    let clf = ImageClassifier::load(&packs.join("imagenet"), &Device::Cpu).unwrap();
    let emb = PhotoEmbedder::load(&packs.join("photo_embedding"), &Device::Cpu).unwrap();
    let print = |what: &str, v: f64| println!("rust {what} {v:.2} items/s");
    eprintln!(
        "{n} images, {} thread(s)",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into())
    );
    print(
        "imagenet-batch1",
        rate(n, secs, || {
            for img in &decoded {
                std::hint::black_box(clf.logits(&[clf.prepare(img)]).unwrap());
            }
        }),
    );
    print(
        "imagenet-batch8",
        rate(n, secs, || {
            for chunk in decoded.chunks(8) {
                let x: Vec<Vec<f32>> = chunk.iter().map(|i| clf.prepare(i)).collect();
                std::hint::black_box(clf.logits(&x).unwrap());
            }
        }),
    );
    print(
        "photo_embedding-batch1",
        rate(n, secs, || {
            for img in &decoded {
                std::hint::black_box(emb.embed(&[emb.prepare(img)]).unwrap());
            }
        }),
    );
    print(
        "photo_embedding-batch8",
        rate(n, secs, || {
            for chunk in decoded.chunks(8) {
                let x: Vec<Vec<f32>> = chunk.iter().map(|i| emb.prepare(i)).collect();
                std::hint::black_box(emb.embed(&x).unwrap());
            }
        }),
    );
}
