//! Failure isolation in-process, on the bundled model and local files, with the test-only
//! fault hook (`fusionstream_engine::faults`): a poison item costs its batch mates nothing and is
//! dead-lettered, a panic in the model or in preprocessing finishes its event, out-of-memory
//! shrinks batches, a lost device stops the worker with nothing of its batch acknowledged, and
//! with the hook off the markers mean nothing. A backend of the test's own (out of memory on
//! any batch over two items) drives the pipeline too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fusionstream::app::engine_settings;
use fusionstream::config::Config;
use fusionstream::telemetry::{Recorder, Snapshot};
use fusionstream_engine::{Parts, RunEnd};
use fusionstream_io::local::{Checkpoint, JsonlSink, LocalCheckpoint, LocalJsonl};
use fusionstream_io::media::LocalMedia;
use fusionstream_io::media::MediaStores;
use fusionstream_model::{Backend, FusionModel, InferOutput, ModelError, Prepared};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn config(events: &Path, out: &Path) -> Config {
    let mut c = Config::load(&[], Vec::new()).unwrap();
    c.source.path = events.to_owned();
    c.sink.dir = out.to_owned();
    c.checkpoint.path = out.join("checkpoint.json");
    c.media.root = common::root().join("examples");
    // Full batches, so that a poison item has batch mates.
    c.pipeline.max_in_flight = 64;
    c.encode_lane.max_items = 16;
    c.generate_lane.max_items = 8;
    c.encode_lane.max_wait = Duration::from_millis(200);
    c.generate_lane.max_wait = Duration::from_millis(200);
    c
}

async fn run(c: &Config, faults: bool) -> (anyhow::Result<RunEnd>, Snapshot) {
    run_on(c, faults, common::bundle_model()).await
}

/// The pipeline with its batches run by `backend`.
async fn run_on(
    c: &Config,
    faults: bool,
    backend: Arc<dyn Backend>,
) -> (anyhow::Result<RunEnd>, Snapshot) {
    let checkpoint = Checkpoint::load(&c.checkpoint.path).unwrap();
    let source = LocalJsonl::open(&c.source.path, c.source.max_event_bytes, &checkpoint).unwrap();
    let committer = LocalCheckpoint::new(
        &c.checkpoint.path,
        source.streams(),
        checkpoint,
        engine_settings(c).crash_guard,
    );
    let mut settings = engine_settings(c);
    settings.test_faults = faults;
    let stats = Arc::new(Recorder::default());
    let parts = Parts {
        settings,
        model: common::bundle_model(),
        backend,
        media: MediaStores {
            local: LocalMedia::new(&c.media.root, c.media.max_bytes),
            s3: None,
        },
        source,
        sink: JsonlSink::open(&c.sink.dir).await.unwrap(),
        committer,
        adapter_metrics: stats.adapter(),
        stopping: CancellationToken::new(),
    };
    let end = fusionstream_engine::run(parts, stats.clone(), CancellationToken::new()).await;
    (end, stats.snapshot())
}

/// `n` events: captions, embeddings + tags, and questions, on the scene images; the ids in
/// `faulty` (by index) carry the given fault marker.
fn write_events(path: &Path, n: usize, faulty: &[(usize, &str)]) -> Vec<String> {
    let texts = [
        "a small red circle on the left",
        "a large blue star at the top",
        "a small green square in the centre",
    ];
    let mut ids = Vec::new();
    let mut body = String::new();
    for i in 0..n {
        let mut id = format!("ev-{i:04}");
        if let Some((_, f)) = faulty.iter().find(|(j, _)| *j == i) {
            id.push_str(&format!("@fault:{f}"));
        }
        let image = format!("media/scene{}.png", i % 6);
        let line = match i % 3 {
            0 => serde_json::json!({"id": id, "image": image, "tasks": ["caption"]}),
            1 => {
                serde_json::json!({"id": id, "image": image, "text": texts[i % 3], "tasks": ["embed", "tag"]})
            }
            _ => {
                serde_json::json!({"id": id, "image": image, "question": "what colour is the circle?", "tasks": ["answer"]})
            }
        };
        body.push_str(&line.to_string());
        body.push('\n');
        ids.push(id);
    }
    std::fs::write(path, body).unwrap();
    ids
}

