//! The ONNX Runtime backend against transformers and against the candle backend.
//!
//! The graphs are the ones `python -m models.export_onnx --int8` wrote beside the tiny
//! fixtures and the `shapes` bundle (the exporter itself is tested on freshly generated
//! checkpoints by `models/tests/test_export_onnx.py`). Needs the ONNX Runtime library:
//! `ORT_DYLIB_PATH` (scripts/test.sh installs the onnxruntime wheel and sets it, with
//! `FUSIONSTREAM_REQUIRE_ORT=1` so that these tests fail rather than skip without it).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fusionstream_model::backend::onnx::{
    self, BlipTextDims, OnnxBlip, OnnxClip, OnnxOptions, Precision,
};
use fusionstream_model::backend::{BlipBackend, DualEncoderBackend, EncoderStates, PixelBatch};
use fusionstream_model::bundle::GenerationSpec;
use fusionstream_model::generate::GenerationParams;
use fusionstream_model::{
    BackendChoice, BackendKind, FusionModel, ModelError, RuntimeOptions, TaskSet,
};

const TOL: f32 = 1e-4;

/// The library, loaded; `None` (test skipped) only when it is not configured and not required.
fn library() -> Option<PathBuf> {
    match std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            onnx::load_library(&p).unwrap();
            Some(p)
        }
        None => {
            assert!(
                std::env::var("FUSIONSTREAM_REQUIRE_ORT").as_deref() != Ok("1"),
                "FUSIONSTREAM_REQUIRE_ORT=1 but ORT_DYLIB_PATH is not set"
            );
            eprintln!("ORT_DYLIB_PATH not set: ONNX Runtime test skipped");
            None
        }
    }
}

fn opts(precision: Precision) -> OnnxOptions {
    OnnxOptions {
        library: None,
        precision,
        intra_threads: 2,
        cuda_device: None,
        spinning: false,
    }
}

fn pixels(t: &candle_core::Tensor) -> PixelBatch {
    let (n, _, h, w) = t.dims4().unwrap();
    PixelBatch {
        data: t.flatten_all().unwrap().to_vec1().unwrap(),
        n,
        height: h,
        width: w,
    }
}

fn max_diff_rows(a: &[Vec<f32>], b: &candle_core::Tensor) -> f32 {
    let b: Vec<Vec<f32>> = b.to_vec2().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| max_abs_diff_vec(x, y))
        .fold(0.0, f32::max)
}

fn check_clip(name: &str) {
    let dir = tiny(name);
    let eos = reference_json_cfg(&dir)["text_config"]["eos_token_id"]
        .as_u64()
        .unwrap() as u32;
    let m = OnnxClip::load(&dir, eos, &opts(Precision::F32)).unwrap();
    let r = reference(name);
    let j = reference_json(name);
    let img = m.image_embeddings(&pixels(&r["pixel_values"])).unwrap();
    let d = max_diff_rows(&img, &r["image_embeds"]);
    assert!(d <= TOL, "{name} image_embeds: {d}");
    // Every text in one padded batch against references computed one at a time.
    let texts = ids(&j["input_ids"]);
    let txt = m.text_embeddings(&texts).unwrap();
    let d = max_diff_rows(&txt, &r["text_embeds"]);
    assert!(d <= TOL, "{name} text_embeds (padded batch): {d}");
    for (i, t) in texts.iter().enumerate() {
        let one = m.text_embeddings(std::slice::from_ref(t)).unwrap();
        assert!(
            max_abs_diff_vec(&one[0], &txt[i]) <= 1e-5,
            "single text {i}"
        );
    }
}

