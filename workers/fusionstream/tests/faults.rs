//! Faults of the services, injected by stopping them with `scripts/dev-services.sh stop` and
//! starting them again on their data:
//!
//! - the Kafka broker restarts in the middle of a stream: the same worker process recovers
//!   by itself and every event gets its outputs;
//! - MinIO is down for a while: the fetches retry and the events are delayed, not lost or
//!   degraded; down past the retry budget: the events degrade (or, under a dead-letter
//!   policy, are dead-lettered) with the reason;
//! - MinIO is down when a backfill starts listing its prefix: the listing retries, and once
//!   MinIO is back every object gets its outputs;
//! - the broker is down when the worker commits the tail of a stream that then goes quiet:
//!   the commit is retried until the broker confirms it, without new events to carry it.
//!
//! The workers run in the test process (`app::run`). This binary runs alone (cargo runs test binaries one after another), so stopping a
//! service cannot disturb the other tests; a guard starts it again even when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::in_process;
use common::kafka::*;
use fusionstream::config::{BackfillOverrides, Overrides};
use serde_json::Value;

/// One test at a time: each stops a service.
static ONE_FAULT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn services(verb: &str, name: &str) {
    let ok = Command::new(common::root().join("scripts/dev-services.sh"))
        .args([verb, name])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "dev-services.sh {verb} {name} failed");
}

