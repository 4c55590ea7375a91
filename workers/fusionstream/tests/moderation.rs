//! The `moderate` task end to end, on the real packs (open_nsfw and PP-OCR on ONNX Runtime,
//! MiniLM on candle; `scripts/fetch-packs.sh`):
//! - `config/moderation.toml` over `examples/moderation/` in-process: one record per moderated
//!   event, valid against `moderation.schema.json`, whose decision and rules follow the
//!   thresholds of the file (recomputed here from the record's signals, independently of the
//!   crate's policy code), with the tenant override applied to the tenant's event, the exact
//!   term found (in the event's text, and in the text read in a sign by the OCR pack), the
//!   degraded event judged on its text alone, the NSFW score equal to the pack's own for that
//!   image, and events that do not ask for `moderate` left alone;
//! - the same events through the real Kafka broker: the same decisions on the moderation
//!   topic;
//! - with `[moderation]` off, `moderate` is skipped as `model_absent`;
//! - a pack that is not installed stops the start with the command that installs it.
//!
//! Needs the packs and the ONNX Runtime library; the test command sets
//! `FUSIONSTREAM_REQUIRE_PACKS=1`, so that they fail, not skip, without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::in_process;
use fusionstream::config::Overrides;
use serde_json::Value;

fn example_config() -> PathBuf {
    common::root().join("config/moderation.toml")
}

