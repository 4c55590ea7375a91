//! The pipeline in-process, on the bundled model and local files: every row of the
//! degradation matrix and every class of bad event (the shipped examples), outputs checked
//! against the schemas and against the transformers reference, shutdown mid-stream and
//! resume with nothing lost, drain timeouts, policy, bounded reads, S3 media from MinIO.
//!
//! Long because the matrix test checks each of the 36 example events record by
//! record in one place; the rest shares its helpers (running, reading and validating
//! outputs). Failure isolation has its own file (`isolation.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fusionstream::app::engine_settings;
use fusionstream::config::Config;
use fusionstream::telemetry::{Recorder, Snapshot};
use fusionstream_engine::{Parts, RunEnd};
use fusionstream_io::local::{Checkpoint, JsonlSink, LocalCheckpoint, LocalJsonl};
use fusionstream_io::media::LocalMedia;
use fusionstream_io::media::MediaStores;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn config(events: &Path, out: &Path, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::load(&[], Vec::new()).unwrap();
    c.source.path = events.to_owned();
    c.sink.dir = out.to_owned();
    c.checkpoint.path = out.join("checkpoint.json");
    c.media.root = common::root().join("examples");
    tweak(&mut c);
    c
}

/// Run to the end, or until `stop_after` events finished (then cancel and drain).
async fn run(c: &Config, stop_after: Option<u64>) -> (RunEnd, Snapshot, u64) {
    let checkpoint = Checkpoint::load(&c.checkpoint.path).unwrap();
    let source = LocalJsonl::open(&c.source.path, c.source.max_event_bytes, &checkpoint).unwrap();
    let committer = LocalCheckpoint::new(
        &c.checkpoint.path,
        source.streams(),
        checkpoint,
        engine_settings(c).crash_guard,
    );
    let stats = Arc::new(Recorder::default());
    let parts = Parts {
        settings: engine_settings(c),
        model: common::bundle_model(),
        backend: common::bundle_model(),
        media: MediaStores {
            local: LocalMedia::new(&c.media.root, c.media.max_bytes),
            s3: match c.s3_settings() {
                Some(s) => Some(fusionstream_io::s3::S3Media::new(s).await),
                None => None,
            },
        },
        source,
        sink: JsonlSink::open(&c.sink.dir).await.unwrap(),
        committer,
        adapter_metrics: stats.adapter(),
        stopping: CancellationToken::new(),
    };
    let cancel = CancellationToken::new();
    let max_in_flight = c.pipeline.max_in_flight as u64;
    let watcher = {
        let (stats, cancel) = (stats.clone(), cancel.clone());
        tokio::spawn(async move {
            let mut worst = 0;
            loop {
                let done = stats.finished();
                worst = worst.max(stats.in_flight());
                if stop_after.is_some_and(|n| done >= n) {
                    cancel.cancel();
                }
                if cancel.is_cancelled() {
                    return worst;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let end = fusionstream_engine::run(parts, stats.clone(), cancel.clone())
        .await
        .expect("run");
    cancel.cancel();
    let worst = watcher.await.unwrap_or(0);
    assert!(
        worst <= max_in_flight,
        "{worst} events in flight, limit {max_in_flight}"
    );
    (end, stats.snapshot(), worst)
}

/// Every record of every stream under `out`, validated against its schema.
fn outputs(out: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut all = BTreeMap::new();
    for stream in ["captions", "answers", "embeddings", "tags", "dead_letters"] {
        let schema = common::validator(common::schema_of_stream(stream));
        let path = out.join(format!("{stream}.jsonl"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let recs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
            .collect();
        for r in &recs {
            let errs = common::errors(&schema, r);
            assert!(
                errs.is_empty(),
                "{stream} record fails its schema: {errs:?}\n{r}"
            );
        }
        all.insert(stream.to_owned(), recs);
    }
    all
}

fn by_id<'a>(recs: &'a [Value], id: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["event_id"] == id).collect()
}

fn one<'a>(all: &'a BTreeMap<String, Vec<Value>>, stream: &str, id: &str) -> &'a Value {
    let v = by_id(&all[stream], id);
    assert_eq!(v.len(), 1, "{id}: {} records in {stream}", v.len());
    v[0]
}

fn none(all: &BTreeMap<String, Vec<Value>>, stream: &str, id: &str) {
    assert!(
        by_id(&all[stream], id).is_empty(),
        "{id} has a {stream} record"
    );
}

fn skipped(r: &Value) -> Vec<String> {
    r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["task"].as_str().unwrap(),
                s["reason"].as_str().unwrap()
            )
        })
        .collect()
}