/// Stops a service; starts it again when dropped (also on a failed assertion).
struct Outage(&'static str, bool);

impl Outage {
    fn begin(name: &'static str) -> Self {
        services("stop", name);
        Self(name, false)
    }
    fn end(&mut self) {
        if !self.1 {
            services("start", self.0);
            self.1 = true;
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.end();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_recovers_without_a_worker_restart() {
    let Some(broker) = broker() else { return };
    let _one = ONE_FAULT.lock().await;
    let t = topics("restart");
    create(&broker, &t).await;
    let n = 600;
    produce(&broker, &t.input, &caption_events(n));
    let w = in_process(
        &broker,
        &t,
        &[
            ("FUSIONSTREAM__GENERATE_LANE__MAX_ITEMS", "1"),
            ("FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT", "16"),
        ],
    );
    wait_for(|| committed(&broker, &t) >= 20, "progress", 180);
    let mut outage = Outage::begin("kafka");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(w.is_running(), "the worker survives the broker's absence");
    outage.end();
    let mut back = 0;
    wait_for(
        || {
            back = committed(&broker, &t);
            back > 0
        },
        "the group coordinator back",
        120,
    );
    assert!(
        back < n as i64,
        "work was left for after the restart ({back} of {n} committed)"
    );
    wait_for(
        || committed(&broker, &t) >= n as i64,
        "all offsets committed after the restart",
        300,
    );
    let summary = w.stop().await;
    let dups = assert_every_caption(&broker, &t, n);
    eprintln!(
        "{n} events across a broker restart ({back} committed when it came back), \
         {dups} duplicate captions (allowed); {} failed commits",
        summary.stats.commit_failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_while_the_broker_is_down_is_retried_on_a_quiet_stream() {
    let Some(broker) = broker() else { return };
    let _one = ONE_FAULT.lock().await;
    let t = topics("commit");
    create(&broker, &t).await;
    let n = 30;
    produce(&broker, &t.input, &caption_events(n));
    // Commits only after 12 s of quiet: the outputs are published well before the first one.
    let w = in_process(
        &broker,
        &t,
        &[("FUSIONSTREAM__CHECKPOINT__INTERVAL", "12s")],
    );
    wait_for(
        || {
            read_outputs(&broker, &t)
                .iter()
                .filter(|(s, ..)| s == "captions")
                .count()
                >= n
        },
        "every caption published",
        180,
    );
    assert_eq!(committed(&broker, &t), 0, "nothing committed yet");
    // The stream is now quiet; the broker goes away before the commit and stays away past it.
    let mut outage = Outage::begin("kafka");
    tokio::time::sleep(Duration::from_secs(25)).await;
    outage.end();
    // No event arrives any more: only a retry can commit the tail.
    wait_for(
        || committed(&broker, &t) >= n as i64,
        "the tail committed after the broker came back",
        120,
    );
    let summary = w.stop().await;
    eprintln!(
        "commit across a broker outage on a quiet stream: {} failed commits",
        summary.stats.commit_failures
    );
}

/// A worker on `events` with media in `bucket`, config layered from `toml`, writing to
/// `dir/out` (in the test process).
fn local_worker(dir: &Path, events: &[Value], toml: &str) -> (in_process::Worker, PathBuf) {
    let file = dir.join("events.jsonl");
    std::fs::write(
        &file,
        events.iter().map(|e| format!("{e}\n")).collect::<String>(),
    )
    .unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, toml).unwrap();
    let out = dir.join("out");
    let overrides = Overrides {
        events: Some(file),
        out: Some(out.clone()),
        ..Overrides::default()
    };
    let c = in_process::config(&[cfg], &[], &overrides);
    (in_process::start(c), out)
}

async fn upload(endpoint: &str, bucket: &str, n: usize) {
    let s3 = common::s3_client(endpoint);
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    for i in 0..n {
        let body =
            std::fs::read(common::root().join(format!("examples/media/scene{i}.png"))).unwrap();
        s3.put_object()
            .bucket(bucket)
            .key(format!("scene{i}.png"))
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }
}

fn s3_config(endpoint: &str, bucket: &str, media: &str) -> String {
    format!(
        "[s3]\nenabled = true\nendpoint = \"{endpoint}\"\nforce_path_style = true\n\
         allowed_buckets = [\"{bucket}\"]\n\n[media]\n{media}\n\n\
         [degradation]\ntenants = {{ strict = \"dead_letter\" }}\n"
    )
}

fn s3_events(bucket: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("s3-{i}"),
                "image": format!("s3://{bucket}/scene{}.png", i % 6),
                "text": "a small red circle at the top",
                "tasks": ["caption", "embed"],
                "tenant": if i % 4 == 3 { "strict" } else { "default" },
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minio_down_for_a_while_delays_events_and_past_the_budget_degrades_them() {
    let Some(endpoint) = common::s3_endpoint() else {
        return;
    };
    let _one = ONE_FAULT.lock().await;
    let bucket = format!("outage-{}", std::process::id());
    upload(&endpoint, &bucket, 6).await;
    let n = 12;

    // Down for a few seconds, inside a generous retry budget: delayed, nothing degraded.
    let tmp = tempfile::tempdir().unwrap();
    let generous =
        "retries = 40\nbackoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\ntimeout = \"2s\"";
    let mut outage = Outage::begin("minio");
    let (w, out) = local_worker(
        tmp.path(),
        &s3_events(&bucket, n),
        &s3_config(&endpoint, &bucket, generous),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    outage.end();
    assert_eq!(w.finish().await.end, "completed");
    let captions = common::read_records(&out, "captions");
    let embeddings = common::read_records(&out, "embeddings");
    assert_eq!(captions.len(), n, "every event captioned after the outage");
    assert_eq!(embeddings.len(), n);
    for e in &embeddings {
        assert_eq!(e["degraded"], serde_json::json!([]), "{e}");
    }
    assert!(common::read_records(&out, "dead_letters").is_empty());

    // Down for the whole run with a small budget: degraded with the reason, or
    // dead-lettered for the tenant whose policy says so. Nothing vanishes.
    let tmp = tempfile::tempdir().unwrap();
    let small = "retries = 1\nbackoff_initial = \"50ms\"\nbackoff_max = \"50ms\"\ntimeout = \"1s\"";
    let mut outage = Outage::begin("minio");
    let (w, out) = local_worker(
        tmp.path(),
        &s3_events(&bucket, n),
        &s3_config(&endpoint, &bucket, small),
    );
    assert_eq!(w.finish().await.end, "completed");
    outage.end();
    let embeddings = common::read_records(&out, "embeddings");
    let dead = common::read_records(&out, "dead_letters");
    assert!(
        common::read_records(&out, "captions").is_empty(),
        "no caption without the image"
    );
    assert_eq!(
        embeddings.len() + dead.len(),
        n,
        "every event accounted for"
    );
    assert_eq!(dead.len(), n / 4, "the strict tenant's events");
    for e in &embeddings {
        assert_eq!(e["degraded"][0]["reason"], "image_fetch_failed", "{e}");
        assert!(e["text_embedding"].is_array());
    }
    for d in &dead {
        assert_eq!(d["reason"], "image_fetch_failed", "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_listing_waits_out_a_minio_outage() {
    let Some(endpoint) = common::s3_endpoint() else {
        return;
    };
    let _one = ONE_FAULT.lock().await;
    let bucket = format!("listing-{}", std::process::id());
    upload(&endpoint, &bucket, 6).await;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    std::fs::write(
        &cfg,
        s3_config(
            &endpoint,
            &bucket,
            "retries = 40\nbackoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\ntimeout = \"2s\"",
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let overrides = Overrides {
        out: Some(out.clone()),
        backfill: Some(BackfillOverrides {
            prefix: format!("s3://{bucket}/"),
            ..BackfillOverrides::default()
        }),
        ..Overrides::default()
    };
    let mut outage = Outage::begin("minio");
    let w = in_process::start(in_process::config(&[cfg], &[], &overrides));
    tokio::time::sleep(Duration::from_secs(5)).await;
    outage.end();
    let summary = w.finish().await;
    assert!(
        summary.stats.source_retries > 0,
        "the listing met the outage: {summary:?}"
    );
    let captions = common::read_records(&out, "captions");
    assert_eq!(
        captions.len(),
        6,
        "every object after the outage: {summary:?}"
    );
    for c in &captions {
        assert_eq!(c["degraded"], serde_json::json!([]), "{c}");
    }
}
