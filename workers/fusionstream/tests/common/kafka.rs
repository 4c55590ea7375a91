//! Helpers of the tests against the dev Kafka broker: topics per test, producing with the
//! broker's own console producer, running a worker (in the test process, or the binary where
//! the binary itself is under test), reading outputs and committed offsets back.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fusionstream_io::kafka::KafkaConnection;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use super::root;

/// Serialises the tests of one binary that run worker processes (two cores).
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The dev broker's address (see [`super::service`]).
pub fn broker() -> Option<String> {
    super::service("FUSIONSTREAM_TEST_KAFKA")
}

pub struct Topics {
    pub input: String,
    pub outputs: [String; 6],
    pub group: String,
}

pub const STREAMS: [&str; 6] = [
    "captions",
    "answers",
    "embeddings",
    "tags",
    "moderation",
    "dead_letters",
];

/// Index of a stream in [`STREAMS`] and [`Topics::outputs`].
pub fn stream_index(name: &str) -> usize {
    STREAMS.iter().position(|s| *s == name).unwrap()
}

pub fn topics(tag: &str) -> Topics {
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

pub fn conn(broker: &str) -> KafkaConnection {
    KafkaConnection {
        bootstrap_servers: broker.to_owned(),
        client_id: "fusionstream-test".into(),
        properties: BTreeMap::new(),
    }
}

pub async fn create(broker: &str, t: &Topics) {
    let mut all: Vec<(&str, i32)> = vec![(t.input.as_str(), 3)];
    all.extend(t.outputs.iter().map(|o| (o.as_str(), 1)));
    conn(broker).ensure_topics(&all).await.unwrap();
}

/// Produce lines with Kafka's own console producer (a real third-party client), keyed by
/// their index: the key hash spreads them evenly over the partitions (unkeyed, the sticky
/// partitioner sends whole batches to one partition, and a test that moves a partition
/// to a second worker may find it already finished).
pub fn produce(broker: &str, topic: &str, lines: &[String]) {
    let mut child = Command::new(root().join("scripts/dev-services.sh"))
        .args([
            "kafka-tool",
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server",
            broker,
            "--topic",
            topic,
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=\t",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for (i, l) in lines.iter().enumerate() {
            assert!(
                !l.contains('\t'),
                "a tab would split the key from the value: {l}"
            );
            writeln!(stdin, "{i}\t{l}").unwrap();
        }
    }
    assert!(child.wait().unwrap().success(), "console producer failed");
}

/// A worker process; its stderr goes to a file (a pipe nobody reads would fill up and
/// block it).
pub struct Worker {
    pub child: Child,
    log: tempfile::NamedTempFile,
}

impl Worker {
    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// SIGKILL, no warning.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// The `FUSIONSTREAM__…` entries of a Kafka-to-Kafka worker on `t`, then `extra`.
pub fn kafka_env(broker: &str, t: &Topics, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("FUSIONSTREAM__SOURCE__KIND", "kafka".to_owned()),
        ("FUSIONSTREAM__SINK__KIND", "kafka".to_owned()),
        ("FUSIONSTREAM__KAFKA__BOOTSTRAP_SERVERS", broker.to_owned()),
        ("FUSIONSTREAM__KAFKA__GROUP_ID", t.group.clone()),
        (
            "FUSIONSTREAM__KAFKA__INPUT_TOPICS",
            format!("[\"{}\"]", t.input),
        ),
        ("FUSIONSTREAM__TELEMETRY__PROGRESS", "never".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (s, topic) in STREAMS.iter().zip(&t.outputs) {
        let key = if *s == "dead_letters" {
            "DEAD_LETTERS".to_owned()
        } else {
            s.to_uppercase()
        };
        env.push((format!("FUSIONSTREAM__KAFKA__{key}_TOPIC"), topic.clone()));
    }
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// A worker process (`fusionstream run`) on `t`: for the tests of the binary itself
/// (SIGKILL, what it logs, process-wide tracing).
pub fn worker(broker: &str, t: &Topics, extra: &[(&str, &str)]) -> Worker {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_fusionstream"));
    c.current_dir(root())
        .arg("run")
        .envs(kafka_env(broker, t, extra))
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap());
    Worker {
        child: c.spawn().unwrap(),
        log,
    }
}

/// A worker on `t` inside the test process (`app::run`, see [`super::in_process`]).
pub fn in_process(broker: &str, t: &Topics, extra: &[(&str, &str)]) -> super::in_process::Worker {
    let env = kafka_env(broker, t, extra);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    super::in_process::start(super::in_process::config(
        &[],
        &pairs,
        &fusionstream::config::Overrides::default(),
    ))
}

/// The group session of tests that kill or abort workers: the broker's shortest (not the 45 s
/// default), since a dead worker holds its partitions until the group gives up on it and the
/// next start waits that long for them. Not for tests with broker outages: a session shorter
/// than the outage is lost during it.
pub const SHORT_SESSION: (&str, &str) = ("FUSIONSTREAM__KAFKA__SESSION_TIMEOUT", "6s");

/// Every record of the output topics so far: (stream, value, headers), read as a downstream
/// consumer of an exactly-once worker must (`read_committed`: records of aborted
/// transactions are never seen; those of transactions still open are waited for).
pub fn read_outputs(
    broker: &str,
    t: &Topics,
) -> Vec<(String, serde_json::Value, BTreeMap<String, String>)> {
    let consumer: BaseConsumer = conn(broker)
        .client_config()
        .set("group.id", format!("{}-reader-{}", t.group, rand_suffix()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
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
    // The position, not the last record's offset: transaction markers take offsets too and
    // are never delivered.
    let behind = |seen: &BTreeMap<String, i64>| {
        let position = consumer.position().unwrap();
        ends.iter().any(|(o, hi)| {
            let at = match position.find_partition(o, 0).map(|e| e.offset()) {
                Some(Offset::Offset(p)) => p,
                _ => 0,
            };
            at.max(seen.get(o).copied().unwrap_or(0)) < *hi
        })
    };
    while behind(&seen) {
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

pub fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub fn committed(broker: &str, t: &Topics) -> i64 {
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

pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str, secs: u64) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// SIGTERM, wait for a clean exit; returns the log.
pub fn stop(mut w: Worker) -> String {
    Command::new("kill")
        .args(["-TERM", &w.child.id().to_string()])
        .status()
        .unwrap();
    let status = w.child.wait().unwrap();
    let err = w.log();
    assert!(status.success(), "worker exit {status:?}: {err}");
    err
}

/// `n` events asking for a caption and an embedding of a bundled scene.
pub fn caption_events(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("ev-{i:04}"),
                "image": format!("media/scene{}.png", i % 6),
                "text": "a small red circle at the top",
                "tasks": ["caption", "embed"],
            })
            .to_string()
        })
        .collect()
}

/// Captions per event id among output records (from [`read_outputs`]).
pub fn captions_per_id(
    recs: &[(String, serde_json::Value, BTreeMap<String, String>)],
) -> BTreeMap<String, usize> {
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for (s, v, _) in recs {
        if s == "captions" {
            *per_id
                .entry(v["event_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    per_id
}

/// Every event of [`caption_events`] has a caption on the output topic (duplicates allowed);
/// returns the number of duplicates.
pub fn assert_every_caption(broker: &str, t: &Topics, n: usize) -> usize {
    let per_id = captions_per_id(&read_outputs(broker, t));
    let missing: Vec<String> = (0..n)
        .map(|i| format!("ev-{i:04}"))
        .filter(|i| !per_id.contains_key(i))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} of {n}: {missing:?}",
        missing.len()
    );
    per_id.values().map(|c| c - 1).sum()
}

/// Events read by a worker, from its end-of-run summary.
pub fn events_read(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.trim().strip_prefix("events"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in the log:\n{log}"))
}
