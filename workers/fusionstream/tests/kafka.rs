//! `fusionstream run` against a real Apache Kafka broker (started by
//! `scripts/dev-services.sh up`; its address in `FUSIONSTREAM_TEST_KAFKA`): the example events
//! produced by Kafka's own console producer, every output on its topic and valid against the
//! schemas, offsets committed; a worker killed with SIGKILL in the middle of a stream and
//! restarted, several times: every event has its outputs.
//!
//! Without `FUSIONSTREAM_TEST_KAFKA` these tests say so and pass, unless
//! `FUSIONSTREAM_REQUIRE_SERVICES=1` (set by `.ci/run`), where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fusionstream_io::kafka::KafkaConnection;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};

fn broker() -> Option<String> {
    match std::env::var("FUSIONSTREAM_TEST_KAFKA") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var("FUSIONSTREAM_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "FUSIONSTREAM_TEST_KAFKA is not set: run scripts/dev-services.sh up"
            );
            eprintln!("skipped: no Kafka (run scripts/dev-services.sh up and export its env)");
            None
        }
    }
}

struct Topics {
    input: String,
    outputs: [String; 5],
    group: String,
}

const STREAMS: [&str; 5] = ["captions", "answers", "embeddings", "tags", "dead_letters"];

fn topics(tag: &str) -> Topics {
    let run = format!(
        "{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    Topics {
        input: format!("test.{run}.events"),
        outputs: STREAMS.map(|s| format!("test.{run}.{s}")),
        group: format!("test-{run}"),
    }
}

fn conn(broker: &str) -> KafkaConnection {
    KafkaConnection {
        bootstrap_servers: broker.to_owned(),
        client_id: "fusionstream-test".into(),
        properties: BTreeMap::new(),
    }
}

async fn create(broker: &str, t: &Topics) {
    let mut all: Vec<(&str, i32)> = vec![(t.input.as_str(), 3)];
    all.extend(t.outputs.iter().map(|o| (o.as_str(), 1)));
    conn(broker).ensure_topics(&all).await.unwrap();
}

