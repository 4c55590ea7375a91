//! The photo packs end to end (`config/photos.toml` over `examples/photos/`, in-process):
//! - tags records valid against `tags.schema.json`, with the `imagenet` pack's labels
//!   (`source: "imagenet"`, at most `top_k`, at least `min_score`, most probable first) beside
//!   the bundle's: the cat a cat, the coffee an espresso, the rocket a missile or projectile;
//! - embeddings records with the unit-length 1280-d `photo_embedding`, equal to the pack's own
//!   embedding of that image, and the listed photos' vectors in `known-photos.jsonl` equal to
//!   this run's (the list is the worker's own output);
//! - moderation through the list of known photo embeddings: the crop, the mirror image and the
//!   half-size copy of listed photos matched (rule `list:known-photos`, review), the unrelated
//!   photos not; and through a category of image labels: the rocket launch a "missile" to
//!   ImageNet (rule `label:weapons`, review), the astronaut allowed;
//! - a configuration naming a photo pack that is not installed stops with the install command.
//!
//! Needs the packs (`scripts/fetch-packs.sh`); the test command sets
//! `FUSIONSTREAM_REQUIRE_PACKS=1`, so that they fail, not skip, without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::in_process;
use fusionstream::config::Overrides;
use serde_json::Value;

fn photos_config() -> PathBuf {
    common::root().join("config/photos.toml")
}

/// Whether the photo packs are installed (panics when required and missing).
fn photo_packs_installed() -> bool {
    let dir = fusionstream_model::moderation::default_packs_dir();
    let ok = ["imagenet", "photo_embedding"]
        .iter()
        .all(|p| dir.join(p).join("pack.toml").is_file());
    if !ok {
        assert!(
            std::env::var("FUSIONSTREAM_REQUIRE_PACKS").as_deref() != Ok("1"),
            "FUSIONSTREAM_REQUIRE_PACKS=1 but the photo packs under {} are missing: run \
             scripts/fetch-packs.sh",
            dir.display()
        );
        eprintln!("skipped: no photo packs (scripts/fetch-packs.sh)");
    }
    ok
}

