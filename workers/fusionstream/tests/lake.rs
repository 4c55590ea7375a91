//! The lake sink against the dev services: a real Iceberg REST catalog with its warehouse on
//! MinIO, read back by independent readers (pyiceberg, pyarrow: `lake_read.py`). Long because
//! every scenario needs the same real services, objects and readers (the helpers on top).
//!
//! - A backfill over a prefix with a broken object, SIGKILLed three times right after a
//!   commit and resumed: every object exactly once in each table, the broken one in the
//!   dead letters; every commit's snapshot carries its positions.
//! - Two shards at once into the same tables: both commit (optimistic concurrency), no
//!   object lost or doubled.
//! - An older table (fewer columns) evolves: the new columns are added, the old row reads.
//! - The Parquet mode, SIGKILLed once: the manifests list each object once; files of the
//!   killed attempt are listed by none.
//! - A Kafka stream into the tables, its worker SIGKILLed right after a commit and started
//!   again: every event exactly once (the rows of events the group's informational offsets
//!   replay are dropped: the lake has them).
//! - Bad lake settings are refused with every error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const SCENES: usize = 8;
const COPIES: usize = 3;
const OBJECTS: usize = SCENES * COPIES;

struct Lake {
    s3: String,
    catalog: String,
    warehouse: String,
    python: String,
}

fn lake() -> Option<Lake> {
    let s3 = common::s3_endpoint()?;
    let catalog = common::service("FUSIONSTREAM_TEST_ICEBERG_URI")?;
    let warehouse = common::service("FUSIONSTREAM_TEST_WAREHOUSE")?;
    let python = common::service("FUSIONSTREAM_PYTHON")?;
    Some(Lake {
        s3,
        catalog,
        warehouse,
        python,
    })
}

fn key(i: usize) -> String {
    format!("photos/img-{i:02}.png")
}

/// The objects: OBJECTS scenes and a PNG cut short under `photos/`.
async fn upload(endpoint: &str, bucket: &str) {
    let s3 = common::s3_client(endpoint);
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let mut objects: Vec<(String, Vec<u8>)> = (0..OBJECTS)
        .map(|i| {
            let scene = common::root().join(format!(
                "models/fixtures/shapes/images/scene{}.png",
                i % SCENES
            ));
            (key(i), std::fs::read(scene).unwrap())
        })
        .collect();
    let cut = objects[0].1[..200].to_vec();
    objects.push(("photos/broken.png".into(), cut));
    for (k, body) in objects {
        s3.put_object()
            .bucket(bucket)
            .key(k)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }
}

/// `fusionstream backfill PREFIX --sink lake` with `[lake]` from `env`.
fn backfill(l: &Lake, prefix: &str, env: &[(&str, &str)], out: &std::path::Path) -> Command {
    let mut c = common::bin();
    c.args([
        "backfill",
        prefix,
        "--sink",
        "lake",
        "--tasks",
        "caption,embed,tag",
        "--json",
    ])
    .arg("--out")
    .arg(out)
    .env("FUSIONSTREAM__S3__ENDPOINT", &l.s3)
    .env("FUSIONSTREAM__S3__FORCE_PATH_STYLE", "true")
    .env("FUSIONSTREAM__LAKE__CATALOG_URI", &l.catalog)
    .env("FUSIONSTREAM__LAKE__WAREHOUSE", &l.warehouse)
    .env("FUSIONSTREAM__LAKE__COMMIT_INTERVAL", "200ms")
    .env("FUSIONSTREAM__LAKE__COMMIT_MAX_EVENTS", "3")
    .env_remove("JOB_COMPLETION_INDEX");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn finished(o: &Output) -> Value {
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    serde_json::from_slice(&o.stdout).unwrap()
}

fn read(l: &Lake, mode: &str, arg: &str) -> Value {
    let o = Command::new(&l.python)
        .arg(common::root().join("workers/fusionstream/tests/lake_read.py"))
        .args([mode, arg])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// How many times each id appears.
fn counts(ids: &Value) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for id in ids.as_array().unwrap() {
        *m.entry(id.as_str().unwrap().to_owned()).or_default() += 1;
    }
    m
}

fn each_object_once(ids: &Value, what: &str) {
    let c = counts(ids);
    let want: BTreeMap<String, usize> = (0..OBJECTS).map(|i| (key(i), 1)).collect();
    assert_eq!(c, want, "{what}: every object exactly once");
}

/// The commit sequence number of `writer`'s intent, 0 if none yet.
async fn intent_seq(l: &Lake, ns: &str, writer: &str) -> u64 {
    let (bucket, prefix) = l.warehouse["s3://".len()..].split_once('/').unwrap();
    let key = format!("{prefix}/{ns}/_fusionstream/writers/{writer}.json");
    let s3 = common::s3_client(&l.s3);
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => {
            let b = o.body.collect().await.unwrap().into_bytes();
            serde_json::from_slice::<Value>(&b).unwrap()["seq"]
                .as_u64()
                .unwrap()
        }
        Err(_) => 0,
    }
}