/// Produce lines with Kafka's own console producer (a real third-party client).
fn produce(broker: &str, topic: &str, lines: &[String]) {
    let mut child = Command::new(common::root().join("scripts/dev-services.sh"))
        .args([
            "kafka-tool",
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server",
            broker,
            "--topic",
            topic,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    assert!(child.wait().unwrap().success(), "console producer failed");
}

fn worker(broker: &str, t: &Topics, extra: &[(&str, &str)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fusionstream"));
    c.current_dir(common::root())
        .arg("run")
        .env("FUSIONSTREAM__SOURCE__KIND", "kafka")
        .env("FUSIONSTREAM__SINK__KIND", "kafka")
        .env("FUSIONSTREAM__KAFKA__BOOTSTRAP_SERVERS", broker)
        .env("FUSIONSTREAM__KAFKA__GROUP_ID", &t.group)
        .env(
            "FUSIONSTREAM__KAFKA__INPUT_TOPICS",
            format!("[\"{}\"]", t.input),
        )
        .env("FUSIONSTREAM__TELEMETRY__PROGRESS", "never")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (s, topic) in STREAMS.iter().zip(&t.outputs) {
        let key = if *s == "dead_letters" {
            "DEAD_LETTERS".to_owned()
        } else {
            s.to_uppercase()
        };
        c.env(format!("FUSIONSTREAM__KAFKA__{key}_TOPIC"), topic);
    }
    for (k, v) in extra {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Every record of the output topics so far: (stream, value, headers).
fn read_outputs(
    broker: &str,
    t: &Topics,
) -> Vec<(String, serde_json::Value, BTreeMap<String, String>)> {
    let consumer: BaseConsumer = conn(broker)
        .client_config()
        .set("group.id", format!("{}-reader-{}", t.group, rand_suffix()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for o in &t.outputs {
        tpl.add_partition_offset(o, 0, Offset::Beginning).unwrap();
        let (_, hi) = consumer
            .fetch_watermarks(o, 0, Duration::from_secs(5))
            .unwrap();
        ends.insert(o.clone(), hi);
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ends
        .iter()
        .any(|(o, hi)| seen.get(o).copied().unwrap_or(0) < *hi)
    {
        assert!(Instant::now() < deadline, "could not read the outputs back");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let stream = STREAMS[t.outputs.iter().position(|o| o == m.topic()).unwrap()];
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for h in h.iter() {
                    headers.insert(
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            assert_eq!(
                m.key(),
                Some(v["event_id"].as_str().unwrap_or("").as_bytes()),
                "keyed by event id"
            );
            *seen.entry(m.topic().to_owned()).or_default() = m.offset() + 1;
            out.push((stream.to_owned(), v, headers));
        }
    }
    out
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn committed(broker: &str, t: &Topics) -> i64 {
    let consumer: BaseConsumer = conn(broker)
        .client_config()
        .set("group.id", &t.group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&t.input, p);
    }
    // The group coordinator may still be loading (NotCoordinator): that reads as nothing
    // committed yet, and callers poll.
    let Ok(c) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return 0;
    };
    c.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str, secs: u64) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn stop(mut child: Child) -> String {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "worker exit {status:?}: {err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_through_kafka_with_offsets_committed() {
    let Some(broker) = broker() else { return };
    let t = topics("examples");
    create(&broker, &t).await;
    let mut lines = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(common::root().join("examples/events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        lines.extend(
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    produce(&broker, &t.input, &lines);
    let w = worker(&broker, &t, &[]);
    // The embedded run's counts: 10 captions, 6 answers, 21 embeddings, 20 tags, 13 dead letters.
    let expected = [10usize, 6, 21, 20, 13];
    wait_for(
        || committed(&broker, &t) == lines.len() as i64,
        "all offsets committed",
        180,
    );
    let err = stop(w);
    assert!(err.contains("written to  Kafka topics"), "{err}");
    let recs = read_outputs(&broker, &t);
    for (i, s) in STREAMS.iter().enumerate() {
        let n = recs.iter().filter(|r| r.0 == *s).count();
        assert_eq!(n, expected[i], "{s} records");
    }
    for (stream, v, headers) in &recs {
        let schema = common::validator(common::schema_of_stream(stream));
        let errs = common::errors(&schema, v);
        assert!(errs.is_empty(), "{stream}: {errs:?}");
        assert_eq!(v["source"]["kind"], "kafka");
        assert_eq!(headers.get("schema_version").map(String::as_str), Some("1"));
        assert_eq!(
            headers.get("bundle_version").map(String::as_str),
            Some("1.1.0")
        );
    }
    let caption = recs
        .iter()
        .find(|r| r.0 == "captions" && r.1["event_id"] == "full-0")
        .unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("models/fixtures/shapes/reference.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(caption.1["caption"], reference["caption_greedy"][0]);
    let degraded = recs
        .iter()
        .find(|r| r.0 == "embeddings" && r.1["event_id"] == "degraded-missing")
        .unwrap();
    assert_eq!(degraded.1["degraded"][0]["reason"], "image_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    let Some(broker) = broker() else { return };
    let t = topics("crash");
    create(&broker, &t).await;
    let n = 240;
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("ev-{i:04}"),
                "image": format!("media/scene{}.png", i % 6),
                "text": "a small red circle at the top",
                "tasks": ["caption", "embed"],
            })
            .to_string()
        })
        .collect();
    produce(&broker, &t.input, &lines);
    let slow = [
        ("FUSIONSTREAM__GENERATE_LANE__MAX_ITEMS", "1"),
        ("FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT", "16"),
    ];
    let mut kills = 0;
    for round in 0..3 {
        let mut w = worker(&broker, &t, &slow);
        let before = committed(&broker, &t);
        // Let it get some way into the stream, then kill it without warning.
        wait_for(
            || committed(&broker, &t) >= before + 20 || committed(&broker, &t) >= n as i64,
            "progress",
            180,
        );
        if committed(&broker, &t) >= n as i64 {
            stop(w);
            break;
        }
        w.kill().unwrap();
        w.wait().unwrap();
        kills += 1;
        eprintln!(
            "round {round}: killed at {} committed",
            committed(&broker, &t)
        );
    }
    assert!(
        kills >= 2,
        "the worker was killed mid-stream at least twice ({kills})"
    );
    let w = worker(&broker, &t, &slow);
    wait_for(
        || committed(&broker, &t) >= n as i64,
        "all offsets committed",
        300,
    );
    stop(w);
    let recs = read_outputs(&broker, &t);
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for (s, v, _) in &recs {
        if s == "captions" {
            *per_id
                .entry(v["event_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    let ids: BTreeSet<String> = (0..n).map(|i| format!("ev-{i:04}")).collect();
    let missing: Vec<_> = ids.iter().filter(|i| !per_id.contains_key(*i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let dups: usize = per_id.values().map(|c| c - 1).sum();
    eprintln!("{n} events, {kills} kills, {dups} duplicate captions (allowed)");
}
