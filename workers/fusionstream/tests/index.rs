//! The live vector index (`fusionstream index`, `fusionstream search`, `/search`) on the
//! worker's real outputs and on the real broker.
//!
//! - The shapes bundle retrieves each test scene by its canonical caption (text → image)
//!   and each caption by its scene (image → text), through the CLI and the HTTP endpoint,
//!   and a following index picks up what a worker appends.
//! - Through Kafka: an index SIGKILLed between snapshots resumes from its snapshot's
//!   positions; at the end it holds every event exactly once, each under its own vector.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use fusionstream_index::exact::random_unit_vectors;
use fusionstream_index::{Kind, SnapshotDir};
use serde_json::{json, Value};

use common::kafka::{broker, conn, wait_for};
use common::{bin, http_get, http_post_json, root};

fn captions() -> Vec<String> {
    let r: Value = serde_json::from_slice(
        &std::fs::read(root().join("models/fixtures/shapes/reference.json")).unwrap(),
    )
    .unwrap();
    r["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

fn scene(i: usize) -> std::path::PathBuf {
    root().join(format!("models/fixtures/shapes/images/scene{i}.png"))
}

/// Run the worker on `events` with the scenes as media, writing to `out`.
fn run_worker(events: &Path, out: &Path) {
    let st = bin()
        .args(["run", "--events"])
        .arg(events)
        .arg("--out")
        .arg(out)
        .env("FUSIONSTREAM__MEDIA__ROOT", "models/fixtures/shapes/images")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

fn search(index: &Path, query: &[&str], kind: &str) -> Value {
    let out = bin()
        .arg("search")
        .arg("--index")
        .arg(index)
        .args(query)
        .args(["-k", "3", "--kinds", kind])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn top(results: &Value) -> &str {
    results["results"][0]["hits"][0]["event_id"]
        .as_str()
        .unwrap_or("<none>")
}

#[test]
fn shapes_bundle_retrieves_each_scene_by_its_caption_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (out, index) = (dir.path().join("out"), dir.path().join("index"));
    let captions = captions();
    let mut events = String::new();
    for (i, c) in captions.iter().enumerate() {
        events.push_str(&format!(
            "{}\n{}\n",
            json!({"id": format!("scene-{i}"), "image": format!("scene{i}.png"), "tasks": ["embed"]}),
            json!({"id": format!("caption-{i}"), "text": c, "tasks": ["embed"]}),
        ));
    }
    let events_file = dir.path().join("events.jsonl");
    std::fs::write(&events_file, events).unwrap();
    run_worker(&events_file, &out);

    let st = bin()
        .args(["index", "--once", "--json", "--out"])
        .arg(&out)
        .arg("--index")
        .arg(&index)
        .env("FUSIONSTREAM__INDEX__LISTEN", "")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let summary: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(summary["records"], 16, "{summary}");
    assert_eq!(
        summary["entries"],
        json!([["image", 8], ["text", 8], ["fused", 16], ["photo", 0]])
    );

    for (i, c) in captions.iter().enumerate() {
        let r = search(&index, &["--text", c], "image");
        assert_eq!(r["results"][0]["query"], "text");
        assert_eq!(top(&r), format!("scene-{i}"), "caption {i} {c:?}: {r}");
        let img = scene(i);
        let r = search(&index, &["--image", img.to_str().unwrap()], "text");
        assert_eq!(r["results"][0]["query"], "image");
        assert_eq!(top(&r), format!("caption-{i}"), "scene {i}: {r}");
    }

    // A following index with its HTTP server: the same answers, and what a worker appends
    // becomes searchable without a restart.
    let port = common::free_port();
    let mut child = bin()
        .args(["index", "--out"])
        .arg(&out)
        .arg("--index")
        .arg(&index)
        .env("FUSIONSTREAM__INDEX__LISTEN", format!("127.0.0.1:{port}"))
        .env("FUSIONSTREAM__INDEX__SNAPSHOT_INTERVAL", "200ms")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        || http_get(port, "/healthz").is_some(),
        "the index's server",
        60,
    );
    let q = captions[3].replace(' ', "+");
    let (status, body) = http_get(port, &format!("/search?text={q}&k=2&kinds=image")).unwrap();
    assert_eq!(status, 200, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(top(&r), "scene-3", "{r}");
    let png = base64::engine::general_purpose::STANDARD.encode(std::fs::read(scene(5)).unwrap());
    let (status, body) = http_post_json(
        port,
        "/search",
        &json!({"image_base64": png, "k": 1, "kinds": ["text"]}).to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(top(&serde_json::from_str(&body).unwrap()), "caption-5");
    let (status, body) = http_get(port, "/search?k=2").unwrap();
    assert_eq!(status, 400, "a query without text: {body}");
    let (status, _) = http_get(port, "/search?text=x&k=100000").unwrap();
    assert_eq!(status, 400, "k over index.max_k");

    // The worker appends a new event (the same scene under a new id).
    let more = dir.path().join("more.jsonl");
    std::fs::write(
        &more,
        format!(
            "{}\n",
            json!({"id": "late-2", "image": "scene2.png", "tasks": ["embed"]})
        ),
    )
    .unwrap();
    run_worker(&more, &out);
    let q = captions[2].replace(' ', "+");
    wait_for(
        || {
            http_get(port, &format!("/search?text={q}&k=2&kinds=image")).is_some_and(|(_, b)| {
                let r: Value = serde_json::from_str(&b).unwrap();
                r["results"][0]["hits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h["event_id"] == "late-2")
            })
        },
        "the appended event in the search results",
        30,
    );
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("fusionstream_index_entries{kind=\"image\"} 9"),
        "{metrics}"
    );
    assert!(metrics.contains("fusionstream_index_search_seconds_count"));

    // SIGTERM: a last snapshot, exit 0; the snapshot holds the appended event.
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
    let (ix, meta) = SnapshotDir::new(&index).load().unwrap().unwrap();
    assert_eq!(ix.len(Kind::Image), 9);
    assert!(ix.contains(Kind::Image, "late-2"));
    assert_eq!(meta.bundle.as_deref(), Some("shapes@1.4.0"));
}

/// A synthetic embeddings record of the worker's schema.
fn embedding_record(id: &str, v: &[f32]) -> String {
    let v: Vec<f64> = v.iter().map(|&x| (x as f64 * 1e6).round() / 1e6).collect();
    json!({
        "schema_version": 1, "event_id": id,
        "bundle": {"id": "synthetic", "version": "1"},
        "source": {"kind": "kafka", "stream": "events", "partition": 0, "offset": 0},
        "timings": {"received_at": "", "fetch_ms": 0.0, "preprocess_ms": 0.0, "queue_ms": 0.0, "model_ms": 0.0, "total_ms": 0.0},
        "degraded": [], "skipped": [], "dim": v.len(), "image_embedding": v,
    })
    .to_string()
}

#[test]
fn index_resumes_after_sigkill_without_losing_or_duplicating_entries() {
    let Some(broker) = broker() else { return };
    let topic = format!("test.index-{}.embeddings", common::kafka::rand_suffix());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(conn(&broker).ensure_topics(&[(topic.as_str(), 3)]))
        .unwrap();
    // 6,000 events of 512 dimensions (slow enough to insert that the kill lands between
    // snapshots), and 600 of them published twice (a worker's replay).
    const N: usize = 6000;
    let vectors = random_unit_vectors(N, 512, 99);
    let mut lines: Vec<String> = (0..N)
        .map(|i| embedding_record(&format!("ev-{i}"), &vectors[i]))
        .collect();
    lines.extend((0..600).map(|i| embedding_record(&format!("ev-{i}"), &vectors[i])));
    common::kafka::produce(&broker, &topic, &lines);

    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index");
    let env = [
        ("FUSIONSTREAM__SINK__KIND", "kafka".to_owned()),
        ("FUSIONSTREAM__KAFKA__BOOTSTRAP_SERVERS", broker.clone()),
        ("FUSIONSTREAM__KAFKA__EMBEDDINGS_TOPIC", topic.clone()),
        ("FUSIONSTREAM__INDEX__GROUP_ID", format!("{topic}-index")),
        ("FUSIONSTREAM__INDEX__KINDS", "[\"image\"]".to_owned()),
        ("FUSIONSTREAM__INDEX__SNAPSHOT_RECORDS", "700".to_owned()),
        ("FUSIONSTREAM__INDEX__LISTEN", String::new()),
    ];
    let index_cmd = || {
        let mut c = bin();
        c.arg("index")
            .arg("--index")
            .arg(&index)
            .envs(env.iter().map(|(k, v)| (*k, v)));
        c
    };
    let positions = |ix: &Path| -> u64 {
        SnapshotDir::new(ix)
            .load()
            .ok()
            .flatten()
            .map_or(0, |(_, m)| m.positions.values().sum())
    };
    // Offsets per partition sum to the records read: the kill must come after the first
    // snapshot and before the last record.
    let mut child = index_cmd()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| positions(&index) > 0, "a first snapshot", 120);
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = positions(&index);
    let total = lines.len() as u64;
    assert!(
        at_kill < total,
        "the index had read everything before it was killed ({at_kill} of {total}): the test did not test a resume"
    );

    let out = index_cmd().args(["--once", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The restart read exactly what the snapshot did not hold.
    assert_eq!(
        summary["records"].as_u64().unwrap(),
        total - at_kill,
        "{summary}"
    );

    // Loading checks that each graph holds as many vectors as it has ids.
    let (ix, meta) = SnapshotDir::new(&index).load().unwrap().unwrap();
    assert_eq!(meta.positions.values().sum::<u64>(), total);
    assert_eq!(ix.len(Kind::Image), N, "each event exactly once");
    let ids: BTreeSet<&String> = ix.ids(Kind::Image).iter().collect();
    let expected: BTreeSet<String> = (0..N).map(|i| format!("ev-{i}")).collect();
    assert_eq!(ids, expected.iter().collect());
    for i in (0..N).step_by(97) {
        let hit = &ix.search(Kind::Image, &vectors[i], 1).unwrap()[0];
        assert_eq!(hit.event_id, format!("ev-{i}"));
        assert!(hit.score > 0.999, "{hit:?}");
    }
    // The group's offsets mirror the snapshot (lag monitoring).
    let committed = committed_offsets(&broker, &topic, &format!("{topic}-index"));
    let snapshot: BTreeMap<i32, i64> = meta
        .positions
        .iter()
        .map(|(k, v)| (k.rsplit('/').next().unwrap().parse().unwrap(), *v as i64))
        .collect();
    assert_eq!(committed, snapshot);
}

fn committed_offsets(broker: &str, topic: &str, group: &str) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let c: BaseConsumer = conn(broker)
        .client_config()
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(topic, p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// `index.dir = "s3://…"` on the dev MinIO: each snapshot is copied up with `CURRENT` named
/// last, an index starting on another machine (an empty local folder) copies it down and
/// reads on from its positions, and one starting behind catches up from S3.
#[test]
fn snapshots_on_s3_are_resumed_from_another_machine() {
    let Some(endpoint) = common::s3_endpoint() else {
        return;
    };
    let bucket = format!("index-{}", common::kafka::rand_suffix());
    let client = common::s3_client(&endpoint);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(client.create_bucket().bucket(&bucket).send())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let vectors = random_unit_vectors(400, 16, 5);
    let lines = |range: std::ops::Range<usize>| -> String {
        range
            .map(|i| embedding_record(&format!("ev-{i}"), &vectors[i]) + "\n")
            .collect()
    };
    std::fs::write(out.join("embeddings.jsonl"), lines(0..300)).unwrap();
    let run = |cache: &str| -> Value {
        let o = bin()
            .args(["index", "--once", "--json", "--out"])
            .arg(&out)
            .env("FUSIONSTREAM__INDEX__DIR", format!("s3://{bucket}/idx"))
            .env("FUSIONSTREAM__INDEX__CACHE_DIR", dir.path().join(cache))
            .env("FUSIONSTREAM__INDEX__LISTEN", "")
            .env("FUSIONSTREAM__S3__ENDPOINT", &endpoint)
            .env("FUSIONSTREAM__S3__FORCE_PATH_STYLE", "true")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let current = || -> String {
        let o = rt
            .block_on(
                client
                    .get_object()
                    .bucket(&bucket)
                    .key("idx/CURRENT")
                    .send(),
            )
            .unwrap();
        let bytes = rt.block_on(o.body.collect()).unwrap().into_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };

    let s = run("machine-a");
    assert_eq!(
        (s["records"].as_u64(), s["added"].as_u64()),
        (Some(300), Some(300))
    );
    assert_eq!(current().trim(), "snap-00000001");

    // Another machine, nothing local: it starts from S3's snapshot and reads only the new
    // records.
    let mut more = std::fs::OpenOptions::new()
        .append(true)
        .open(out.join("embeddings.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut more, lines(300..400).as_bytes()).unwrap();
    let s = run("machine-b");
    assert_eq!(s["records"], 100, "{s}");
    assert_eq!(s["entries"][0], json!(["image", 400]));
    assert_eq!(current().trim(), "snap-00000002");

    // The first machine, now behind, catches up from S3: nothing left to read.
    let s = run("machine-a");
    assert_eq!(s["records"], 0, "{s}");
    assert_eq!(s["entries"][0], json!(["image", 400]));
    let (ix, _) = SnapshotDir::new(dir.path().join("machine-a"))
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(ix.len(Kind::Image), 400);
    assert_eq!(
        ix.search(Kind::Image, &vectors[350], 1).unwrap()[0].event_id,
        "ev-350"
    );
    // Old snapshots are pruned on S3: the current one and the one before stay.
    let listed = rt
        .block_on(
            client
                .list_objects_v2()
                .bucket(&bucket)
                .prefix("idx/snap-")
                .send(),
        )
        .unwrap();
    let snaps: BTreeSet<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key()?.split('/').nth(1).map(str::to_owned))
        .collect();
    assert!(
        snaps.len() <= 2 && snaps.contains("snap-00000002"),
        "{snaps:?}"
    );
}
