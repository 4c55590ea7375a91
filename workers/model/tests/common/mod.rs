//! Helpers shared by the model tests: fixture paths and tensor comparisons.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// This crate's folder as cargo gives it to the running test. Not `env!`: a test binary that
/// cargo reuses from a build of another checkout (a shared target dir) would read that
/// checkout's files, or fail where it is gone.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

pub fn tiny(name: &str) -> PathBuf {
    manifest_dir().join("../../models/fixtures/tiny").join(name)
}

/// The trained "shapes" bundle (`models/shapes`), or one of its parts.
pub fn shapes_bundle(part: &str) -> PathBuf {
    manifest_dir().join("../../models/shapes").join(part)
}

/// The shapes bundle's fixtures (`models/tools/make_bundle_fixtures.py`).
pub fn shapes_fixtures() -> PathBuf {
    manifest_dir().join("../../models/fixtures/shapes")
}

/// The shapes fixtures' tensors and JSON.
pub fn shapes_reference() -> (HashMap<String, Tensor>, serde_json::Value) {
    let t = candle_core::safetensors::load(
        shapes_fixtures().join("reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let j = serde_json::from_str(
        &std::fs::read_to_string(shapes_fixtures().join("reference.json")).unwrap(),
    )
    .unwrap();
    (t, j)
}

pub fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(tiny(name).join("reference.safetensors"), &Device::Cpu).unwrap()
}

pub fn reference_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(tiny(name).join("reference.json")).unwrap())
        .unwrap()
}

/// A JSON array of strings.
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

pub fn ids(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = b
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
}

pub fn max_abs_diff_vec(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The folder of the installed pack `name`.
pub fn pack_dir(name: &str) -> PathBuf {
    std::env::var_os("FUSIONSTREAM_PACKS")
        .map_or_else(
            || PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/fusionstream/packs"),
            PathBuf::from,
        )
        .join(name)
}

/// Whether a pack is there; panics when it is not and the test command requires packs.
pub fn installed(dir: &std::path::Path) -> bool {
    if dir.join("pack.toml").is_file() {
        return true;
    }
    assert!(
        std::env::var("FUSIONSTREAM_REQUIRE_PACKS").as_deref() != Ok("1"),
        "FUSIONSTREAM_REQUIRE_PACKS=1 but the pack {} is missing: run scripts/fetch-packs.sh",
        dir.display()
    );
    eprintln!(
        "skipped: no pack {} (scripts/fetch-packs.sh)",
        dir.display()
    );
    false
}
