//! Decode + resize + crop + normalise per core, on the photos written by
//! `benches/make_photos.py` (`benches/compare_preprocess.sh` runs this beside PIL).
//! Set FUSIONSTREAM_BENCH_PHOTOS to their folder (default: <workspace>/target/bench-photos).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fusionstream_model::preprocess::{
    decode_for, DecodeOptions, ImageProcessorConfig, Preprocessor,
};

fn photos() -> Vec<(String, Vec<u8>)> {
    let dir = std::env::var_os("FUSIONSTREAM_BENCH_PHOTOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_MANIFEST_DIR")
                .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
                .join("../../target/bench-photos")
        });
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
                .map(|p| {
                    (
                        p.file_stem().unwrap().to_string_lossy().into_owned(),
                        std::fs::read(&p).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if out.is_empty() {
        eprintln!(
            "no photos in {}: run `python benches/make_photos.py {}`",
            dir.display(),
            dir.display()
        );
    }
    out.sort();
    out
}

fn bench(c: &mut Criterion) {
    let clip = Preprocessor::new(
        ImageProcessorConfig::from_json(
            r#"{"image_processor_type":"CLIPImageProcessor","size":{"shortest_edge":224},
                "do_center_crop":true,"crop_size":{"height":224,"width":224}}"#,
        )
        .unwrap(),
    );
    let blip = Preprocessor::new(
        ImageProcessorConfig::from_json(r#"{"image_processor_type":"BlipImageProcessor","size":{"height":384,"width":384},
            "image_mean":[0.48145466,0.4578275,0.40821073],"image_std":[0.26862954,0.26130258,0.27577711]}"#)
        .unwrap(),
    );
    let mut group = c.benchmark_group("preprocess");
    group.throughput(Throughput::Elements(1)).sample_size(20);
    for (name, bytes) in photos() {
        for (target, p) in [("clip224", &clip), ("blip384", &blip)] {
            for (mode, dct) in [("full", false), ("dct", true)] {
                let opts = DecodeOptions {
                    jpeg_dct_scaling: dct,
                    ..DecodeOptions::default()
                };
                let need = |h: u32, w: u32| p.config().resized_size(h, w);
                group.bench_function(format!("{name}/{target}/{mode}"), |b| {
                    b.iter(|| {
                        p.apply(&decode_for(&bytes, &opts, Some(&need)).unwrap())
                            .unwrap()
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
