//! Scheduling as a user sees it: high-priority events overtake a backlog of normal ones (and
//! do not with `scheduler.mode = "fifo"`, the control that shows the test can fail); an
//! event's embedding goes out before its caption while the caption is still being generated;
//! and through a real Kafka broker, a worker killed with SIGKILL between the two loses
//! nothing (the replay publishes both again: duplicates allowed, the offset committed only
//! once the caption is acknowledged).
//!
//! Without `FUSIONSTREAM_TEST_KAFKA` the Kafka test says so and passes, unless
//! `FUSIONSTREAM_REQUIRE_SERVICES=1` (set by `.ci/run`), where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::kafka::*;

fn caption_event(id: &str, i: usize, priority: Option<&str>) -> String {
    let mut v = serde_json::json!({
        "id": id,
        "image": format!("media/scene{}.png", i % 6),
        "tasks": ["caption"],
    });
    if let Some(p) = priority {
        v["priority"] = p.into();
    }
    v.to_string()
}

/// Run `events` with the scheduler `mode`, every event read at once and one caption per
/// batch; the order in which the captions were published.
fn caption_order(dir: &Path, events: &[String], mode: &str) -> Vec<String> {
    let file = dir.join(format!("{mode}.jsonl"));
    std::fs::write(&file, events.join("\n") + "\n").unwrap();
    let out = dir.join(format!("out-{mode}"));
    let run = common::bin()
        .args(["run", "--events"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .env("FUSIONSTREAM__SCHEDULER__MODE", mode)
        .env("FUSIONSTREAM__GENERATE_LANE__MAX_ITEMS", "1")
        .env("FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT", "256")
        .env("FUSIONSTREAM__PIPELINE__MIN_IN_FLIGHT", "256")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    common::read_records(&out, "captions")
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn high_priority_events_overtake_a_backlog() {
    let tmp = tempfile::tempdir().unwrap();
    // 120 normal events, then 6 high-priority ones at the end of the input.
    let mut events: Vec<String> = (0..120)
        .map(|i| caption_event(&format!("n-{i:03}"), i, None))
        .collect();
    events.extend((0..6).map(|i| caption_event(&format!("h-{i}"), i, Some("high"))));
    let rank = |order: &[String]| -> Vec<usize> {
        order
            .iter()
            .enumerate()
            .filter(|(_, id)| id.starts_with("h-"))
            .map(|(i, _)| i)
            .collect()
    };
    let scheduled = caption_order(tmp.path(), &events, "priority");
    let fifo = caption_order(tmp.path(), &events, "fifo");
    assert_eq!(scheduled.len(), 126);
    assert_eq!(fifo.len(), 126);
    let (s, f) = (rank(&scheduled), rank(&fifo));
    eprintln!("high-priority captions at {s:?} (priority) and {f:?} (fifo) of 126");
    // Read last, published among the first half; in FIFO order (events are preprocessed
    // concurrently, so not exactly the read order), mostly among the last ones.
    assert!(s.iter().all(|i| *i < 63), "priority: {s:?}");
    assert!(f.iter().filter(|i| **i >= 100).count() >= 4, "fifo: {f:?}");
}

#[test]
fn an_embedding_goes_out_before_the_caption_of_its_event() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    let out = tmp.path().join("out");
    let event = serde_json::json!({
        "id": "early@fault:slow-generate-4",
        "image": "media/scene1.png",
        "text": "a small red circle",
        "tasks": ["caption", "embed"],
    });
    std::fs::write(&file, format!("{event}\n")).unwrap();
    let mut child = common::bin()
        .args(["run", "--events"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .env("FUSIONSTREAM_TEST_FAULTS", "1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while common::read_records(&out, "embeddings").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "no embedding");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The caption is still being generated (the injected 4 s) and nothing is committed.
    assert!(common::read_records(&out, "captions").is_empty());
    if let Ok(text) = std::fs::read_to_string(out.join("checkpoint.json")) {
        let cp: serde_json::Value = serde_json::from_str(&text).unwrap();
        let next = cp["positions"][file.display().to_string()].as_u64();
        assert_eq!(next.unwrap_or(0), 0, "committed before the caption: {cp}");
    }
    assert!(child.wait().unwrap().success());
    let captions = common::read_records(&out, "captions");
    assert_eq!(captions.len(), 1);
    let embedding = &common::read_records(&out, "embeddings")[0];
    assert!(
        embedding["timings"]["total_ms"].as_f64().unwrap() + 3000.0
            < captions[0]["timings"]["total_ms"].as_f64().unwrap(),
        "{embedding} / {}",
        captions[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_an_embedding_and_its_caption_loses_nothing() {
    let Some(broker) = broker() else { return };
    let _serial = SERIAL.lock().await;
    let t = topics("per-stream");
    create(&broker, &t).await;
    let slow = serde_json::json!({
        "id": "slow@fault:slow-generate-600",
        "image": "media/scene2.png",
        "text": "a blue square",
        "tasks": ["caption", "embed"],
    })
    .to_string();
    let others = caption_events(5);
    let n = others.len() + 1;
    // The slow event alone first: its embedding and caption reach the scheduler together and
    // the embedding, due first, runs first. (Produced with the others, a caption batch that
    // was ready while the slow event's embedding still lingered took its caption along, and
    // the model slept before the embedding ran.)
    produce(&broker, &t.input, &[slow]);
    let mut w = worker(&broker, &t, &[("FUSIONSTREAM_TEST_FAULTS", "1")]);
    let has = |recs: &[(String, serde_json::Value, _)], stream: &str, id: &str| {
        recs.iter()
            .filter(|r| r.0 == stream && r.1["event_id"] == id)
            .count()
    };
    // The slow event's embedding is on its topic while its caption is being generated (the
    // model thread is asleep in its batch: the other events' captions may wait behind it).
    wait_for(
        || {
            has(
                &read_outputs(&broker, &t),
                "embeddings",
                "slow@fault:slow-generate-600",
            ) == 1
        },
        "the slow event's embedding",
        180,
    );
    // The others wait behind the sleeping caption batch.
    produce(&broker, &t.input, &others);
    let recs = read_outputs(&broker, &t);
    assert_eq!(has(&recs, "captions", "slow@fault:slow-generate-600"), 0);
    // Its position is not committed: the caption is not acknowledged.
    std::thread::sleep(Duration::from_secs(2));
    assert!(committed(&broker, &t) < n as i64, "{}", w.log());
    w.kill();

    let w = worker(&broker, &t, &[]);
    wait_for(
        || committed(&broker, &t) >= n as i64,
        "all offsets committed",
        180,
    );
    stop(w);
    let recs = read_outputs(&broker, &t);
    assert_eq!(has(&recs, "captions", "slow@fault:slow-generate-600"), 1);
    // Published before the kill and again by the replay.
    assert_eq!(has(&recs, "embeddings", "slow@fault:slow-generate-600"), 2);
    assert_every_caption(&broker, &t, 5);
}
