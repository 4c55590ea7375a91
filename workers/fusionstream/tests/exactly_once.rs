//! Exactly-once delivery (`kafka.delivery = "exactly_once"`) against the real broker, read
//! back as downstream consumers must (`isolation.level=read_committed`):
//! - a worker SIGKILLed mid-transaction, again and again, with malformed and oversized
//!   records in the stream: every expected output exactly once (captions, embeddings, dead
//!   letters), none lost, every offset committed;
//! - a zombie: a second worker with the same `transactional.id` fences the first, which stops
//!   without writing; the second finishes; nothing twice;
//! - a second worker joining mid-stream (revokes during open transactions: the revoked
//!   partitions' transaction is settled in the rebalance callback) and leaving again:
//!   nothing twice, nothing lost.
//!
//! The crash guard under exactly-once is in `crash_guard.rs`, records over the broker's limit
//! in `kafka_records.rs`, a broker restart in the exactly-once chaos soak (`benches/chaos.sh`,
//! short in the test command).
//!
//! Without `FUSIONSTREAM_TEST_KAFKA` these tests say so and pass, unless
//! `FUSIONSTREAM_REQUIRE_SERVICES=1` (set by `.ci/run`), where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::kafka::*;

/// The settings of an exactly-once worker with `id` as its transactional id.
fn eos(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FUSIONSTREAM__KAFKA__DELIVERY", "exactly_once".into()),
        ("FUSIONSTREAM__KAFKA__TRANSACTIONAL_ID", id.into()),
        ("FUSIONSTREAM__KAFKA__TRANSACTION_INTERVAL", "100ms".into()),
        ("FUSIONSTREAM__KAFKA__SESSION_TIMEOUT", "6s".into()),
        // Slow enough that a kill or a join lands mid-stream: candle f32 (ONNX Runtime,
        // where the test command provides it, finishes these streams between two checks).
        ("FUSIONSTREAM__MODEL__BACKEND", "candle".into()),
        ("FUSIONSTREAM__MODEL__PRECISION", "f32".into()),
        ("FUSIONSTREAM__GENERATE_LANE__MAX_ITEMS", "1".into()),
        ("FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT", "16".into()),
        ("FUSIONSTREAM__SOURCE__MAX_EVENT_BYTES", "4096".into()),
    ]
}

fn env<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Records per (stream, event id); a dead letter of a record without an id by its reason and
/// the start of its payload instead (every bad record of these tests differs there).
fn counts(broker: &str, t: &Topics) -> BTreeMap<(String, String), usize> {
    let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (s, v, _) in read_outputs(broker, t) {
        let id = match v["event_id"].as_str() {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => {
                let payload = v["payload"].as_str().unwrap_or("");
                let head: String = payload.chars().take(40).collect();
                format!("{}:{head}", v["reason"])
            }
        };
        *per.entry((s, id)).or_default() += 1;
    }
    per
}

/// Every caption event has one caption and one embedding, every record exactly once.
fn assert_exactly_once(per: &BTreeMap<(String, String), usize>, n: usize) {
    let twice: Vec<_> = per.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "written twice: {twice:?}");
    for i in 0..n {
        let id = format!("ev-{i:04}");
        for s in ["captions", "embeddings"] {
            assert!(
                per.contains_key(&(s.to_owned(), id.clone())),
                "{s} of {id} lost"
            );
        }
    }
}