fn by_id(records: Vec<Value>) -> BTreeMap<String, Value> {
    records
        .into_iter()
        .map(|r| (r["event_id"].as_str().unwrap().to_owned(), r))
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The imagenet labels of a tags record, most probable first.
fn pack_labels(r: &Value) -> Vec<(String, f64)> {
    r["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["source"] == "imagenet")
        .map(|t| {
            (
                t["label"].as_str().unwrap().to_owned(),
                t["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_photo_example_tags_embeds_and_finds_copies() {
    if !photo_packs_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap().to_owned();
    let checkpoint = format!("{out}/checkpoint.json");
    let c = in_process::config(
        &[photos_config()],
        &[
            ("FUSIONSTREAM__SINK__DIR", out.as_str()),
            ("FUSIONSTREAM__CHECKPOINT__PATH", checkpoint.as_str()),
        ],
        &Overrides::default(),
    );
    let summary = in_process::start(c).finish().await;
    assert_eq!(summary.end, "completed");
    assert_eq!(summary.stats.read, 10);
    assert_eq!(summary.stats.dead_lettered, 0);

    check_tags(tmp.path());
    check_embeddings(tmp.path());
    check_moderation(tmp.path());
}

/// Tags: the pack's labels beside the bundle's, within top_k and min_score, ordered; the
/// expected top labels.
fn check_tags(out: &std::path::Path) {
    let tags = by_id(common::validated_records(out, "tags"));
    assert_eq!(tags.len(), 8, "{:?}", tags.keys());
    for (id, r) in &tags {
        let labels = pack_labels(r);
        assert!(!labels.is_empty() && labels.len() <= 3, "{id}: {labels:?}");
        assert!(labels.iter().all(|(_, s)| *s >= 0.05), "{id}: {labels:?}");
        assert!(
            labels.windows(2).all(|w| w[0].1 >= w[1].1),
            "{id}: {labels:?}"
        );
        assert!(
            r["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["source"] == "image"),
            "{id}: the bundle's own tags are kept"
        );
    }
    let top = |id: &str| pack_labels(&tags[id])[0].0.clone();
    for (id, expected) in [
        ("chelsea", &["tabby", "tiger cat", "Egyptian cat"][..]),
        ("chelsea-crop", &["tabby", "tiger cat", "Egyptian cat"][..]),
        ("coffee", &["espresso"][..]),
        ("coffee-small", &["espresso"][..]),
        ("rocket", &["missile", "projectile", "space shuttle"][..]),
    ] {
        assert!(expected.contains(&top(id).as_str()), "{id}: {}", top(id));
    }
}

/// Embeddings: the pack's unit vector, the same as the pack computes on its own; the
/// committed list is this run's output for the listed photos.
fn check_embeddings(out: &std::path::Path) {
    let emb = by_id(common::validated_records(out, "embeddings"));
    assert_eq!(emb.len(), 5);
    let dir = fusionstream_model::moderation::default_packs_dir().join("photo_embedding");
    let pack = fusionstream_model::packs::photo_embedding::PhotoEmbedder::load(
        &dir,
        &fusionstream_model::Device::Cpu,
    )
    .unwrap();
    for (id, file) in [("chelsea", "chelsea.png"), ("rocket", "rocket.jpg")] {
        let v = floats(&emb[id]["photo_embedding"]);
        assert_eq!(v.len(), 1280);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{id}: |v| = {norm}");
        let bytes = std::fs::read(common::root().join("examples/photos").join(file)).unwrap();
        let img = pack
            .decode(
                &bytes,
                &fusionstream_model::preprocess::ImageLimits::default(),
            )
            .unwrap();
        let own = pack.embed(&[pack.prepare(&img)]).unwrap().remove(0);
        assert!(max_diff(&v, &own) < 1e-5, "{id}");
    }
    // The committed list is this run's output for the listed photos.
    let list =
        std::fs::read_to_string(common::root().join("examples/photos/known-photos.jsonl")).unwrap();
    let listed: Vec<Value> = list
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    for l in &listed {
        let id = l["event_id"].as_str().unwrap();
        let d = max_diff(
            &floats(&l["photo_embedding"]),
            &floats(&emb[id]["photo_embedding"]),
        );
        assert!(d < 1e-5, "{id}: the list is stale ({d})");
    }
}

/// Moderation by the list (copies found, unrelated photos not) and by the image labels.
fn check_moderation(out: &std::path::Path) {
    let moderation = by_id(common::validated_records(out, "moderation"));
    assert_eq!(moderation.len(), 5);
    for (id, listed_as) in [
        ("chelsea-crop", Some("chelsea")),
        ("chelsea-mirror", Some("chelsea")),
        ("coffee-small", Some("coffee")),
        ("rocket-unlisted", None),
        ("astronaut-unlisted", None),
    ] {
        let r = &moderation[id];
        let matches = r["signals"]["embedding_matches"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let rules: Vec<&str> = r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["rule"].as_str().unwrap())
            .collect();
        match listed_as {
            Some(item) => {
                assert_eq!(r["decision"], "review", "{id}: {r}");
                assert_eq!(matches[0]["item"], item, "{id}");
                assert_eq!(matches[0]["list"], "known-photos");
                assert!(matches[0]["similarity"].as_f64().unwrap() >= 0.9, "{id}");
                assert_eq!(rules, ["list:known-photos"], "{id}");
            }
            None => assert!(matches.is_empty(), "{id}: {matches:?}"),
        }
    }
    // The labels of the image are signals when a category names labels.
    let rocket = &moderation["rocket-unlisted"];
    assert_eq!(rocket["decision"], "review", "{rocket}");
    assert_eq!(rocket["rules"][0]["rule"], "label:weapons", "{rocket}");
    let labels = rocket["signals"]["image_labels"].as_array().unwrap();
    assert!(labels
        .iter()
        .any(|l| l["label"] == "missile" && l["source"] == "imagenet"));
    assert_eq!(moderation["astronaut-unlisted"]["decision"], "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_pack_that_is_not_installed_stops_the_start_with_the_install_command() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap().to_owned();
    let packs = tmp.path().join("no-packs");
    std::fs::create_dir_all(&packs).unwrap();
    let c = in_process::config(
        &[],
        &[
            ("FUSIONSTREAM__SINK__DIR", out.as_str()),
            (
                "FUSIONSTREAM__MODERATION__PACKS_DIR",
                packs.to_str().unwrap(),
            ),
            ("FUSIONSTREAM__TAGS__PACKS", "[\"imagenet\"]"),
        ],
        &Overrides::default(),
    );
    let err = fusionstream::app::run(&c, tokio_util::sync::CancellationToken::new(), None)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("scripts/fetch-packs.sh imagenet") && msg.contains("[tags]"),
        "{msg}"
    );
}
