//! Per-image cost of each moderation signal on CPU, for `benches/compare_moderation.sh`
//! (which runs `benches/moderation_python.py`, the same signals through the packages' own
//! Python pipelines, in the same run): decode, NSFW (open_nsfw), OCR (PP-OCR), MiniLM
//! sentence embeddings, and the whole `moderate` task of one image (decode once, NSFW, OCR,
//! the event's text and the text read embedded).
//!
//! Usage: `moderation_bench PACKS_DIR [--threads N] [--seconds S]`; ONNX Runtime from
//! `ORT_DYLIB_PATH`. Prints `rust <measure> <value> items/s` lines.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fusionstream_model::backend::onnx::OnnxOptions;
use fusionstream_model::packs::nsfw::NsfwClassifier;
use fusionstream_model::packs::ocr::OcrReader;
use fusionstream_model::packs::sentence::SentenceEncoder;
use fusionstream_model::preprocess::{ImageLimits, RgbImage};

/// The benchmark's images: the OCR fixtures (text) and the NSFW fixtures (no text).
pub fn images(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (dir, key) in [
        ("models/fixtures/ocr", "images"),
        ("models/fixtures/nsfw", "scores"),
    ] {
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(dir).join("reference.json")).unwrap(),
        )
        .unwrap();
        for name in r[key].as_object().unwrap().keys() {
            let p = if key == "images" {
                root.join(dir).join(name)
            } else {
                root.join(name)
            };
            out.push(p);
        }
    }
    out
}

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
    let packs = PathBuf::from(args.next().expect("usage: moderation_bench PACKS_DIR"));
    let (mut threads, mut secs) = (1usize, 10.0f64);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = args.next().unwrap().parse().unwrap(),
            "--seconds" => secs = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    // The running checkout's (cargo sets the variable), not the one the binary was built in.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../..");
    let opts = OnnxOptions {
        intra_threads: threads,
        ..OnnxOptions::default()
    };
    let nsfw = NsfwClassifier::load(&packs.join("open_nsfw"), &opts).unwrap();
    let ocr = OcrReader::load(&packs.join("ppocr"), &opts).unwrap();
    let enc = SentenceEncoder::load(&packs.join("minilm"), &candle_core::Device::Cpu).unwrap();
    let files = images(&root);
    let bytes: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let limits = ImageLimits::default();
    let decoded: Vec<RgbImage> = bytes
        .iter()
        .map(|b| nsfw.decode(b, &limits).unwrap())
        .collect();
    let n = files.len();
    let texts: Vec<String> = {
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("models/fixtures/minilm/reference.json")).unwrap(),
        )
        .unwrap();
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["text"].as_str().unwrap().to_owned())
            .filter(|t| !t.is_empty() && t.len() < 200)
            .collect()
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let print = |what: &str, v: f64| println!("rust {what} {v:.2} items/s");
    eprintln!("{n} images, {} texts, {threads} thread(s)", texts.len());
    print(
        "decode",
        rate(n, secs, || {
            for b in &bytes {
                std::hint::black_box(nsfw.decode(b, &limits).unwrap());
            }
        }),
    );
    print(
        "nsfw",
        rate(n, secs, || {
            for img in &decoded {
                std::hint::black_box(nsfw.scores(&[nsfw.prepare(img).unwrap()]).unwrap());
            }
        }),
    );
    print(
        "ocr",
        rate(n, secs, || {
            for img in &decoded {
                std::hint::black_box(ocr.read(img).unwrap());
            }
        }),
    );
    print(
        "minilm-batch1",
        rate(refs.len(), secs, || {
            for t in &refs {
                std::hint::black_box(enc.embed(&[t]).unwrap());
            }
        }),
    );
    print(
        "minilm-batch32",
        rate(32, secs, || {
            std::hint::black_box(enc.embed(&refs[..32.min(refs.len())]).unwrap());
        }),
    );
    print(
        "moderate",
        rate(n, secs, || {
            for (i, b) in bytes.iter().enumerate() {
                let img = nsfw.decode(b, &limits).unwrap();
                let score = nsfw.scores(&[nsfw.prepare(&img).unwrap()]).unwrap();
                let lines = ocr.read(&img).unwrap();
                let read: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
                let read = read.join("\n");
                let mut batch = vec![refs[i % refs.len()]];
                if !read.is_empty() {
                    batch.push(&read);
                }
                std::hint::black_box((score, enc.embed(&batch).unwrap()));
            }
        }),
    );
}
