//! `fusionstream infer` as a user runs it: the binary, a model directory, one JSON object.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

mod common;

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
