//! The crash-loop guard, end to end: an event that kills the worker process (an injected
//! `abort()`, which no `catch_unwind` can stop) costs one crash in its batch and
//! `crash_guard.max_attempts` crashes alone, then it is dead-lettered `poison_suspected` with
//! the attempt count and every other event gets its outputs. Once with the local source (marks
//! in the checkpoint file), once with the real Kafka broker (marks in the offset-commit
//! metadata), and with an exactly-once Kafka worker (the marks inside its transactions; no
//! caption twice). Without the guard, the worker crash-loops: these tests fail on the code
//! before it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use common::kafka::*;
use serde_json::Value;

/// Starts of the worker a test allows before calling it a crash loop.
const MAX_STARTS: usize = 6;

/// The starts this test expects: one crash in a batch, two alone (`max_attempts` = 2), then
/// a run that sets the event aside.
const EXPECTED_CRASHES: usize = 3;

fn events(n: usize, poison: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = if i == poison {
                format!("ev-{i:04}@fault:abort")
            } else {
                format!("ev-{i:04}")
            };
            serde_json::json!({
                "id": id,
                "image": format!("media/scene{}.png", i % 6),
                "text": "a small red circle at the top",
                "tasks": ["caption", "embed"],
            })
            .to_string()
        })
        .collect()
}

#[cfg(unix)]
fn aborted(s: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt as _;
    s.signal() == Some(6)
}

fn assert_refused_once(dead: &[&Value], poison_id: &str) {
    let refused: Vec<&&Value> = dead
        .iter()
        .filter(|d| d["reason"] == "poison_suspected")
        .collect();
    assert_eq!(refused.len(), 1, "one refusal: {dead:?}");
    let d = refused[0];
    assert_eq!(d["attempts"], 2, "{d}");
    assert!(
        d["payload"].as_str().unwrap().contains(poison_id),
        "the payload is kept: {d}"
    );
}