fn degraded(r: &Value) -> Vec<String> {
    r["degraded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["modality"].as_str().unwrap(),
                s["reason"].as_str().unwrap()
            )
        })
        .collect()
}

fn reference() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(common::root().join("models/fixtures/shapes/reference.json"))
            .unwrap(),
    )
    .unwrap()
}

fn event_lines(dir: &Path) -> Vec<(String, u64, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut v = Vec::new();
    for f in files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
    {
        for (i, l) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            if !l.trim().is_empty() {
                v.push((f.display().to_string(), i as u64, l.to_owned()));
            }
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_examples_cover_every_row_of_the_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let events = common::root().join("examples/events");
    let c = config(&events, tmp.path(), |_| {});
    let (end, stats, _) = run(&c, None).await;
    assert_eq!(end, RunEnd::Completed);
    let all = outputs(tmp.path());
    let lines = event_lines(&events);
    assert_eq!(stats.read as usize, lines.len());
    assert_eq!(stats.finished, stats.read);

    // Every input line is accounted for: outputs or a dead letter, never both, never none.
    for (stream, offset, line) in &lines {
        let at = |s: &str| {
            all[s]
                .iter()
                .filter(|r| {
                    r["source"]["stream"] == stream.as_str() && r["source"]["offset"] == *offset
                })
                .count()
        };
        let outs = at("captions") + at("answers") + at("embeddings") + at("tags");
        let dls = at("dead_letters");
        assert!(
            (outs > 0) != (dls == 1) || (outs == 0 && dls == 1),
            "{stream}:{offset} outputs {outs}, dead letters {dls}: {line}"
        );
        assert!(dls <= 1);
        if dls == 1 {
            let dl = all["dead_letters"]
                .iter()
                .find(|r| {
                    r["source"]["stream"] == stream.as_str() && r["source"]["offset"] == *offset
                })
                .unwrap();
            if dl["payload_truncated"] == false {
                assert_eq!(
                    dl["payload"].as_str().unwrap(),
                    line,
                    "original payload kept"
                );
            }
        }
    }

    let reference = reference();
    let greedy = |k: &str, i: usize| reference[k][i].as_str().unwrap().to_owned();

    // Row 1: image + text (+ question): everything, no flags; outputs equal the reference.
    for i in 0..3 {
        let id = format!("full-{i}");
        assert_eq!(
            one(&all, "captions", &id)["caption"],
            greedy("caption_greedy", i).as_str()
        );
        let a = one(&all, "answers", &id);
        assert_eq!(a["answer"], greedy("answer_greedy", i).as_str());
        assert_eq!(a["question"], reference["questions"][i]);
        let e = one(&all, "embeddings", &id);
        for k in [
            "image_embedding",
            "text_embedding",
            "fused_embedding",
            "match_score",
        ] {
            assert!(e.get(k).is_some(), "{id} lacks {k}");
        }
        let norm: f64 = e["fused_embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap().powi(2))
            .sum();
        assert!(
            (norm - 1.0).abs() < 1e-3,
            "fused embedding not normalised: {norm}"
        );
        let t = one(&all, "tags", &id);
        assert!(t["tags"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["source"] == "image"));
        assert!(skipped(e).is_empty() && degraded(e).is_empty());
    }
    let full0 = one(&all, "embeddings", "full-0");
    assert_eq!(full0["tenant"], "demo");
    assert_eq!(full0["attributes"]["uploader"], "u-17");
    // A matching text scores higher than a mismatched one.
    let mismatch = one(&all, "embeddings", "full-5-mismatch");
    assert!(
        full0["match_score"].as_f64().unwrap() > mismatch["match_score"].as_f64().unwrap() + 0.5
    );
    // Requested tasks only.
    none(&all, "captions", "full-3");
    none(&all, "tags", "full-3");
    assert_eq!(
        one(&all, "answers", "full-3")["answer"],
        greedy("answer_greedy", 3).as_str()
    );
    assert_eq!(
        one(&all, "captions", "full-4")["caption"],
        greedy("caption_greedy", 4).as_str()
    );
    none(&all, "embeddings", "full-4");

    // Row 2: image only.
    let e = one(&all, "embeddings", "image-0");
    assert!(e.get("image_embedding").is_some() && e.get("text_embedding").is_none());
    assert!(e.get("fused_embedding").is_some() && e.get("match_score").is_none());
    assert_eq!(skipped(e), ["match:text_absent", "answer:question_absent"]);
    assert_eq!(
        one(&all, "captions", "image-0")["caption"],
        greedy("caption_greedy", 0).as_str()
    );
    assert_eq!(
        one(&all, "answers", "image-1-question")["answer"],
        greedy("answer_greedy", 1).as_str()
    );
    one(&all, "captions", "image-2-inline");

    // Row 3: text only.
    let e = one(&all, "embeddings", "text-0");
    assert!(e.get("text_embedding").is_some() && e.get("image_embedding").is_none());
    assert_eq!(
        skipped(e),
        [
            "match:image_absent",
            "caption:image_absent",
            "answer:image_absent"
        ]
    );
    assert!(one(&all, "tags", "text-0")["tags"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["source"] == "text"));
    none(&all, "captions", "text-0");
    none(&all, "answers", "text-2-with-question");
    // The text of a text-only event tags what it says.
    let labels: Vec<&str> = one(&all, "tags", "text-1")["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    assert!(!labels.is_empty(), "no tags for text-1");
    assert!(
        labels
            .iter()
            .all(|l| "a large green star in the centre".contains(l)),
        "text tags name what the text does not say: {labels:?}"
    );

    // Row 4: image unusable → as text only, flagged with the reason.
    let expected = [
        ("degraded-missing", "image:image_not_found"),
        ("degraded-corrupt", "image:image_corrupt"),
        ("degraded-bomb", "image:image_too_many_pixels"),
        ("degraded-not-an-image", "image:image_unsupported_format"),
        ("degraded-bad-base64", "image:image_invalid_base64"),
        ("degraded-outside-root", "image:image_ref_forbidden"),
        ("degraded-s3-unconfigured", "image:image_store_unconfigured"),
        ("degraded-unsupported-scheme", "image:image_ref_unsupported"),
    ];
    for (id, flag) in expected {
        let e = one(&all, "embeddings", id);
        assert_eq!(degraded(e), [flag], "{id}");
        assert!(
            e.get("text_embedding").is_some() && e.get("image_embedding").is_none(),
            "{id}"
        );
        assert_eq!(
            skipped(e),
            [
                "match:image_absent",
                "caption:image_absent",
                "answer:image_absent"
            ],
            "{id}"
        );
        none(&all, "captions", id);
        assert_eq!(degraded(one(&all, "tags", id)), [flag]);
    }
    // An unusable question degrades only the answer.
    let e = one(&all, "captions", "degraded-long-question");
    assert_eq!(degraded(e), ["question:question_too_long"]);
    assert!(skipped(e).contains(&"answer:question_absent".to_owned()));

    // Row 5 and bad events: dead letters with reason codes.
    let dl = |id: Option<&str>, reason: &str| {
        let found = all["dead_letters"]
            .iter()
            .any(|r| r["reason"] == reason && id.is_none_or(|id| r["event_id"] == id));
        assert!(found, "no dead letter {reason} for {id:?}");
    };
    dl(None, "malformed_json");
    dl(Some("future-version"), "unsupported_schema_version");
    dl(None, "missing_id");
    dl(None, "not_an_object");
    dl(Some("wrong-type"), "invalid_field");
    dl(Some("typo-field"), "unknown_field");
    dl(Some("too-long-text"), "text_too_long");
    dl(Some("nothing-usable"), "no_usable_input");
    dl(Some("question-only"), "no_servable_task");
    dl(Some("caption-without-image"), "no_servable_task");
    dl(Some("image-only-corrupt"), "image_corrupt");
    dl(Some("expired"), "deadline_exceeded");
    assert_eq!(stats.dead_lettered as usize, all["dead_letters"].len());
    for id in ["nothing-usable", "image-only-corrupt", "typo-field"] {
        for s in ["captions", "answers", "embeddings", "tags"] {
            none(&all, s, id);
        }
    }

    // A re-run resumes from the checkpoint: nothing is read twice.
    let (end, again, _) = run(&c, None).await;
    assert_eq!(end, RunEnd::Completed);
    assert_eq!(again.read, 0);
}

fn write_events(path: &Path, n: usize) -> Vec<String> {
    let reference = reference();
    let mut ids = Vec::new();
    let mut body = String::new();
    for i in 0..n {
        let id = format!("ev-{i:04}");
        let scene = i % 6;
        let text = reference["texts"][scene].as_str().unwrap();
        let line = match i % 3 {
            0 => serde_json::json!({"id": id, "text": text}),
            1 => {
                serde_json::json!({"id": id, "image": format!("media/scene{scene}.png"), "text": text, "tasks": ["embed", "tag"]})
            }
            _ => {
                serde_json::json!({"id": id, "image": format!("media/scene{scene}.png"), "tasks": ["caption"]})
            }
        };
        body.push_str(&line.to_string());
        body.push('\n');
        ids.push(id);
    }
    std::fs::write(path, body).unwrap();
    ids
}

fn ids_with_output(out: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for recs in outputs(out).values() {
        for r in recs {
            *m.entry(r["event_id"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_stream_then_resume_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let ids = write_events(&events, 150);
    let out = tmp.path().join("out");
    let c = config(&events, &out, |c| {
        c.pipeline.max_in_flight = 12;
        c.encode_lane.max_items = 4;
        c.generate_lane.max_items = 2;
    });
    let (end, first, worst) = run(&c, Some(25)).await;
    assert_eq!(end, RunEnd::Drained);
    assert!(worst <= 12);
    assert!(
        first.finished >= 25 && first.finished < 150,
        "stopped mid-stream: {}",
        first.finished
    );
    assert_eq!(first.read, first.finished, "every event read was drained");
    let committed =
        Checkpoint::load(&c.checkpoint.path).unwrap().positions[&events.display().to_string()];
    assert_eq!(committed, first.finished, "the drained prefix is committed");

    let (end, second, _) = run(&c, None).await;
    assert_eq!(end, RunEnd::Completed);
    assert_eq!(
        second.read,
        150 - committed,
        "resumed where the first run stopped"
    );
    let seen = ids_with_output(&out);
    let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(missing.is_empty(), "lost events: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_abandons_work_without_acknowledging_it() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let ids = write_events(&events, 90);
    let out = tmp.path().join("out");
    let c = config(&events, &out, |c| {
        c.shutdown.drain_timeout = Duration::ZERO;
        c.pipeline.max_in_flight = 30;
        c.generate_lane.max_items = 1;
    });
    let (end, first, _) = run(&c, Some(5)).await;
    let committed = Checkpoint::load(&c.checkpoint.path)
        .unwrap()
        .positions
        .get(&events.display().to_string())
        .copied()
        .unwrap_or(0);
    assert!(
        committed <= first.finished,
        "committed {committed} > finished {}",
        first.finished
    );
    if let RunEnd::DrainTimedOut { abandoned } = end {
        assert!(abandoned > 0);
    } else {
        panic!("expected a drain timeout, got {end:?}");
    }
    let (end, _, _) = run(&c, None).await;
    assert_eq!(end, RunEnd::Completed);
    let seen = ids_with_output(&out);
    let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(missing.is_empty(), "lost events: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_policy_dead_letters_image_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"id":"strict-1","tenant":"strict","image":"media/missing.png","text":"a red circle"}"#, "\n",
            r#"{"id":"lenient-1","tenant":"other","image":"media/missing.png","text":"a red circle"}"#, "\n",
            r#"{"id":"strict-ok","tenant":"strict","image":"media/scene0.png","tasks":["embed"]}"#, "\n",
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let c = config(&events, &out, |c| {
        c.degradation.tenants.insert(
            "strict".into(),
            fusionstream_core::degrade::OnImageFailure::DeadLetter,
        );
    });
    run(&c, None).await;
    let all = outputs(&out);
    let dl = one(&all, "dead_letters", "strict-1");
    assert_eq!(dl["reason"], "image_not_found");
    none(&all, "embeddings", "strict-1");
    assert_eq!(
        degraded(one(&all, "embeddings", "lenient-1")),
        ["image:image_not_found"]
    );
    one(&all, "embeddings", "strict-ok");
}

/// A text or question of more tokens than the bundle's positions (48) is cut to fit, used as
/// cut and flagged; one that fits is not flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_text_is_cut_and_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let long = ["a small red circle on the left"; 12].join(" and ");
    let question = format!(
        "what colour is the circle {} ?",
        ["on the left"; 20].join(" ")
    );
    std::fs::write(
        &events,
        [
            serde_json::json!({"id": "long", "image": "media/scene0.png", "text": long,
                "question": question, "tasks": ["embed", "answer"]}),
            serde_json::json!({"id": "short", "image": "media/scene0.png",
                "text": "a small red circle", "question": "what colour is the circle ?",
                "tasks": ["embed", "answer"]}),
        ]
        .map(|v| v.to_string() + "\n")
        .concat(),
    )
    .unwrap();
    let out = tmp.path().join("out");
    run(&config(&events, &out, |_| {}), None).await;
    let all = outputs(&out);
    let flags = ["text:text_truncated", "question:question_truncated"];
    assert_eq!(degraded(one(&all, "embeddings", "long")), flags);
    assert_eq!(degraded(one(&all, "answers", "long")), flags);
    // Used as cut: the text embedding and the answer exist.
    assert!(one(&all, "embeddings", "long")["text_embedding"].is_array());
    assert!(one(&all, "answers", "long")["answer"].is_string());
    assert!(degraded(one(&all, "embeddings", "short")).is_empty());
    assert!(degraded(one(&all, "answers", "short")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_lines_are_cut_and_dead_lettered() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let big = format!(r#"{{"id":"huge","text":"{}"}}"#, "x".repeat(50_000));
    std::fs::write(
        &events,
        format!("{big}\n{{\"id\":\"after\",\"text\":\"a red circle\"}}\n"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let c = config(&events, &out, |c| {
        c.source.max_event_bytes = 1000;
        c.sink.max_dead_letter_payload_bytes = 100;
    });
    let (_, stats, _) = run(&c, None).await;
    assert_eq!((stats.read, stats.finished, stats.dead_lettered), (2, 2, 1));
    let all = outputs(&out);
    let dl = &all["dead_letters"][0];
    assert_eq!(dl["reason"], "event_too_large");
    assert_eq!(dl["payload_truncated"], true);
    assert_eq!(dl["payload"].as_str().unwrap().len(), 100);
    one(&all, "embeddings", "after");
}

/// S3 media from a real MinIO (`scripts/dev-services.sh up`; endpoint in
/// `FUSIONSTREAM_TEST_S3_ENDPOINT`, credentials in the standard AWS variables): objects fetched
/// through the SDK, a missing key and a bucket outside the allowed list degrade with their
/// reasons, a corrupt object too, an object over the size limit is refused before its body
/// is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_media_from_minio() {
    let Some(endpoint) = common::s3_endpoint() else {
        return;
    };
    let bucket = format!("media-{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let lines = [
        serde_json::json!({"id": "s3-ok", "image": format!("s3://{bucket}/scenes/scene0.png"), "text": "a small black circle at the bottom", "question": "what colour is the cross ?"}),
        serde_json::json!({"id": "s3-missing", "image": format!("s3://{bucket}/scenes/nope.png"), "text": "a red circle"}),
        serde_json::json!({"id": "s3-denied", "image": "s3://not-allowed/scene0.png", "text": "a red circle"}),
        serde_json::json!({"id": "s3-corrupt", "image": format!("s3://{bucket}/truncated.jpg"), "text": "a red circle"}),
        serde_json::json!({"id": "s3-too-large", "image": format!("s3://{bucket}/big.bin"), "text": "a red circle"}),
        // Content-Type is not trusted: the format is read from the bytes.
        serde_json::json!({"id": "s3-png-labelled-text", "image": format!("s3://{bucket}/labelled/scene1.txt"), "text": "a red circle"}),
        serde_json::json!({"id": "s3-text-labelled-png", "image": format!("s3://{bucket}/labelled/notes.png"), "text": "a red circle"}),
    ];
    std::fs::write(
        &events,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let c = config(&events, &out, |c| {
        c.s3.enabled = true;
        c.s3.endpoint = endpoint.clone();
        c.s3.force_path_style = true;
        c.s3.allowed_buckets = vec![bucket.clone()];
        c.media.max_bytes = 1 << 20;
    });
    let store = fusionstream_io::s3::S3Media::new(c.s3_settings().unwrap()).await;
    let s3 = store.client();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let put = |key: &str, body: Vec<u8>| {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
    };
    let media = common::root().join("examples/media");
    put(
        "scenes/scene0.png",
        std::fs::read(media.join("scene0.png")).unwrap(),
    )
    .await
    .unwrap();
    put(
        "truncated.jpg",
        std::fs::read(media.join("truncated.jpg")).unwrap(),
    )
    .await
    .unwrap();
    put("big.bin", vec![0u8; (1 << 20) + 1]).await.unwrap();
    for (key, file, content_type) in [
        ("labelled/scene1.txt", "scene1.png", "text/plain"),
        ("labelled/notes.png", "notes.txt", "image/png"),
    ] {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .content_type(content_type)
            .body(aws_sdk_s3::primitives::ByteStream::from(
                std::fs::read(media.join(file)).unwrap(),
            ))
            .send()
            .await
            .unwrap();
    }

    let (end, stats, _) = run(&c, None).await;
    assert_eq!(end, RunEnd::Completed);
    assert_eq!(stats.finished, 7);
    let all = outputs(&out);
    let reference = reference();
    assert_eq!(
        one(&all, "captions", "s3-ok")["caption"],
        reference["caption_greedy"][0]
    );
    assert_eq!(
        one(&all, "answers", "s3-ok")["answer"],
        reference["answer_greedy"][0]
    );
    assert!(degraded(one(&all, "embeddings", "s3-ok")).is_empty());
    for (id, flag) in [
        ("s3-missing", "image:image_not_found"),
        ("s3-denied", "image:image_ref_forbidden"),
        ("s3-corrupt", "image:image_corrupt"),
        ("s3-too-large", "image:image_too_large"),
        ("s3-text-labelled-png", "image:image_unsupported_format"),
    ] {
        assert_eq!(degraded(one(&all, "embeddings", id)), [flag], "{id}");
    }
    let png = one(&all, "embeddings", "s3-png-labelled-text");
    assert!(
        degraded(png).is_empty(),
        "a PNG labelled text/plain is used: {png}"
    );
    assert!(png["image_embedding"].is_array());
}
