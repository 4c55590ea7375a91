//! `fusionstream run` as a user runs it: the embedded default from the repository root,
//! SIGTERM in the middle of a stream (exit 0, drained, resumed with nothing lost),
//! invalid configuration refused with every error listed, a corrupt checkpoint refused with
//! what to do, and a model bundle fetched from
//! S3 (the dev MinIO) once and then served from the cache.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ids_in(out: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for s in ["captions", "answers", "embeddings", "tags", "dead_letters"] {
        let text = std::fs::read_to_string(out.join(format!("{s}.jsonl"))).unwrap_or_default();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(id) = v["event_id"].as_str() {
                ids.insert(id.to_owned());
            }
        }
    }
    ids
}

#[test]
fn embedded_default_runs_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = common::bin()
        .args(["run", "--out"])
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("fusionstream run: completed"), "{stderr}");
    // model.warm_up = "auto": only on a GPU.
    assert!(!stderr.contains("model warmed up"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["finished"], 36);
    assert_eq!(summary["read"], 36);
    assert_eq!(summary["dead_lettered"], 13);
    assert_eq!(summary["degraded"], 9);
    for s in ["captions", "answers", "embeddings", "tags", "dead_letters"] {
        assert!(out.join(format!("{s}.jsonl")).is_file(), "{s} missing");
    }
    assert!(out.join("checkpoint.json").is_file());
    // Again: nothing new. With --fresh: everything again.
    let again = common::bin()
        .args(["run", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(s["read"], 0);
    let fresh = common::bin()
        .args(["run", "--fresh", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&fresh.stdout).unwrap();
    assert_eq!(s["read"], 36);
    let captions = std::fs::read_to_string(out.join("captions.jsonl")).unwrap();
    assert_eq!(
        captions.lines().count(),
        10,
        "--fresh starts the outputs over"
    );
}

#[test]
fn warm_up_runs_before_the_events_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let run = common::bin()
        .env("FUSIONSTREAM__MODEL__WARM_UP", "always")
        .args(["run", "--json", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let warmed = stderr.find("model warmed up").expect(&stderr);
    assert!(warmed < stderr.find("completed").unwrap(), "{stderr}");
    let s: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(s["finished"], 36, "the warm-up item is not an event");
    assert_eq!(s["dead_lettered"], 13);
}

#[cfg(unix)]
#[test]
fn sigterm_drains_exits_zero_and_the_rerun_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let out = tmp.path().join("out");
    let n = 400;
    let mut body = String::new();
    for i in 0..n {
        let line = serde_json::json!({
            "id": format!("ev-{i:04}"),
            "image": format!("media/scene{}.png", i % 6),
            "text": "a small red circle at the top",
            "tasks": ["caption", "embed"],
        });
        body.push_str(&format!("{line}\n"));
    }
    std::fs::write(&events, body).unwrap();
    let child = common::bin()
        .args(["run", "--events"])
        .arg(&events)
        .arg("--out")
        .arg(&out)
        .env("FUSIONSTREAM__GENERATE_LANE__MAX_ITEMS", "1")
        .env("FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT", "8")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first outputs, then ask it to stop.
    let start = Instant::now();
    while std::fs::read_to_string(out.join("captions.jsonl"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 10
    {
        assert!(start.elapsed() < Duration::from_secs(120), "no output");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "exit {:?}: {stderr}",
        result.status
    );
    assert!(stderr.contains("stopped (drained)"), "{stderr}");
    let first = ids_in(&out);
    assert!(
        first.len() < n,
        "the stream was stopped in the middle ({} done)",
        first.len()
    );
    let cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint.json")).unwrap())
            .unwrap();
    let committed = cp["positions"][events.display().to_string()]
        .as_u64()
        .unwrap();
    assert!(committed as usize <= first.len());

    let rerun = common::bin()
        .args(["run", "--json", "--events"])
        .arg(&events)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(rerun.status.success());
    let s: serde_json::Value = serde_json::from_slice(&rerun.stdout).unwrap();
    assert_eq!(s["read"].as_u64().unwrap(), n as u64 - committed);
    let all = ids_in(&out);
    let missing: Vec<String> = (0..n)
        .map(|i| format!("ev-{i:04}"))
        .filter(|id| !all.contains(id))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
}

#[test]
fn invalid_configuration_is_refused_with_every_error() {
    let r = common::bin()
        .args(["run"])
        .env("FUSIONSTREAM__ENCODE_LANE__MAX_ITEMS", "0")
        .env("FUSIONSTREAM__MODEL__DTYPE", "f8")
        .env("FUSIONSTREAM__MEDIA__TIMEOUT", "whenever")
        .output()
        .unwrap();
    assert!(!r.status.success());
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(stderr.contains("invalid configuration"), "{stderr}");
    // The type error of [media] and the value errors are reported together.
    assert!(stderr.contains("whenever"), "{stderr}");
    let c = common::bin().args(["config"]).output().unwrap();
    assert!(c.status.success());
    let text = String::from_utf8_lossy(&c.stdout);
    assert!(
        text.contains("[encode_lane]") && text.contains("max_wait = \"10ms\""),
        "{text}"
    );
}

/// A corrupt position checkpoint is refused at start with what to do, nothing is processed,
/// and `--fresh` starts over.
#[test]
fn a_corrupt_checkpoint_is_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("checkpoint.json"),
        b"{\"version\": 1, \"positions\": {\"a\": -",
    )
    .unwrap();
    let r = common::bin()
        .args(["run", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{stderr}");
    assert!(
        stderr.contains("checkpoint") && stderr.contains("--fresh"),
        "{stderr}"
    );
    assert!(ids_in(&out).is_empty(), "nothing processed");
    let fresh = common::bin()
        .args(["run", "--fresh", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&fresh.stdout).unwrap();
    assert_eq!(
        summary["finished"], 36,
        "every example event, from the start"
    );
}

/// `model.bundle = "s3://…"`: the bundle is downloaded from MinIO into the cache once; the
/// run's outputs match the transformers reference; a second run uses the cached copy
/// without reaching S3 (its endpoint points nowhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_from_s3_is_downloaded_once_and_cached() {
    let Some(endpoint) = common::s3_endpoint() else {
        return;
    };
    let s3 = common::s3_client(&endpoint);
    let bucket = format!("bundles-{}", std::process::id());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let src = common::root().join("models/shapes");
    let mut files = vec![];
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    for f in &files {
        let key = format!(
            "shapes/1.2.0/{}",
            f.strip_prefix(&src).unwrap().to_string_lossy()
        );
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(
                std::fs::read(f).unwrap(),
            ))
            .send()
            .await
            .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let run = |endpoint: &str, out: &str| {
        common::bin()
            .args(["run", "--fresh", "--out"])
            .arg(tmp.path().join(out))
            .env(
                "FUSIONSTREAM__MODEL__BUNDLE",
                format!("s3://{bucket}/shapes/1.2.0"),
            )
            .env("FUSIONSTREAM__MODEL__CACHE_DIR", &cache)
            .env("FUSIONSTREAM__S3__ENDPOINT", endpoint)
            .env("FUSIONSTREAM__S3__FORCE_PATH_STYLE", "true")
            .output()
            .unwrap()
    };
    let first = run(&endpoint, "out1");
    let log = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{log}");
    assert!(log.contains("model bundle from S3 (downloaded)"), "{log}");
    let cached = cache.join(&bucket).join("shapes/1.2.0");
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        assert_eq!(
            std::fs::read(cached.join(rel)).unwrap(),
            std::fs::read(f).unwrap(),
            "{}",
            rel.display()
        );
    }
    let second = run("http://127.0.0.1:9", "out2");
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{log}");
    assert!(log.contains("model bundle from S3 (cached copy)"), "{log}");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("models/fixtures/shapes/reference.json"))
            .unwrap(),
    )
    .unwrap();
    for out in ["out1", "out2"] {
        let captions =
            std::fs::read_to_string(tmp.path().join(out).join("captions.jsonl")).unwrap();
        let full0: serde_json::Value = captions
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["event_id"] == "full-0")
            .unwrap();
        assert_eq!(full0["caption"], reference["caption_greedy"][0], "{out}");
    }
}