#[cfg(unix)]
#[test]
fn an_event_that_aborts_the_local_worker_is_set_aside_after_a_few_restarts() {
    let _one = SERIAL.blocking_lock();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    let out = tmp.path().join("out");
    let (n, poison) = (40, 17);
    let lines = events(n, poison);
    std::fs::write(
        &file,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let mut crashes = 0;
    let mut logs = Vec::new();
    let finished = loop {
        assert!(
            crashes < MAX_STARTS,
            "crash loop: {crashes} starts\n{}",
            logs.join("\n----\n")
        );
        let run = Command::new(env!("CARGO_BIN_EXE_fusionstream"))
            .current_dir(common::root())
            .args(["run", "--json", "--events"])
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .env("FUSIONSTREAM_TEST_FAULTS", "1")
            .env("FUSIONSTREAM__TELEMETRY__PROGRESS", "never")
            .output()
            .unwrap();
        logs.push(String::from_utf8_lossy(&run.stderr).into_owned());
        if run.status.success() {
            break run;
        }
        assert!(
            aborted(&run.status),
            "the injected abort ends the process: {:?}\n{}",
            run.status,
            logs.last().unwrap()
        );
        crashes += 1;
    };
    assert_eq!(crashes, EXPECTED_CRASHES, "{}", logs.join("\n----\n"));
    assert!(
        logs[1].contains("last owner died"),
        "the second start knows: {}",
        logs[1]
    );
    let summary: Value = serde_json::from_slice(&finished.stdout).unwrap();
    assert_eq!(summary["dead_lettered"], 1, "{summary}");
    let dead = common::read_records(&out, "dead_letters");
    assert_refused_once(&dead.iter().collect::<Vec<_>>(), "ev-0017@fault:abort");
    assert_eq!(dead[0]["source"]["offset"], poison as u64);
    let captions = common::read_records(&out, "captions");
    for i in (0..n).filter(|i| *i != poison) {
        let id = format!("ev-{i:04}");
        assert!(
            captions.iter().any(|c| c["event_id"] == id.as_str()),
            "{id} has its caption"
        );
    }
    // A clean end: the next start needs no suspect mode.
    let cp: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint.json")).unwrap())
            .unwrap();
    let stream = file.display().to_string();
    assert_eq!(cp["positions"][&stream], n as u64);
    assert_eq!(cp["marks"][&stream], "fusionstream/1 clean", "{cp}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_aborts_a_kafka_worker_is_set_aside_after_a_few_restarts() {
    aborting_event_set_aside(false).await;
}

/// Exactly-once: the marks travel inside the transactions; the aborting event is still found
/// and set aside, and every other event's caption is written exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_worker_sets_an_aborting_event_aside_and_duplicates_nothing() {
    aborting_event_set_aside(true).await;
}

async fn aborting_event_set_aside(exactly_once: bool) {
    let Some(broker) = broker() else { return };
    let _one = SERIAL.lock().await;
    let t = topics(if exactly_once {
        "crashguard-eos"
    } else {
        "crashguard"
    });
    let txn_id = format!("{}-w", t.group);
    let mut settings = vec![("FUSIONSTREAM_TEST_FAULTS", "1"), SHORT_SESSION];
    if exactly_once {
        settings.push(("FUSIONSTREAM__KAFKA__DELIVERY", "exactly_once"));
        settings.push(("FUSIONSTREAM__KAFKA__TRANSACTIONAL_ID", txn_id.as_str()));
    }
    create(&broker, &t).await;
    let (n, poison) = (45, 22);
    produce(&broker, &t.input, &events(n, poison));
    let mut crashes = 0;
    let mut logs = Vec::new();
    loop {
        assert!(
            crashes < MAX_STARTS,
            "crash loop: {crashes} starts\n{}",
            logs.join("\n----\n")
        );
        let mut w = worker(&broker, &t, &settings);
        let started = Instant::now();
        let exit = loop {
            if let Some(s) = w.child.try_wait().unwrap() {
                break Some(s);
            }
            if committed(&broker, &t) >= n as i64 {
                break None;
            }
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "neither done nor dead:\n{}",
                w.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        match exit {
            Some(s) => {
                logs.push(w.log());
                assert!(aborted(&s), "aborted: {s:?}\n{}", logs.last().unwrap());
                crashes += 1;
            }
            None => {
                logs.push(stop(w));
                break;
            }
        }
    }
    assert_eq!(crashes, EXPECTED_CRASHES, "{}", logs.join("\n----\n"));
    let outputs = read_outputs(&broker, &t);
    let dead: Vec<&Value> = outputs
        .iter()
        .filter(|(s, ..)| s == "dead_letters")
        .map(|(_, v, _)| v)
        .collect();
    assert_refused_once(&dead, "ev-0022@fault:abort");
    let captions = captions_per_id(&outputs);
    let missing: Vec<String> = (0..n)
        .filter(|i| *i != poison)
        .map(|i| format!("ev-{i:04}"))
        .filter(|id| !captions.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    if exactly_once {
        let twice: Vec<_> = captions.iter().filter(|(_, c)| **c > 1).collect();
        assert!(twice.is_empty(), "captions written twice: {twice:?}");
    }
    // The clean stop marked every partition clean in the group's commit metadata.
    let marks = commit_metadata(&broker, &t);
    assert!(
        marks.iter().all(|m| m == "fusionstream/1 clean"),
        "{marks:?}"
    );
    eprintln!(
        "{n} events, one aborting: {crashes} crashes, {} duplicate captions",
        captions.values().map(|c| c - 1).sum::<usize>()
    );
}

/// The metadata of the group's committed offsets on the input partitions.
fn commit_metadata(broker: &str, t: &Topics) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = conn(broker)
        .client_config()
        .set("group.id", &t.group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&t.input, p);
    }
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    c.elements()
        .iter()
        .map(|e| e.metadata().to_owned())
        .collect()
}
