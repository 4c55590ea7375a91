//! Matching as a user runs it: the `hash` task through `fusionstream run` (the PDQ hash on the
//! event's embedding record equal to the reference implementation's,
//! `models/fixtures/pdq/reference.json` from the `pdqhash` package, for a PNG and a JPEG;
//! records valid against the schema; an event without an image skipping the task), and
//! known-hash lists matched by `moderate` in-process on the real packs (a listed image and its
//! copies blocked, another image not). The packs test needs `scripts/fetch-packs.sh`, like
//! `moderation.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;

use common::in_process;
use fusionstream::config::Overrides;
use serde_json::Value;

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
    let run = common::bin()
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

/// `[matching]`: an image on a known-hash list is blocked by the `list:` rule, and so are its
/// mirrored and halved copies (through the 8 dihedral hashes); another image is not. The
/// list holds the reference implementation's hash of the image
/// (`models/fixtures/pdq/reference.json`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_on_a_known_hash_list_are_blocked_with_their_copies() {
    if !common::packs_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let root = common::root();
    for (from, to) in [
        ("models/fixtures/nsfw/smooth-1.jpg", "listed.jpg"),
        ("models/fixtures/pdq/images/copy-mirror.jpg", "mirror.jpg"),
        ("models/fixtures/pdq/images/copy-half.jpg", "half.jpg"),
        ("examples/media/scene0.png", "other.png"),
    ] {
        std::fs::copy(root.join(from), media.join(to)).unwrap();
    }
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("models/fixtures/pdq/reference.json")).unwrap(),
    )
    .unwrap();
    let hash = reference["images"]["models/fixtures/nsfw/smooth-1.jpg"]["hash"]
        .as_str()
        .unwrap();
    let list = tmp.path().join("known.txt");
    std::fs::write(&list, format!("# test list\n{hash} case-7 test label\n")).unwrap();
    let events = tmp.path().join("events.jsonl");
    let lines: Vec<String> = ["listed.jpg", "mirror.jpg", "half.jpg", "other.png"]
        .iter()
        .map(|f| format!(r#"{{"id": "{f}", "image": "{f}", "tasks": ["moderate"]}}"#))
        .collect();
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let extra = tmp.path().join("matching.toml");
    std::fs::write(
        &extra,
        format!(
            "[matching.hash_lists.known]\npath = {:?}\naction = \"block\"\n",
            list.display().to_string()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let recs = moderate_in_process(&out, &media, &events, extra).await;
    let by_id: BTreeMap<&str, &Value> = recs
        .iter()
        .map(|r| (r["event_id"].as_str().unwrap(), r))
        .collect();
    for id in ["listed.jpg", "mirror.jpg", "half.jpg"] {
        let r = by_id[id];
        assert_eq!(r["decision"], "block", "{id}: {r}");
        let m = &r["signals"]["matches"][0];
        assert_eq!(
            (m["list"].as_str(), m["item"].as_str()),
            (Some("known"), Some("case-7"))
        );
        assert_eq!(m["label"], "test label");
        assert!(m["distance"].as_u64().unwrap() <= 31, "{id}: {m}");
        assert!(r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| rule["rule"] == "list:known"));
    }
    assert_eq!(by_id["listed.jpg"]["signals"]["matches"][0]["distance"], 0);
    let other = by_id["other.png"];
    assert!(other["signals"].get("matches").is_none(), "{other}");
}

/// `[matching]` with both kinds of list holding one shapes scene: the scene and its copies
/// cropped by 5%, halved, re-encoded as JPEG and mirrored are all found (by the embedding
/// list, the crop at cosine ~0.99; the hash list finds the scene itself, not the crop), and
/// the seven other scenes by neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_a_listed_image_are_found_by_its_hash_or_its_embedding() {
    if !common::packs_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let scenes = common::root().join("models/fixtures/shapes/images");
    let listed = image::open(scenes.join("scene3.png")).unwrap().to_rgb8();
    let (w, h) = listed.dimensions();
    let (dx, dy) = (w * 25 / 1000, h * 25 / 1000);
    let crop = image::imageops::crop_imm(&listed, dx, dy, w - 2 * dx, h - 2 * dy).to_image();
    let half =
        image::imageops::resize(&listed, w / 2, h / 2, image::imageops::FilterType::Triangle);
    let mirror = image::imageops::flip_horizontal(&listed);
    listed.save(media.join("listed.png")).unwrap();
    crop.save(media.join("crop.png")).unwrap();
    half.save(media.join("half.png")).unwrap();
    mirror.save(media.join("mirror.png")).unwrap();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 50)
        .encode_image(&listed)
        .unwrap();
    std::fs::write(media.join("jpeg.jpg"), jpeg).unwrap();
    let others: Vec<String> = [0, 1, 2, 4, 5, 6, 7]
        .iter()
        .map(|i| format!("scene{i}.png"))
        .collect();
    for o in &others {
        std::fs::copy(scenes.join(o), media.join(o)).unwrap();
    }

    // The lists: the scene's PDQ hash, and its embedding by the shipped bundle.
    let bytes = std::fs::read(media.join("listed.png")).unwrap();
    let rgb =
        fusionstream_model::preprocess::decode_like_pillow(&bytes, &Default::default()).unwrap();
    let pdq = fusionstream_model::pdq::hash_image(&rgb);
    let model = common::bundle_model();
    let mut tasks = fusionstream_core::task::TaskSet::default();
    tasks.insert(fusionstream_core::task::Task::Embed);
    let item = model.prepare(Some(&bytes), None, None, tasks).unwrap();
    let embedding = model
        .infer_batch(&[item])
        .unwrap()
        .remove(0)
        .image_embedding
        .unwrap();
    let hashes = tmp.path().join("hashes.txt");
    std::fs::write(
        &hashes,
        format!("{} scene-3 listed scene\n", pdq.hash.to_hex()),
    )
    .unwrap();
    let removed = tmp.path().join("removed.jsonl");
    std::fs::write(
        &removed,
        format!(
            "{}\n",
            serde_json::json!({"item": "scene-3", "label": "removed", "embedding": embedding})
        ),
    )
    .unwrap();
    let extra = tmp.path().join("matching.toml");
    std::fs::write(
        &extra,
        format!(
            "[matching.hash_lists.pdq]\npath = {:?}\naction = \"block\"\n\
             [matching.embedding_lists.removed]\npath = {:?}\naction = \"review\"\n",
            hashes.display().to_string(),
            removed.display().to_string()
        ),
    )
    .unwrap();
    let copies = [
        "listed.png",
        "crop.png",
        "half.png",
        "jpeg.jpg",
        "mirror.png",
    ];
    let lines: Vec<String> = copies
        .iter()
        .map(|s| s.to_string())
        .chain(others.iter().cloned())
        .map(|f| format!(r#"{{"id": "{f}", "image": "{f}", "tasks": ["moderate"]}}"#))
        .collect();
    let events = tmp.path().join("events.jsonl");
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let out = tmp.path().join("out");
    let recs = moderate_in_process(&out, &media, &events, extra).await;
    let by_id: BTreeMap<&str, &Value> = recs
        .iter()
        .map(|r| (r["event_id"].as_str().unwrap(), r))
        .collect();
    let similarity = |id: &str| {
        by_id[id]["signals"]["embedding_matches"]
            .get(0)
            .and_then(|m| m["similarity"].as_f64())
    };
    let hash_hit = |id: &str| by_id[id]["signals"].get("matches").is_some();
    for id in copies {
        eprintln!(
            "{id}: similarity {:?}, hash match {}",
            similarity(id),
            hash_hit(id)
        );
        assert!(
            similarity(id).is_some() || hash_hit(id),
            "{id} found by neither list: {}",
            by_id[id]
        );
        let rules: Vec<&str> = by_id[id]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["rule"].as_str())
            .collect();
        assert!(
            rules.iter().any(|r| r.starts_with("list:")),
            "{id}: {rules:?}"
        );
    }
    assert!(
        similarity("crop.png").is_some(),
        "the embedding list finds the crop"
    );
    assert!(
        !hash_hit("crop.png"),
        "PDQ does not (it is not what this test measures, but it is why embedding lists exist)"
    );
    assert_eq!(by_id["listed.png"]["decision"], "block");
    let m = &by_id["crop.png"]["signals"]["embedding_matches"][0];
    assert_eq!(
        (m["list"].as_str(), m["item"].as_str(), m["label"].as_str()),
        (Some("removed"), Some("scene-3"), Some("removed"))
    );
    for o in &others {
        let r = by_id[o.as_str()];
        assert!(
            similarity(o).is_none() && !hash_hit(o),
            "{o} is another scene: {r}"
        );
        assert!(
            !r["rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["rule"].as_str().is_some_and(|n| n.starts_with("list:"))),
            "{o}: {r}"
        );
    }
    // No embeddings record: the events asked for `moderate` only.
    assert!(common::read_records(&out, "embeddings").is_empty());
}

/// Run the example moderation policy with `extra` layered on, in process, on `events` with
/// `media` as the media root; the validated moderation records.
async fn moderate_in_process(
    out: &std::path::Path,
    media: &std::path::Path,
    events: &std::path::Path,
    extra: std::path::PathBuf,
) -> Vec<Value> {
    let (out_s, media_s, events_s) = (
        out.display().to_string(),
        media.display().to_string(),
        events.display().to_string(),
    );
    let checkpoint = format!("{out_s}/checkpoint.json");
    let c = in_process::config(
        &[common::root().join("config/moderation.toml"), extra],
        &[
            ("FUSIONSTREAM__SINK__DIR", out_s.as_str()),
            ("FUSIONSTREAM__CHECKPOINT__PATH", checkpoint.as_str()),
            ("FUSIONSTREAM__MEDIA__ROOT", media_s.as_str()),
            ("FUSIONSTREAM__SOURCE__PATH", events_s.as_str()),
        ],
        &Overrides::default(),
    );
    let summary = in_process::start(c).finish().await;
    assert_eq!(summary.end, "completed");
    common::validated_records(out, "moderation")
}