/// A log without its colours (ANSI escape sequences).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the end of the sequence (a letter).
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `n` caption events, then three records no event can be made of: malformed JSON, one over
/// `source.max_event_bytes`, one that is not an object.
fn stream_with_bad_records(n: usize) -> Vec<String> {
    let mut lines = caption_events(n);
    lines.push("{\"id\": \"bad-json\", \"text\": ".into());
    lines.push(format!(
        "{{\"id\": \"bad-big\", \"text\": \"{}\"}}",
        "x".repeat(6000)
    ));
    lines.push("[1, 2, 3]".into());
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_transaction_writes_every_output_exactly_once() {
    let Some(broker) = broker() else { return };
    let _serial = SERIAL.lock().await;
    let t = topics("eos-kill");
    create(&broker, &t).await;
    let n = 200;
    let lines = stream_with_bad_records(n);
    let total = lines.len() as i64;
    produce(&broker, &t.input, &lines);
    let settings = eos(&format!("{}-w", t.group));
    let mut kills = 0;
    for round in 0..4 {
        let mut w = worker(&broker, &t, &env(&settings));
        let before = committed(&broker, &t);
        wait_for(
            || committed(&broker, &t) >= (before + 25).min(total),
            "progress",
            180,
        );
        if committed(&broker, &t) >= total {
            stop(w);
            break;
        }
        // Transactions commit every 100 ms: a kill lands inside one.
        std::thread::sleep(Duration::from_millis(30 * round + 20));
        w.kill();
        kills += 1;
        eprintln!(
            "round {round}: killed at {} committed",
            committed(&broker, &t)
        );
    }
    assert!(
        kills >= 3,
        "killed mid-stream at least three times ({kills})"
    );
    let w = worker(&broker, &t, &env(&settings));
    wait_for(
        || committed(&broker, &t) >= total,
        "all offsets committed",
        300,
    );
    let log = stop(w);
    let per = counts(&broker, &t);
    assert_exactly_once(&per, n);
    let dead: Vec<_> = per.keys().filter(|(s, _)| s == "dead_letters").collect();
    assert_eq!(
        dead.len(),
        3,
        "one dead letter per bad record: {dead:?}\n{log}"
    );
    assert_eq!(per.len(), 2 * n + 3, "nothing else written");
    eprintln!("{n} events + 3 bad records, {kills} kills: every output exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_with_the_same_transactional_id_is_fenced() {
    let Some(broker) = broker() else { return };
    let _serial = SERIAL.lock().await;
    let t = topics("eos-zombie");
    create(&broker, &t).await;
    let n = 160;
    produce(&broker, &t.input, &caption_events(n));
    let settings = eos(&format!("{}-same", t.group));
    let mut old = worker(&broker, &t, &env(&settings));
    wait_for(|| committed(&broker, &t) >= 20, "progress", 180);
    // The replacement starts while the old one still runs (a pod restarted while its
    // predecessor hangs on): its init fences the old producer.
    let new = worker(&broker, &t, &env(&settings));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = old.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the zombie was never fenced:\n{}",
            old.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let old_log = old.log();
    assert!(!status.success(), "a fenced worker exits with an error");
    assert!(old_log.contains("fenced"), "{old_log}");
    wait_for(
        || committed(&broker, &t) >= n as i64,
        "all offsets committed",
        300,
    );
    let log = stop(new);
    let per = counts(&broker, &t);
    assert_exactly_once(&per, n);
    assert_eq!(per.len(), 2 * n, "nothing else written\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joining_and_leaving_mid_transaction_duplicates_nothing() {
    let Some(broker) = broker() else { return };
    let _serial = SERIAL.lock().await;
    let t = topics("eos-rebalance");
    create(&broker, &t).await;
    let n = 300;
    produce(&broker, &t.input, &caption_events(n));
    let a_settings = eos(&format!("{}-a", t.group));
    let b_settings = eos(&format!("{}-b", t.group));
    let a = worker(&broker, &t, &env(&a_settings));
    wait_for(|| committed(&broker, &t) >= 20, "progress", 180);
    // B joins: A's revoked partitions are handed over inside the rebalance callback.
    let b = worker(&broker, &t, &env(&b_settings));
    // Cooperative rebalancing assigns in two rounds: the first gives the newcomer nothing.
    wait_for(
        || {
            plain(&b.log()).lines().any(|l| {
                l.contains("partitions assigned partitions=") && !l.ends_with("partitions=0")
            })
        },
        "the second worker's assignment",
        120,
    );
    let joined = committed(&broker, &t);
    wait_for(
        || committed(&broker, &t) >= (joined + 40).min(n as i64),
        "progress with two",
        240,
    );
    // B leaves cleanly: its partitions come back to A.
    let b_log = stop(b);
    wait_for(
        || committed(&broker, &t) >= n as i64,
        "all offsets committed",
        300,
    );
    let a_log = stop(a);
    let per = counts(&broker, &t);
    assert_exactly_once(&per, n);
    assert_eq!(per.len(), 2 * n, "nothing else written");
    let b_read = events_read(&b_log);
    assert!(b_read > 0, "the second worker took a share:\n{b_log}");
    assert!(
        a_log.contains("transaction settled"),
        "A handed partitions over:\n{a_log}"
    );
}