/// Kill `child` with SIGKILL once `writer`'s intent passes `after`; false if it ended first.
async fn kill_after_commit(mut child: Child, l: &Lake, ns: &str, writer: &str, after: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if intent_seq(l, ns, writer).await > after {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no commit within 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceberg_every_object_once_after_sigkills() {
    let Some(l) = lake() else { return };
    let pid = std::process::id();
    let bucket = format!("lake-src-{pid}");
    upload(&l.s3, &bucket).await;
    let prefix = format!("s3://{bucket}/photos/");
    let tmp = tempfile::tempdir().unwrap();
    let ns = format!("kills{pid}");
    let env = [
        ("FUSIONSTREAM__LAKE__NAMESPACE", ns.as_str()),
        ("FUSIONSTREAM__LAKE__WRITER", "w1"),
    ];

    // SIGKILL three times, each right after a new commit, then run to the end.
    let mut kills = 0;
    for _ in 0..3 {
        let seq = intent_seq(&l, &ns, "w1").await;
        let child = backfill(&l, &prefix, &env, tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if kill_after_commit(child, &l, &ns, "w1", seq).await {
            kills += 1;
        }
    }
    assert!(
        kills >= 2,
        "the backfill ended before it could be killed twice"
    );
    let last = finished(&backfill(&l, &prefix, &env, tmp.path()).output().unwrap());
    let t = read(&l, "iceberg", &ns);
    for s in ["captions", "embeddings", "tags"] {
        each_object_once(&t[s]["event_ids"], s);
    }
    assert_eq!(
        counts(&t["dead_letters"]["event_ids"]).get("photos/broken.png"),
        Some(&1)
    );
    let caption = &t["captions"]["sample"];
    assert!(
        caption["caption"].as_str().is_some_and(|c| !c.is_empty()),
        "{caption}"
    );
    assert_eq!(caption["source"]["kind"], "s3");
    // Every snapshot names its writer, its commit and the positions it covers.
    for snap in t["captions"]["snapshots"].as_array().unwrap() {
        assert_eq!(snap["fusionstream.writer"], "w1");
        let pos: Value =
            serde_json::from_str(snap["fusionstream.positions"].as_str().unwrap()).unwrap();
        let shard = &pos[format!("{prefix}#0/1")];
        assert!(shard.is_string(), "{pos}");
    }
    // A rerun after the end adds nothing.
    assert!(
        last["read"].as_u64().unwrap() < (OBJECTS + 1) as u64,
        "{last}"
    );
    let again = finished(&backfill(&l, &prefix, &env, tmp.path()).output().unwrap());
    assert_eq!(again["read"], 0, "{again}");
    assert_eq!(read(&l, "iceberg", &ns)["captions"]["rows"], OBJECTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceberg_two_shards_commit_to_the_same_tables() {
    let Some(l) = lake() else { return };
    let pid = std::process::id();
    let bucket = format!("lake-shards-{pid}");
    upload(&l.s3, &bucket).await;
    let prefix = format!("s3://{bucket}/photos/");
    let tmp = tempfile::tempdir().unwrap();
    // Two shards at once into one namespace: every object once over both.
    let ns2 = format!("shards{pid}");
    let children: Vec<Child> = (0..2)
        .map(|shard| {
            let dir = tmp.path().join(format!("shard{shard}"));
            backfill(
                &l,
                &prefix,
                &[("FUSIONSTREAM__LAKE__NAMESPACE", ns2.as_str())],
                &dir,
            )
            .args(["--shards", "2", "--shard", &shard.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        finished(&c.wait_with_output().unwrap());
    }
    let t = read(&l, "iceberg", &ns2);
    each_object_once(&t["captions"]["event_ids"], "two shards");
    let writers: std::collections::BTreeSet<_> = t["captions"]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["fusionstream.writer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(writers.len(), 2, "{writers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_table_evolves_and_its_rows_still_read() {
    let Some(l) = lake() else { return };
    let pid = std::process::id();
    let bucket = format!("lake-evo-{pid}");
    upload(&l.s3, &bucket).await;
    let ns = format!("evolve{pid}");
    read(&l, "create-old", &ns);
    let tmp = tempfile::tempdir().unwrap();
    let prefix = format!("s3://{bucket}/photos/");
    let env = [("FUSIONSTREAM__LAKE__NAMESPACE", ns.as_str())];
    finished(&backfill(&l, &prefix, &env, tmp.path()).output().unwrap());
    let t = read(&l, "iceberg", &ns);
    let c = &t["captions"];
    assert_eq!(c["rows"], OBJECTS + 1, "the old row and one per object");
    let cols: Vec<&str> = c["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for col in [
        "event_id", "timings", "caption", "bundle", "source", "degraded",
    ] {
        assert!(cols.contains(&col), "{col} in {cols:?}");
    }
    assert_eq!(counts(&c["event_ids"]).get("old-row"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_and_manifests_after_a_sigkill() {
    let Some(l) = lake() else { return };
    let pid = std::process::id();
    let bucket = format!("lake-pq-{pid}");
    upload(&l.s3, &bucket).await;
    let prefix = format!("s3://{bucket}/photos/");
    let ns = format!("pq{pid}");
    let env = [
        ("FUSIONSTREAM__LAKE__FORMAT", "parquet"),
        ("FUSIONSTREAM__LAKE__NAMESPACE", ns.as_str()),
        ("FUSIONSTREAM__LAKE__WRITER", "p1"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let root = format!("{}/{ns}", l.warehouse);
    let (bucket_w, pfx) = l.warehouse["s3://".len()..].split_once('/').unwrap();
    let s3 = common::s3_client(&l.s3);
    let manifests = |s3: aws_sdk_s3::Client| {
        let (b, p) = (bucket_w.to_owned(), format!("{pfx}/{ns}/_manifests/p1/"));
        async move {
            s3.list_objects_v2()
                .bucket(b)
                .prefix(p)
                .send()
                .await
                .map_or(0, |o| o.contents().len())
        }
    };
    let mut child = backfill(&l, &prefix, &env, tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while manifests(s3.clone()).await < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    finished(&backfill(&l, &prefix, &env, tmp.path()).output().unwrap());
    let t = read(&l, "parquet", &root);
    for s in ["captions", "embeddings", "tags"] {
        each_object_once(&t["streams"][s]["event_ids"], s);
        for f in t["streams"][s]["files"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            assert!(
                f.contains(&format!("/stream={s}/dt=")) && f.ends_with(".parquet"),
                "{f}"
            );
        }
    }
    assert_eq!(
        counts(&t["streams"]["dead_letters"]["event_ids"]).get("photos/broken.png"),
        Some(&1)
    );
    assert!(t["manifests"].as_u64().unwrap() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_into_iceberg_exactly_once_after_a_sigkill() {
    let Some(l) = lake() else { return };
    let Some(broker) = common::kafka::broker() else {
        return;
    };
    let topics = common::kafka::topics("lake");
    common::kafka::create(&broker, &topics).await;
    const N: usize = 60;
    common::kafka::produce(&broker, &topics.input, &common::kafka::caption_events(N));
    let ns = format!("kafka{}", std::process::id());
    let extra = [
        ("FUSIONSTREAM__SINK__KIND", "lake"),
        ("FUSIONSTREAM__S3__ENABLED", "true"),
        ("FUSIONSTREAM__S3__ENDPOINT", l.s3.as_str()),
        ("FUSIONSTREAM__S3__FORCE_PATH_STYLE", "true"),
        ("FUSIONSTREAM__LAKE__CATALOG_URI", l.catalog.as_str()),
        ("FUSIONSTREAM__LAKE__WAREHOUSE", l.warehouse.as_str()),
        ("FUSIONSTREAM__LAKE__NAMESPACE", ns.as_str()),
        ("FUSIONSTREAM__LAKE__WRITER", "k1"),
        ("FUSIONSTREAM__LAKE__COMMIT_INTERVAL", "200ms"),
        ("FUSIONSTREAM__LAKE__COMMIT_MAX_EVENTS", "4"),
    ];
    let mut w = common::kafka::worker(&broker, &topics, &extra);
    let deadline = Instant::now() + Duration::from_secs(120);
    while intent_seq(&l, &ns, "k1").await < 2 {
        assert!(Instant::now() < deadline, "no commit: {}", w.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.kill();
    let w = common::kafka::worker(&broker, &topics, &extra);
    let captions = |t: &Value| t["captions"]["event_ids"].as_array().map_or(0, Vec::len);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let t = read(&l, "iceberg", &ns);
        if captions(&t) >= N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {N} captions: {}",
            captions(&t),
            w.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    common::kafka::stop(w);
    let t = read(&l, "iceberg", &ns);
    for s in ["captions", "embeddings"] {
        let c = counts(&t[s]["event_ids"]);
        let want: BTreeMap<String, usize> = (0..N).map(|i| (format!("ev-{i:04}"), 1)).collect();
        assert_eq!(c, want, "{s}: every event exactly once");
    }
    let pos: Value = serde_json::from_str(
        t["captions"]["snapshots"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["fusionstream.positions"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let total: u64 = (0..3)
        .map(|p| {
            pos[format!("kafka:{}/{p}", topics.input)]
                .as_str()
                .map_or(0, |s| s.parse::<u64>().unwrap())
        })
        .sum();
    assert_eq!(
        total, N as u64,
        "the last commit covers every offset: {pos}"
    );
}

#[test]
fn bad_lake_settings_are_refused_with_every_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = common::bin()
        .args(["backfill", "s3://b/p/", "--sink", "lake", "--out"])
        .arg(tmp.path())
        .env("FUSIONSTREAM__LAKE__WAREHOUSE", "/tmp/not-s3")
        .env("FUSIONSTREAM__LAKE__NAMESPACE", "a/b")
        .env("FUSIONSTREAM__LAKE__ROW_GROUP_BYTES", "10")
        .env("FUSIONSTREAM__LAKE__COMMIT_INTERVAL", "0s")
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "lake.warehouse",
        "lake.catalog_uri",
        "lake.namespace",
        "lake.row_group_bytes",
        "lake.commit_interval",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
    let o = common::bin()
        .args(["backfill", "s3://b/p/", "--sink", "pond"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected local, kafka or lake"));
}
