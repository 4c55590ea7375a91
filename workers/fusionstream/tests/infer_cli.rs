//! `fusionstream infer` as a user runs it: the binary, a model directory, one JSON object.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use crate::common;

fn tiny(name: &str) -> PathBuf {
    common::root().join("models/fixtures/tiny").join(name)
}

fn infer(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fusionstream"))
        .arg("infer")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn prints_one_json_object_with_the_fields_that_apply() {
    let model = tiny("");
    let image = tiny("preprocess/photo.jpg");
    let (ok, stdout, stderr) = infer(&[
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--text",
        "a small red circle",
        "--question",
        "what colour is the circle ?",
        "--beam",
        "3",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for key in [
        "image_embedding",
        "text_embedding",
        "fused_embedding",
        "match_score",
        "caption",
        "answer",
        "tags",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {stdout}");
    }
    assert_eq!(v["image_embedding"].as_array().unwrap().len(), 24);
    assert_eq!(v["skipped"], serde_json::json!([]));
}

#[test]
fn text_only_reports_skipped_tasks() {
    let model = tiny("");
    let (ok, stdout, stderr) = infer(&[
        "--model",
        model.to_str().unwrap(),
        "--text",
        "a blue star",
        "--tasks",
        "embed,caption",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v.get("text_embedding").is_some() && v.get("image_embedding").is_none());
    assert!(v.get("caption").is_none());
    assert_eq!(
        v["skipped"],
        serde_json::json!([{"task": "caption", "reason": "image_absent"}])
    );
}

#[test]
fn errors_exit_non_zero_with_one_line() {
    let model = tiny("");
    let bad = std::env::temp_dir().join(format!("fs-corrupt-{}.png", std::process::id()));
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let (ok, stdout, stderr) = infer(&[
        "--model",
        model.to_str().unwrap(),
        "--image",
        bad.to_str().unwrap(),
    ]);
    std::fs::remove_file(&bad).unwrap();
    assert!(!ok);
    assert!(stdout.is_empty());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");

    let (ok, _, stderr) = infer(&["--model", "/nonexistent/model", "--text", "x"]);
    assert!(!ok && stderr.trim().lines().count() == 1, "{stderr}");
    let (ok, _, stderr) = infer(&[
        "--model",
        model.to_str().unwrap(),
        "--text",
        "x",
        "--tasks",
        "dance",
    ]);
    assert!(!ok && stderr.contains("dance"), "{stderr}");
}

/// The ONNX Runtime library of the environment, `None` (skip) only when not required.
fn ort_library() -> Option<String> {
    let lib = std::env::var("ORT_DYLIB_PATH")
        .ok()
        .filter(|v| !v.is_empty());
    if lib.is_none() {
        assert!(
            std::env::var("FUSIONSTREAM_REQUIRE_ORT").as_deref() != Ok("1"),
            "FUSIONSTREAM_REQUIRE_ORT=1 but ORT_DYLIB_PATH is not set"
        );
        eprintln!("ORT_DYLIB_PATH not set: ONNX Runtime test skipped");
    }
    lib
}

#[test]
fn the_onnx_backend_gives_the_candle_answer_and_says_so() {
    let Some(lib) = ort_library() else { return };
    let bundle = common::root().join("models/shapes");
    let image = common::root().join("examples/media/scene0.png");
    let run = |backend: &str, precision: &str| {
        let (ok, stdout, stderr) = infer(&[
            "--model",
            bundle.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "--question",
            "what colour is the cross ?",
            "--tasks",
            "caption,answer",
            "--backend",
            backend,
            "--precision",
            precision,
            "--onnxruntime-library",
            &lib,
        ]);
        assert!(ok, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        (v, stderr)
    };
    let (onnx, said) = run("onnx", "f32");
    assert!(said.contains("caption onnx/f32"), "{said}");
    assert!(said.contains("vision shared"), "{said}");
    let (candle, said) = run("candle", "f32");
    assert!(said.contains("caption candle/f32"), "{said}");
    assert_eq!(onnx["caption"], candle["caption"]);
    assert_eq!(onnx["answer"], candle["answer"]);
    let (int8, said) = run("onnx", "int8");
    assert!(said.contains("vqa onnx/int8"), "{said}");
    assert!(int8["caption"].as_str().is_some_and(|c| !c.is_empty()));
}

#[test]
fn the_library_in_the_cache_is_found_without_configuration() {
    let Some(lib) = ort_library() else { return };
    // Where scripts/fetch-onnxruntime.sh puts it, under the cache root.
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("onnxruntime/1.31.1");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&lib, dir.join("libonnxruntime.so.1.31.1")).unwrap();
    let bundle = common::root().join("models/shapes");
    let out = Command::new(env!("CARGO_BIN_EXE_fusionstream"))
        .args(["infer", "--model", bundle.to_str().unwrap()])
        .args(["--text", "a red circle", "--precision", "int8"])
        .env_remove("ORT_DYLIB_PATH")
        .env("FUSIONSTREAM_CACHE", cache.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    // `auto` took ONNX Runtime, and says where the library came from.
    assert!(stderr.contains("clip onnx/int8"), "{stderr}");
    assert!(
        stderr.contains("fetch-onnxruntime") && stderr.contains(dir.to_str().unwrap()),
        "{stderr}"
    );
}

#[test]
fn a_bad_onnx_runtime_library_is_one_clear_line() {
    let model = tiny("clip-a");
    let not_a_library = std::env::temp_dir().join(format!("fs-not-ort-{}.so", std::process::id()));
    std::fs::write(&not_a_library, b"not a shared library").unwrap();
    for (lib, want) in [
        ("/nonexistent/libonnxruntime.so", "not found"),
        (not_a_library.to_str().unwrap(), "failed to load"),
    ] {
        let (ok, stdout, stderr) = infer(&[
            "--model",
            model.to_str().unwrap(),
            "--text",
            "a red circle",
            "--backend",
            "onnx",
            "--onnxruntime-library",
            lib,
        ]);
        assert!(!ok && stdout.is_empty());
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(want) && stderr.contains(lib),
            "{lib}: {stderr}"
        );
    }
    std::fs::remove_file(&not_a_library).unwrap();
    // Backend onnx with no library configured and none in the cache: the error says where it
    // looked and how to get one.
    let empty_cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fusionstream"))
        .args(["infer", "--model", model.to_str().unwrap(), "--text", "x"])
        .args(["--backend", "onnx"])
        .env_remove("ORT_DYLIB_PATH")
        .env("FUSIONSTREAM_CACHE", empty_cache.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success()
            && stderr.contains("ORT_DYLIB_PATH")
            && stderr.contains("scripts/fetch-onnxruntime.sh"),
        "{stderr}"
    );
}
