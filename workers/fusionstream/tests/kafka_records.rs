//! Unusual Kafka records against the real broker (the worker in the test process):
//! - records over the broker's message limit (topics created with a small
//!   `max.message.bytes`): an output record the broker refuses becomes its event's
//!   `output_too_large` dead letter, a dead letter it refuses is sent again with its payload
//!   cut (flagged), the event's other outputs are published and the worker keeps running with
//!   every offset committed (before: the delivery error was fatal and the worker stopped);
//!   (and with an exactly-once worker: the spoilt transaction aborted, the record replaced,
//!   everything written once);
//! - odd input records: a tombstone (null value), a non-UTF-8 value, a 100 KB key, a garbage
//!   `traceparent` and a non-UTF-8 header: dead letters for the first two, outputs for the
//!   others, every offset committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::kafka::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Create `topic` with one partition and `max.message.bytes` = `limit`.
async fn create_limited(broker: &str, topic: &str, limit: usize) {
    let admin: AdminClient<DefaultClientContext> = conn(broker).client_config().create().unwrap();
    let limit = limit.to_string();
    let t = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", &limit);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics([&t], &opts).await.unwrap() {
        r.unwrap();
    }
}

/// Text that lz4 cannot shrink much (the broker checks the compressed size).
fn noise(n: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_the_brokers_limit_are_dead_lettered_and_the_worker_goes_on() {
    over_the_limit(false).await;
}

/// Exactly-once: a refusal spoils the open transaction; it is aborted, the refused record
/// found and replaced, and everything written again: each replacement exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_worker_replaces_records_over_the_limit_exactly_once() {
    over_the_limit(true).await;
}

async fn over_the_limit(exactly_once: bool) {
    let Some(broker) = broker() else { return };
    let t = topics(if exactly_once { "limits-eos" } else { "limits" });
    let txn_id = format!("{}-w", t.group);
    let settings: Vec<(&str, &str)> = if exactly_once {
        vec![
            ("FUSIONSTREAM__KAFKA__DELIVERY", "exactly_once"),
            ("FUSIONSTREAM__KAFKA__TRANSACTIONAL_ID", txn_id.as_str()),
        ]
    } else {
        vec![]
    };
    // Embedding records (a few KB) can never fit; dead letters of 1.5 KB can.
    create_limited(&broker, &t.outputs[stream_index("embeddings")], 200).await;
    create_limited(&broker, &t.outputs[stream_index("dead_letters")], 1500).await;
    create(&broker, &t).await;
    let n = 8;
    let mut lines = caption_events(n);
    // Malformed events (no closing brace) of 6 KB: their dead letters keep the payload, which
    // must be cut to fit.
    for i in 0..3 {
        lines.push(format!(
            "{{\"id\": \"bad-{i}\", \"text\": \"{}\"",
            noise(6000, i + 7)
        ));
    }
    produce(&broker, &t.input, &lines);
    let w = in_process(&broker, &t, &settings);
    wait_for(
        || committed(&broker, &t) >= lines.len() as i64,
        "every offset committed",
        180,
    );
    // What the run counted, to read beside a failure.
    let log = format!("{:?}", w.stop().await);
    let recs = read_outputs(&broker, &t);
    let mut by_stream: BTreeMap<&str, Vec<&serde_json::Value>> = BTreeMap::new();
    for (s, v, _) in &recs {
        by_stream.entry(s.as_str()).or_default().push(v);
    }
    assert!(
        !by_stream.contains_key("embeddings"),
        "no embedding fits 200 bytes"
    );
    let captions = by_stream.get("captions").map_or(0, Vec::len);
    assert!(
        captions >= n,
        "every event keeps its caption: {captions}\n{log}"
    );
    if exactly_once {
        assert_eq!(captions, n, "each caption once\n{log}");
        assert_eq!(
            by_stream.get("dead_letters").map_or(0, Vec::len),
            n + 3,
            "each dead letter once\n{log}"
        );
    }
    let dead = by_stream.get("dead_letters").cloned().unwrap_or_default();
    let too_large: Vec<_> = dead
        .iter()
        .filter(|d| d["reason"] == "output_too_large")
        .collect();
    for i in 0..n {
        let id = format!("ev-{i:04}");
        let d = too_large
            .iter()
            .find(|d| d["event_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id}: no output_too_large dead letter\n{log}"));
        assert!(d["detail"].as_str().unwrap().contains("embeddings record"));
    }
    let malformed: Vec<_> = dead
        .iter()
        .filter(|d| d["reason"] == "malformed_json")
        .collect();
    assert!(malformed.len() >= 3, "{malformed:?}");
    for d in malformed {
        assert_eq!(d["payload_truncated"], true);
        let p = d["payload"].as_str().unwrap();
        assert!(
            p.len() < 6000 && p.starts_with("{\"id\": \"bad-"),
            "cut, kept from the start: {}",
            p.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_records_are_dead_lettered_or_processed_never_fatal() {
    let Some(broker) = broker() else { return };
    let t = topics("odd");
    create(&broker, &t).await;
    let producer: FutureProducer = conn(&broker).client_config().create().unwrap();
    let event = |id: &str| caption_events(1)[0].replace("ev-0000", id);
    let big_key = "k".repeat(100_000);
    let (ok1, ok2) = (event("huge-key"), event("odd-headers"));
    let sends = [
        // A tombstone: key, no value.
        FutureRecord::<str, [u8]>::to(&t.input).key("tombstone"),
        FutureRecord::to(&t.input)
            .key("binary")
            .payload(&[0xff, 0xfe, 0x00, 0x9f, 0x92, 0x96][..]),
        FutureRecord::to(&t.input)
            .key(big_key.as_str())
            .payload(ok1.as_bytes()),
        FutureRecord::to(&t.input)
            .key("headers")
            .payload(ok2.as_bytes())
            .headers(
                OwnedHeaders::new()
                    .insert(Header {
                        key: "traceparent",
                        value: Some("not-a-trace-context"),
                    })
                    .insert(Header {
                        key: "x-binary",
                        value: Some(&[0xffu8, 0x00][..]),
                    }),
            ),
    ];
    for r in sends {
        producer
            .send(r, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let w = in_process(&broker, &t, &[]);
    wait_for(
        || committed(&broker, &t) >= 4,
        "every offset committed",
        180,
    );
    // What the run counted, to read beside a failure.
    let log = format!("{:?}", w.stop().await);
    let recs = read_outputs(&broker, &t);
    let dead: Vec<_> = recs
        .iter()
        .filter(|(s, ..)| s == "dead_letters")
        .map(|r| &r.1)
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}\n{log}");
    let reason = |r: &str| dead.iter().find(|d| d["reason"] == r).copied();
    let tomb = reason("empty_payload").unwrap_or_else(|| panic!("tombstone: {dead:?}"));
    assert!(tomb["event_id"].is_null());
    let bin = reason("malformed_json").unwrap_or_else(|| panic!("binary: {dead:?}"));
    assert!(
        bin["payload_base64"].is_string(),
        "the non-UTF-8 value is kept as base64: {bin}"
    );
    for id in ["huge-key", "odd-headers"] {
        let (_, _, headers) = recs
            .iter()
            .find(|(s, v, _)| s == "captions" && v["event_id"] == id)
            .unwrap_or_else(|| panic!("{id}: no caption\n{log}"));
        // Tracing is off in this worker: no context is invented, and the garbage one is
        // never passed on.
        if let Some(tp) = headers.get("traceparent") {
            assert!(
                tp.starts_with("00-") && tp.len() == 55,
                "a valid trace context: {tp}"
            );
        }
    }
}