/// Records per event id and stream.
fn records(out: &Path) -> BTreeMap<String, BTreeMap<String, Vec<Value>>> {
    let mut m: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
    for stream in ["captions", "answers", "embeddings", "tags", "dead_letters"] {
        let schema = common::validator(common::schema_of_stream(stream));
        let text = std::fs::read_to_string(out.join(format!("{stream}.jsonl"))).unwrap_or_default();
        for l in text.lines() {
            let r: Value = serde_json::from_str(l).unwrap();
            assert!(common::errors(&schema, &r).is_empty(), "{stream}: {r}");
            let id = r["event_id"].as_str().unwrap_or("").to_owned();
            m.entry(id)
                .or_default()
                .entry(stream.to_owned())
                .or_default()
                .push(r);
        }
    }
    m
}

fn committed(c: &Config) -> u64 {
    Checkpoint::load(&c.checkpoint.path)
        .unwrap()
        .positions
        .get(&c.source.path.display().to_string())
        .copied()
        .unwrap_or(0)
}

fn dead_letter<'a>(
    recs: &'a BTreeMap<String, BTreeMap<String, Vec<Value>>>,
    id: &str,
) -> &'a Value {
    let streams = recs
        .get(id)
        .unwrap_or_else(|| panic!("{id}: no record at all"));
    assert_eq!(
        streams.keys().collect::<Vec<_>>(),
        vec!["dead_letters"],
        "{id}: only a dead letter"
    );
    assert_eq!(streams["dead_letters"].len(), 1);
    &streams["dead_letters"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_item_costs_its_batch_mates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    // 7: caption lane; 13: encode lane; 20: generate lane (answer); 26: out-of-memory only
    // when batched.
    let ids = write_events(
        &events,
        48,
        &[
            (7, "model-error"),
            (13, "model-panic"),
            (20, "model-error"),
            (26, "oom"),
        ],
    );
    let out = tmp.path().join("out");
    let c = config(&events, &out);
    let (end, stats) = run(&c, true).await;
    assert_eq!(end.expect("the worker keeps running"), RunEnd::Completed);
    assert_eq!(committed(&c), 48, "the stream moved past the poison items");
    let recs = records(&out);
    for (i, id) in ids.iter().enumerate() {
        match i {
            7 | 20 => {
                let dl = dead_letter(&recs, id);
                assert_eq!(dl["reason"], "model_error");
                let detail = dl["detail"].as_str().unwrap();
                assert!(detail.contains("injected model fault"), "{detail}");
                assert!(
                    dl["payload"].as_str().unwrap().contains(id.as_str()),
                    "payload kept"
                );
            }
            13 => {
                let dl = dead_letter(&recs, id);
                assert_eq!(dl["reason"], "internal_error");
                assert!(dl["detail"]
                    .as_str()
                    .unwrap()
                    .contains("injected model panic"));
            }
            _ => {
                let streams = recs.get(id).unwrap_or_else(|| panic!("{id} lost"));
                assert!(
                    !streams.contains_key("dead_letters"),
                    "{id} dead-lettered: {:?}",
                    streams.get("dead_letters")
                );
                let want = match i % 3 {
                    0 => "captions",
                    1 => "embeddings",
                    _ => "answers",
                };
                assert!(streams.contains_key(want), "{id}: no {want}");
            }
        }
    }
    assert_eq!(stats.model_item_failures, 3);
    assert_eq!(stats.model_panics, 1);
    assert!(
        stats.model_splits >= 3,
        "batches were bisected: {}",
        stats.model_splits
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_finite_output_dead_letters_its_event() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let ids = write_events(&events, 9, &[(4, "nan-output")]);
    let out = tmp.path().join("out");
    let c = config(&events, &out);
    let (end, stats) = run(&c, true).await;
    assert_eq!(end.unwrap(), RunEnd::Completed);
    assert_eq!(committed(&c), 9);
    let recs = records(&out);
    let dl = dead_letter(&recs, &ids[4]);
    assert_eq!(dl["reason"], "model_error");
    assert!(
        dl["detail"].as_str().unwrap().contains("non-finite"),
        "{dl}"
    );
    assert_eq!(stats.model_item_failures, 1);
    assert_eq!(recs.len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_preprocessing_finishes_its_event() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let ids = write_events(&events, 12, &[(4, "preprocess-panic")]);
    let out = tmp.path().join("out");
    let c = config(&events, &out);
    let (end, stats) = run(&c, true).await;
    assert_eq!(end.unwrap(), RunEnd::Completed);
    assert_eq!(committed(&c), 12, "no position left unfinished");
    let recs = records(&out);
    let dl = dead_letter(&recs, &ids[4]);
    assert_eq!(dl["reason"], "internal_error");
    assert!(dl["detail"]
        .as_str()
        .unwrap()
        .contains("injected preprocess panic"));
    assert_eq!(stats.intake_panics, 1);
    assert_eq!(recs.len(), 12, "every event has records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_device_stops_the_worker_with_its_batch_unacknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let ids = write_events(&events, 30, &[(9, "device-lost")]);
    let out = tmp.path().join("out");
    let c = config(&events, &out);
    let (end, _) = run(&c, true).await;
    let err = end.expect_err("a device loss is fatal");
    assert!(format!("{err:#}").contains("ILLEGAL_ADDRESS"), "{err:#}");
    assert!(
        committed(&c) <= 9,
        "the failed batch is not acknowledged: {}",
        committed(&c)
    );
    let recs = records(&out);
    assert!(
        !recs.contains_key(&ids[9]),
        "no record for the event of the lost batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_markers_mean_nothing_with_the_hook_off() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let ids = write_events(
        &events,
        6,
        &[
            (0, "model-panic"),
            (1, "device-lost"),
            (2, "preprocess-panic"),
        ],
    );
    let out = tmp.path().join("out");
    let c = config(&events, &out);
    let (end, stats) = run(&c, false).await;
    assert_eq!(end.unwrap(), RunEnd::Completed);
    let recs = records(&out);
    for id in &ids {
        assert!(!recs[id].contains_key("dead_letters"), "{id}");
    }
    assert_eq!(
        stats.model_item_failures + stats.intake_panics + stats.model_panics,
        0
    );
}

/// The bundled model behind a device that runs out of memory on any batch of more than
/// `max` items.
#[derive(Debug)]
struct Cramped {
    model: Arc<FusionModel>,
    max: usize,
    largest: std::sync::atomic::AtomicUsize,
}

impl Backend for Cramped {
    fn infer_batch(&self, items: &[Prepared]) -> Result<Vec<InferOutput>, ModelError> {
        if items.len() > self.max {
            return Err(ModelError::OnnxRun {
                graph: "cramped".into(),
                reason: "CUDA_ERROR_OUT_OF_MEMORY: out of memory".into(),
            });
        }
        self.largest
            .fetch_max(items.len(), std::sync::atomic::Ordering::Relaxed);
        self.model.infer_batch(items)
    }
}

/// Answers, captions and tags per event id: what a run produced, without its timings.
fn answers(out: &Path) -> BTreeMap<String, Vec<String>> {
    records(out)
        .into_iter()
        .map(|(id, streams)| {
            let mut got = Vec::new();
            for (stream, recs) in streams {
                for r in recs {
                    let v = match stream.as_str() {
                        "captions" => r["caption"].to_string(),
                        "answers" => r["answer"].to_string(),
                        "tags" => r["tags"].to_string(),
                        "embeddings" => r["match_score"].to_string(),
                        _ => r["reason"].to_string(),
                    };
                    got.push(format!("{stream}: {v}"));
                }
            }
            (id, got)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_out_of_memory_on_full_batches_still_serves_every_event() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let ids = write_events(&events, 24, &[]);
    let (out_a, out_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut c = config(&events, &out_a);
    let (end, plain) = run(&c, false).await;
    assert_eq!(end.unwrap(), RunEnd::Completed);

    c.sink.dir = out_b.clone();
    c.checkpoint.path = out_b.join("checkpoint.json");
    let cramped = Arc::new(Cramped {
        model: common::bundle_model(),
        max: 2,
        largest: Default::default(),
    });
    let (end, stats) = run_on(&c, false, cramped.clone()).await;
    assert_eq!(end.unwrap(), RunEnd::Completed);
    assert!(
        plain.batches.iter().any(|(_, n, items)| items > n),
        "the plain run batched events together"
    );
    assert!(stats.model_splits > 0, "full batches were split");
    assert_eq!(
        cramped.largest.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "every forward pass that ran fit the device"
    );
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(committed(&c), ids.len() as u64);
    assert_eq!(
        answers(&out_b),
        answers(&out_a),
        "split batches give every event the outputs the full ones gave"
    );
}