fn reference_json_cfg(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn onnx_clip_matches_transformers() {
    if library().is_none() {
        return;
    }
    check_clip("clip-a");
    check_clip("clip-b");
}

fn blip_dims(dir: &Path) -> BlipTextDims {
    let c = &reference_json_cfg(dir)["text_config"];
    let u = |k: &str| c[k].as_u64().unwrap() as usize;
    BlipTextDims {
        layers: u("num_hidden_layers"),
        heads: u("num_attention_heads"),
        hidden: u("hidden_size"),
        bos: u("bos_token_id") as u32,
        pad: u("pad_token_id") as u32,
    }
}

fn params(j: &serde_json::Value, beams: usize) -> GenerationParams {
    GenerationParams {
        max_new_tokens: j["max_new_tokens"].as_u64().unwrap() as usize,
        num_beams: beams,
        length_penalty: 1.0,
        eos_token_id: 3,
    }
}

fn check_caption(name: &str) {
    let dir = tiny(name);
    let m = OnnxBlip::load(&dir, false, blip_dims(&dir), &opts(Precision::F32)).unwrap();
    let r = reference(name);
    let j = reference_json(name);
    let states = m.image_states(&pixels(&r["pixel_values"])).unwrap();
    let EncoderStates::Host { data, shape } = &states else {
        panic!("ONNX states live on the host")
    };
    let want = r["image_embeds"].flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(shape.to_vec(), r["image_embeds"].dims().to_vec());
    let d = max_abs_diff_vec(data, &want);
    assert!(d <= TOL, "{name} image states: {d}");
    // Greedy and beam-3 over both images in one batch, against transformers one at a time.
    for (beams, key) in [(1, "greedy_ids"), (3, "beam3_ids")] {
        let got = m.generate(&states, None, &params(&j, beams)).unwrap();
        assert_eq!(got, ids(&j[key]), "{name} {key}");
    }
}

#[test]
fn onnx_blip_caption_matches_transformers() {
    if library().is_none() {
        return;
    }
    check_caption("blip-caption-a");
    check_caption("blip-caption-b");
}

fn check_vqa(name: &str) {
    let dir = tiny(name);
    let m = OnnxBlip::load(&dir, true, blip_dims(&dir), &opts(Precision::F32)).unwrap();
    let r = reference(name);
    let j = reference_json(name);
    let states = m.image_states(&pixels(&r["pixel_values"])).unwrap();
    let qs = ids(&j["question_ids"]);
    assert_ne!(qs[0].len(), qs[1].len());
    for (beams, key) in [(1, "greedy_ids"), (3, "beam3_ids")] {
        let got = m.generate(&states, Some(&qs), &params(&j, beams)).unwrap();
        assert_eq!(got, ids(&j[key]), "{name} {key}");
    }
    // A question count that does not match the images is an input error, not a panic.
    let err = m
        .generate(&states, Some(&qs[..1]), &params(&j, 1))
        .unwrap_err();
    assert!(matches!(err, ModelError::Input(_)), "{err}");
}

#[test]
fn onnx_blip_vqa_matches_transformers() {
    if library().is_none() {
        return;
    }
    check_vqa("blip-vqa-a");
    check_vqa("blip-vqa-b");
}

fn bundle_dir() -> PathBuf {
    manifest_dir().join("../../models/shapes")
}

fn load_bundle(backend: BackendChoice, precision: Precision) -> FusionModel {
    let o = RuntimeOptions {
        backend,
        onnx: OnnxOptions {
            library: library(),
            ..opts(precision)
        },
        generation: Some(GenerationSpec {
            max_new_tokens: 32,
            num_beams: 1,
        }),
        ..RuntimeOptions::default()
    };
    FusionModel::load(&bundle_dir(), &o).unwrap()
}

fn bundle_items(model: &FusionModel) -> Vec<fusionstream_model::Prepared> {
    let img = |i: usize| {
        std::fs::read(manifest_dir().join(format!("../../examples/media/scene{i}.png"))).unwrap()
    };
    (0..4)
        .map(|i| {
            model
                .prepare(
                    Some(&img(i)),
                    Some("a small red circle"),
                    Some("what colour is the cross ?"),
                    TaskSet::unnamed(),
                )
                .unwrap()
        })
        .collect()
}

#[test]
fn the_bundle_on_onnx_f32_gives_the_candle_outputs() {
    if library().is_none() {
        return;
    }
    let onnx = load_bundle(BackendChoice::Onnx, Precision::F32);
    let candle = load_bundle(BackendChoice::Candle, Precision::F32);
    assert!(onnx
        .backends()
        .iter()
        .all(|b| b.part == "fusion" || b.backend == BackendKind::Onnx));
    assert!(candle
        .backends()
        .iter()
        .all(|b| b.backend == BackendKind::Candle));
    assert!(
        onnx.shares_vision(),
        "the shapes VQA reuses the captioner's vision tower"
    );
    let items = bundle_items(&candle);
    let a = onnx.infer_batch(&items).unwrap();
    let b = candle.infer_batch(&items).unwrap();
    for (x, y) in a.iter().zip(&b) {
        for (u, v) in [
            (&x.image_embedding, &y.image_embedding),
            (&x.text_embedding, &y.text_embedding),
            (&x.fused_embedding, &y.fused_embedding),
        ] {
            let d = max_abs_diff_vec(u.as_ref().unwrap(), v.as_ref().unwrap());
            assert!(d <= TOL, "embedding differs by {d}");
        }
        assert_eq!(x.caption, y.caption);
        assert_eq!(x.answer, y.answer);
        let labels = |o: &fusionstream_model::InferOutput| -> Vec<String> {
            o.tags
                .as_ref()
                .unwrap()
                .iter()
                .map(|t| t.label.clone())
                .collect()
        };
        assert_eq!(labels(x), labels(y));
    }
}

#[test]
fn the_bundle_on_onnx_int8_stays_close_to_f32() {
    if library().is_none() {
        return;
    }
    let int8 = load_bundle(BackendChoice::Onnx, Precision::Int8);
    assert!(int8.backend_summary().contains("clip onnx/int8"));
    let f32_model = load_bundle(BackendChoice::Candle, Precision::F32);
    let items = bundle_items(&f32_model);
    let a = int8.infer_batch(&items).unwrap();
    let b = f32_model.infer_batch(&items).unwrap();
    for (x, y) in a.iter().zip(&b) {
        let cos = |u: &Option<Vec<f32>>, v: &Option<Vec<f32>>| -> f32 {
            u.as_ref()
                .unwrap()
                .iter()
                .zip(v.as_ref().unwrap())
                .map(|(p, q)| p * q)
                .sum()
        };
        assert!(cos(&x.image_embedding, &y.image_embedding) > 0.98);
        assert!(cos(&x.text_embedding, &y.text_embedding) > 0.98);
        assert!(x.caption.as_ref().is_some_and(|c| !c.is_empty()));
        assert!(x.answer.as_ref().is_some_and(|c| !c.is_empty()));
    }
}

/// A copy of a tiny part in a temporary folder, to break.
fn copy_part(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny(name);
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir(tmp.path().join("onnx")).unwrap();
    for e in std::fs::read_dir(src.join("onnx")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join("onnx").join(p.file_name().unwrap())).unwrap();
    }
    tmp
}

