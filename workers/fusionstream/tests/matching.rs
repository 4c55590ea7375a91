//! The `hash` task as a user runs it: `fusionstream run` on events that name it, the PDQ hash
//! on the event's embedding record equal to the reference implementation's
//! (`models/fixtures/pdq/reference.json`, from the `pdqhash` package) for a PNG and a JPEG,
//! records valid against the schema, and an event without an image skipping the task.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

#[test]
fn hash_events_get_the_reference_pdq_on_their_embedding_record() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let out = tmp.path().join("out");
    let lines = [
        r#"{"id": "h-png", "image": "media/scene3.png", "tasks": ["hash"]}"#,
        r#"{"id": "h-jpg", "image": "media/scene6.jpg", "tasks": ["hash", "embed"]}"#,
        r#"{"id": "h-text", "text": "a red circle", "tasks": ["hash", "embed"]}"#,
        r#"{"id": "h-none", "text": "a red circle", "tasks": ["hash"]}"#,
    ];
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_fusionstream"))
        .current_dir(common::root())
        .env("FUSIONSTREAM__TELEMETRY__PROGRESS", "never")
        .args(["run", "--events"])
        .arg(&events)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("models/fixtures/pdq/reference.json"))
            .unwrap(),
    )
    .unwrap();
    let schema = common::validator(common::schema_of_stream("embeddings"));
    let records = common::read_records(&out, "embeddings");
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["event_id"] == id)
            .unwrap_or_else(|| panic!("no embedding record for {id}"))
    };
    for r in &records {
        let errs = common::errors(&schema, r);
        assert!(errs.is_empty(), "{r}: {errs:?}");
    }
    for (id, image) in [
        ("h-png", "examples/media/scene3.png"),
        ("h-jpg", "examples/media/scene6.jpg"),
    ] {
        let want = &reference["images"][image];
        let r = by_id(id);
        assert_eq!(r["pdq"]["hash"], want["hash"], "{id}");
        assert_eq!(r["pdq"]["quality"], want["quality"], "{id}");
    }
    // Hash alone: no vectors; with embed: both.
    assert_eq!(by_id("h-png")["dim"], 0);
    assert!(by_id("h-png").get("image_embedding").is_none());
    assert!(by_id("h-jpg")["image_embedding"].is_array());
    // No image: the task is skipped (and an event that asks for nothing else is a dead
    // letter, as for any task its modalities do not allow).
    let text = by_id("h-text");
    assert!(text.get("pdq").is_none());
    assert!(text["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["task"] == "hash" && s["reason"] == "image_absent"));
    let dead = common::read_records(&out, "dead_letters");
    assert!(dead.iter().any(|d| d["event_id"] == "h-none"), "{dead:?}");
}