fn example_events() -> Vec<Value> {
    std::fs::read_to_string(common::root().join("examples/moderation/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Thresholds `(review, block)` of a table `{ review = …, block = … }`.
fn thresholds(v: Option<&toml::Value>) -> (Option<f64>, Option<f64>) {
    let get = |k: &str| v.and_then(|t| t.get(k)).and_then(toml::Value::as_float);
    (get("review"), get("block"))
}

fn action_of(score: f64, (review, block): (Option<f64>, Option<f64>)) -> &'static str {
    if block.is_some_and(|b| score >= b) {
        "block"
    } else if review.is_some_and(|r| score >= r) {
        "review"
    } else {
        "allow"
    }
}

fn severity(a: &str) -> u8 {
    match a {
        "allow" => 0,
        "review" => 1,
        "block" => 2,
        other => panic!("action {other}"),
    }
}

/// What the policy file says about a record's signals: the decision and the fired rules
/// (rule, action), recomputed from the TOML itself.
fn expected(policy_file: &toml::Table, r: &Value) -> (String, Vec<(String, String)>) {
    let m = policy_file["moderation"].as_table().unwrap();
    let tenant = r["policy"].as_str().unwrap();
    let over = (tenant != "default").then(|| m["tenants"][tenant].as_table().unwrap());
    let merge = |base: (Option<f64>, Option<f64>), o: (Option<f64>, Option<f64>)| {
        (o.0.or(base.0), o.1.or(base.1))
    };
    let mut fired = Vec::new();
    let s = &r["signals"];
    if let Some(score) = s["nsfw"].as_f64() {
        let mut t = thresholds(m.get("nsfw"));
        if let Some(o) = over {
            t = merge(t, thresholds(o.get("nsfw")));
        }
        let a = action_of(score, t);
        if a != "allow" {
            fired.push(("nsfw".to_owned(), a.to_owned()));
        }
    }
    let cats = m["categories"].as_array().unwrap();
    let cat = |name: &str| {
        cats.iter()
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap()
    };
    for sim in s["similarity"].as_array().unwrap() {
        let name = sim["category"].as_str().unwrap();
        let mut t = thresholds(cat(name).get("similarity"));
        if let Some(o) = over
            .and_then(|o| o.get("categories"))
            .and_then(|c| c.get(name))
        {
            t = merge(t, thresholds(o.get("similarity")));
        }
        let a = action_of(sim["score"].as_f64().unwrap(), t);
        if a != "allow" {
            fired.push((format!("similarity:{name}"), a.to_owned()));
        }
    }
    for term in s["terms"].as_array().unwrap() {
        let name = term["category"].as_str().unwrap();
        let a = cat(name)
            .get("term_action")
            .and_then(toml::Value::as_str)
            .unwrap_or("review");
        fired.push((format!("term:{name}"), a.to_owned()));
    }
    let decision = fired
        .iter()
        .map(|(_, a)| a.as_str())
        .max_by_key(|a| severity(a))
        .unwrap_or("allow")
        .to_owned();
    fired.sort();
    (decision, fired)
}

/// Checks every moderation record against the policy file and the examples; returns the
/// records by event id.
fn check_moderation(recs: &[Value]) -> BTreeMap<String, Value> {
    let policy_file: toml::Table =
        toml::from_str(&std::fs::read_to_string(example_config()).unwrap()).unwrap();
    let events = example_events();
    let mut by_id = BTreeMap::new();
    for r in recs {
        let id = r["event_id"].as_str().unwrap().to_owned();
        let (decision, mut rules) = expected(&policy_file, r);
        let mut got: Vec<(String, String)> = r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let score = x["score"].as_f64().unwrap();
                assert!(score >= x["threshold"].as_f64().unwrap(), "{id}: {x}");
                (
                    x["rule"].as_str().unwrap().to_owned(),
                    x["action"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        got.sort();
        rules.sort();
        assert_eq!(r["decision"], decision.as_str(), "{id}: {r}");
        assert_eq!(got, rules, "{id}");
        assert!(
            by_id.insert(id.clone(), r.clone()).is_none(),
            "{id}: two records"
        );
    }
    // Every event that asks for `moderate` (or names no tasks: moderate_unnamed) has one;
    // the others none.
    for e in &events {
        let id = e["id"].as_str().unwrap();
        let asks = e.get("tasks").is_none_or(|t| {
            t.as_array()
                .unwrap()
                .iter()
                .any(|x| x.as_str() == Some("moderate"))
        });
        assert_eq!(by_id.contains_key(id), asks, "{id}");
    }
    // What the example is built to show.
    let decision = |id: &str| by_id[id]["decision"].as_str().unwrap().to_owned();
    assert_eq!(decision("mod-threat"), "block");
    assert_eq!(decision("mod-abuse"), "review");
    assert_eq!(decision("mod-benign-text"), "allow");
    assert_eq!(decision("mod-benign-scene"), "allow");
    assert_eq!(decision("mod-sign-birthday"), "allow");
    let scam = &by_id["mod-scam-text"];
    assert_eq!(decision("mod-scam-text"), "block");
    assert!(scam["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule"] == "term:scam" && r["evidence"] == "free crypto"));
    // The text in the sign is read and screened: the scam term found in it blocks the image.
    let sign = &by_id["mod-sign-scam"];
    assert!(sign["signals"]["image_text"]
        .as_str()
        .unwrap()
        .starts_with("FREE CRYPTO"));
    assert_eq!(decision("mod-sign-scam"), "block");
    assert!(sign["rules"].as_array().unwrap().iter().any(|r| {
        r["rule"] == "term:scam" && r["source"] == "image_text" && r["evidence"] == "free crypto"
    }));
    assert!(!sign["signals"]["image_text_lines"]
        .as_array()
        .unwrap()
        .is_empty());
    // The tenant's policy applies to its event only, and is stricter on the same image.
    assert_eq!(by_id["mod-skin-kids"]["policy"], "kids");
    assert_eq!(by_id["mod-skin-default"]["policy"], "default");
    assert_eq!(
        by_id["mod-skin-kids"]["signals"]["nsfw"],
        by_id["mod-skin-default"]["signals"]["nsfw"]
    );
    assert!(severity(&decision("mod-skin-kids")) > severity(&decision("mod-skin-default")));
    // No image: judged on the text, NSFW listed as missing with the image's reason, flagged.
    let missing = &by_id["mod-image-missing"];
    assert_eq!(decision("mod-image-missing"), "block");
    assert!(missing["signals"].get("nsfw").is_none());
    assert_eq!(
        missing["signals"]["missing"][0],
        serde_json::json!({"signal": "nsfw", "reason": "image_not_found"})
    );
    assert_eq!(missing["degraded"][0]["reason"], "image_not_found");
    let text_only = &by_id["mod-threat"]["signals"]["missing"][0];
    assert_eq!(text_only["reason"], "image_absent");
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moderation_example_follows_its_policy() {
    if !common::packs_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap().to_owned();
    let checkpoint = format!("{out}/checkpoint.json");
    let c = in_process::config(
        &[example_config()],
        &[
            ("FUSIONSTREAM__SINK__DIR", out.as_str()),
            ("FUSIONSTREAM__CHECKPOINT__PATH", checkpoint.as_str()),
        ],
        &Overrides::default(),
    );
    let summary = in_process::start(c).finish().await;
    assert_eq!(summary.end, "completed");
    let events = example_events();
    assert_eq!(summary.stats.read, events.len() as u64);
    assert_eq!(summary.stats.dead_lettered, 0);
    let by_id = check_moderation(&common::validated_records(tmp.path(), "moderation"));
    // The NSFW score is the pack's own for that image (the parity test ties the pack to the
    // reference package): the shared decode changes nothing.
    let dir = fusionstream_model::moderation::default_packs_dir().join("open_nsfw");
    let clf = fusionstream_model::packs::nsfw::NsfwClassifier::load(
        &dir,
        &fusionstream_model::OnnxOptions::default(),
    )
    .unwrap();
    let bytes = std::fs::read(common::root().join("examples/media/moderation/skin.jpg")).unwrap();
    let img = clf
        .decode(
            &bytes,
            &fusionstream_model::preprocess::ImageLimits::default(),
        )
        .unwrap();
    let want = clf.scores(&[clf.prepare(&img).unwrap()]).unwrap()[0];
    let got = by_id["mod-skin-default"]["signals"]["nsfw"]
        .as_f64()
        .unwrap();
    assert!((got - f64::from(want)).abs() < 1e-5, "{got} vs {want}");
    // The event that names no tasks got moderation and every bundle output; the others the
    // tasks they named.
    let captions = common::validated_records(tmp.path(), "captions");
    assert!(captions.iter().any(|r| r["event_id"] == "mod-benign-scene"));
    assert!(captions.iter().any(|r| r["event_id"] == "mod-sign-scam"));
    let embeddings = common::validated_records(tmp.path(), "embeddings");
    let embedded: Vec<&str> = embeddings
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert!(embedded.contains(&"mod-not-moderated") && embedded.contains(&"mod-scam-text"));
    assert!(!embedded.contains(&"mod-threat"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_moderation_the_task_is_skipped_as_model_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap().to_owned();
    let checkpoint = format!("{out}/checkpoint.json");
    let c = in_process::config(
        &[],
        &[
            (
                "FUSIONSTREAM__SOURCE__PATH",
                "examples/moderation/events.jsonl",
            ),
            ("FUSIONSTREAM__SINK__DIR", out.as_str()),
            ("FUSIONSTREAM__CHECKPOINT__PATH", checkpoint.as_str()),
        ],
        &Overrides::default(),
    );
    let summary = in_process::start(c).finish().await;
    assert_eq!(summary.end, "completed");
    assert!(common::validated_records(tmp.path(), "moderation").is_empty());
    // Asked for `moderate` alone: nothing can serve it, the dead letter says why.
    let dead = common::validated_records(tmp.path(), "dead_letters");
    let threat = dead.iter().find(|r| r["event_id"] == "mod-threat").unwrap();
    assert_eq!(threat["reason"], "model_absent");
    // Asked for it beside other tasks: skipped in their records.
    let caps = common::validated_records(tmp.path(), "captions");
    let sign = caps
        .iter()
        .find(|r| r["event_id"] == "mod-sign-scam")
        .unwrap();
    assert_eq!(
        sign["skipped"],
        serde_json::json!([{"task": "moderate", "reason": "model_absent"}])
    );
    // An event naming no tasks does not ask for it when the worker does not serve it.
    let scene = caps
        .iter()
        .find(|r| r["event_id"] == "mod-benign-scene")
        .unwrap();
    assert_eq!(
        scene["skipped"],
        serde_json::json!([{"task": "answer", "reason": "question_absent"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_that_is_not_installed_stops_the_start_with_the_install_command() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let packs = tmp.path().join("packs");
    std::fs::create_dir_all(&packs).unwrap();
    let (out, packs) = (out.to_str().unwrap(), packs.to_str().unwrap());
    let checkpoint = format!("{out}/checkpoint.json");
    let c = in_process::config(
        &[example_config()],
        &[
            ("FUSIONSTREAM__SINK__DIR", out),
            ("FUSIONSTREAM__CHECKPOINT__PATH", checkpoint.as_str()),
            ("FUSIONSTREAM__MODERATION__PACKS_DIR", packs),
        ],
        &Overrides::default(),
    );
    let err = fusionstream::app::run(&c, tokio_util::sync::CancellationToken::new(), None)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("moderation packs") && msg.contains("scripts/fetch-packs.sh open_nsfw"),
        "{msg}"
    );
}

#[test]
fn a_bad_policy_is_refused_with_every_error() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("bad.toml");
    std::fs::write(
        &f,
        r#"
[moderation]
enabled = true
nsfw = { review = 0.9, block = 0.5 }
[[moderation.categories]]
name = "empty"
[moderation.tenants.t1]
categories = { nope = { term_action = "block" } }
"#,
    )
    .unwrap();
    let err = fusionstream::config::Config::load(&[f], Vec::new())
        .unwrap_err()
        .to_string();
    for want in [
        "moderation.nsfw: block (0.5) is below review (0.9)",
        "moderation.categories[empty]: give phrases, terms or labels",
        "moderation.tenants.t1: category \"nope\" is not in the default policy",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moderation_example_through_kafka() {
    use common::kafka::*;
    if !common::packs_installed() {
        return;
    }
    let Some(broker) = broker() else { return };
    let _serial = SERIAL.lock().await;
    let t = topics("moderation");
    create(&broker, &t).await;
    let lines: Vec<String> = example_events().iter().map(Value::to_string).collect();
    produce(&broker, &t.input, &lines);
    let env = kafka_env(&broker, &t, &[]);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let w = in_process::start(in_process::config(
        &[example_config()],
        &pairs,
        &Overrides::default(),
    ));
    wait_for(
        || committed(&broker, &t) == lines.len() as i64,
        "all offsets committed",
        120,
    );
    let summary = w.stop().await;
    assert_eq!(summary.stats.read, lines.len() as u64, "{summary:?}");
    let recs = read_outputs(&broker, &t);
    let schema = common::validator("moderation.schema.json");
    let moderation: Vec<Value> = recs
        .into_iter()
        .filter(|(s, _, _)| s == "moderation")
        .map(|(_, v, headers)| {
            assert!(common::errors(&schema, &v).is_empty(), "{v}");
            assert_eq!(v["source"]["kind"], "kafka");
            assert_eq!(headers.get("schema_version").map(String::as_str), Some("1"));
            v
        })
        .collect();
    check_moderation(&moderation);
}