#[test]
fn bad_graphs_are_clear_errors() {
    if library().is_none() {
        return;
    }
    // A graph whose inputs are not the ones the runtime drives.
    let part = copy_part("clip-a");
    std::fs::copy(
        part.path().join("onnx/vision.onnx"),
        part.path().join("onnx/text.onnx"),
    )
    .unwrap();
    let err = OnnxClip::load(part.path(), 3, &opts(Precision::F32))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("text.onnx") && err.contains("expected inputs"),
        "{err}"
    );
    // Bytes that are not a graph.
    std::fs::write(part.path().join("onnx/text.onnx"), b"not a graph").unwrap();
    let err = OnnxClip::load(part.path(), 3, &opts(Precision::F32))
        .unwrap_err()
        .to_string();
    assert!(err.contains("text.onnx"), "{err}");
    // A precision that was not exported.
    let part = copy_part("clip-b");
    let man = std::fs::read_to_string(part.path().join("onnx/manifest.json")).unwrap();
    std::fs::write(
        part.path().join("onnx/manifest.json"),
        man.replace("\"int8\"", "\"int8-removed\""),
    )
    .unwrap();
    let err = OnnxClip::load(part.path(), 3, &opts(Precision::Int8))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no int8 variant"), "{err}");
}

#[test]
fn backend_onnx_without_graphs_names_the_export_command() {
    if library().is_none() {
        return;
    }
    // siglip-a has no graphs: backend onnx refuses, auto falls back to candle for it.
    let o = |backend| RuntimeOptions {
        backend,
        onnx: OnnxOptions {
            library: library(),
            ..opts(Precision::F32)
        },
        ..RuntimeOptions::default()
    };
    let err = FusionModel::load(&tiny("siglip-a"), &o(BackendChoice::Onnx))
        .unwrap_err()
        .to_string();
    assert!(err.contains("SigLIP has no ONNX export"), "{err}");
    let part = copy_part("clip-a");
    std::fs::remove_dir_all(part.path().join("onnx")).unwrap();
    let err = FusionModel::load(part.path(), &o(BackendChoice::Onnx))
        .unwrap_err()
        .to_string();
    assert!(err.contains("python -m models.export_onnx"), "{err}");
    let m = FusionModel::load(part.path(), &o(BackendChoice::Auto)).unwrap();
    assert_eq!(m.backend_summary(), "clip candle/f32");
}
