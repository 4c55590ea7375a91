//! The worker against a real Apache Kafka broker (started by `scripts/dev-services.sh up`; its
//! address in `FUSIONSTREAM_TEST_KAFKA`): the example events
//! produced by Kafka's own console producer, every output on its topic and valid against the
//! schemas, offsets committed; a worker killed with SIGKILL in the middle of a stream and
//! restarted, several times: every event has its outputs; a second worker joining and
//! leaving the group mid-stream: nothing lost; trace context from the producer's
//! `traceparent` through the worker's spans (received by an OTLP endpoint in this test) to
//! the output headers, and the worker's /metrics and /readyz while it runs.
//!
//! Long because each real-broker scenario (crash, rebalance, SASL, TLS, back-pressure,
//! traces) shares one broker, one serialising lock and the helpers of `common::kafka`.
//!
//! The workers run in the test process (`app::run`), except where the binary itself is under
//! test: SIGKILL, what it logs (SASL and TLS refusals, a password that must not appear), and
//! the process-wide trace exporter.
//!
//! Without `FUSIONSTREAM_TEST_KAFKA` these tests say so and pass, unless
//! `FUSIONSTREAM_REQUIRE_SERVICES=1` (set by `.ci/run`), where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::kafka::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_through_kafka_with_offsets_committed() {
    let Some(broker) = broker() else { return };
    let _serial = SERIAL.lock().await;
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
    let w = in_process(&broker, &t, &[]);
    // The embedded run's counts: 10 captions, 6 answers, 21 embeddings, 20 tags, no moderation
    // (off by default), 13 dead letters.
    let expected = [10usize, 6, 21, 20, 0, 13];
    wait_for(
        || committed(&broker, &t) == lines.len() as i64,
        "all offsets committed",
        180,
    );
    let summary = w.stop().await;
    assert_eq!(summary.end, "stopped (drained)");
    assert_eq!(
        (summary.stats.read, summary.stats.dead_lettered),
        (lines.len() as u64, 13),
        "{summary:?}"
    );
    let recs = read_outputs(&broker, &t);
    for (i, s) in STREAMS.iter().enumerate() {
        let n = recs.iter().filter(|r| r.0 == *s).count();
        assert_eq!(n, expected[i], "{s} records");
    }
    let manifest: toml::Table = toml::from_str(
        &std::fs::read_to_string(common::root().join("models/shapes/bundle.toml")).unwrap(),
    )
    .unwrap();
    let bundle_version = manifest["version"].as_str().unwrap().to_owned();
    for (stream, v, headers) in &recs {
        let schema = common::validator(common::schema_of_stream(stream));
        let errs = common::errors(&schema, v);
        assert!(errs.is_empty(), "{stream}: {errs:?}");
        assert_eq!(v["source"]["kind"], "kafka");
        assert_eq!(headers.get("schema_version").map(String::as_str), Some("1"));
        assert_eq!(
            headers.get("bundle_version").map(String::as_str),
            Some(bundle_version.as_str())
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
    let _serial = SERIAL.lock().await;
    let t = topics("crash");
    create(&broker, &t).await;
    let n = 240;
    let lines = caption_events(n);
    produce(&broker, &t.input, &lines);
    let slow = [
        ("FUSIONSTREAM__GENERATE_LANE__MAX_ITEMS", "1"),
        ("FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT", "16"),
        SHORT_SESSION,
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
        w.kill();
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
    let dups = assert_every_caption(&broker, &t, n);
    eprintln!("{n} events, {kills} kills, {dups} duplicate captions (allowed)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joining_and_leaving_mid_stream_loses_nothing() {
    let Some(broker) = broker() else { return };
    let _serial = SERIAL.lock().await;
    let t = topics("rebalance");
    create(&broker, &t).await;
    // Enough events that the first worker cannot finish a partition before it moves.
    let n = 1500;
    produce(&broker, &t.input, &caption_events(n));
    let slow = [
        ("FUSIONSTREAM__GENERATE_LANE__MAX_ITEMS", "1"),
        ("FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT", "16"),
    ];
    let a = in_process(&broker, &t, &slow);
    wait_for(
        || committed(&broker, &t) >= 30,
        "the first worker's progress",
        180,
    );
    // A second member joins: cooperative-sticky moves some partitions to it.
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut with_metrics = slow.to_vec();
    with_metrics.push(("FUSIONSTREAM__TELEMETRY__METRICS_LISTEN", &listen));
    let b = in_process(&broker, &t, &with_metrics);
    let b_reads = || {
        common::http_get(port, "/metrics")
            .and_then(|(_, m)| {
                m.lines()
                    .find_map(|l| l.strip_prefix("fusionstream_events_read_total "))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    wait_for(
        || b_reads() >= 20 || committed(&broker, &t) >= n as i64,
        "the second worker's first events",
        180,
    );
    assert!(b_reads() > 0, "the second worker got no events");
    // ... and leaves (drain, commit, leave the group); the first takes over.
    let b_summary = b.stop().await;
    wait_for(
        || committed(&broker, &t) >= n as i64,
        "all offsets committed",
        300,
    );
    let a_summary = a.stop().await;
    assert!(
        a_summary.stats.partitions_revoked > 0,
        "the first worker gave partitions up: {a_summary:?}"
    );
    let dups = assert_every_caption(&broker, &t, n);
    eprintln!(
        "{n} events; the first worker gave up {} partitions, the second read {}; \
         {dups} duplicate captions (allowed)",
        a_summary.stats.partitions_revoked, b_summary.stats.read
    );
}

mod otlp {
    //! An OTLP/HTTP trace receiver inside the test.
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::routing::post;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message as _;

    pub type Spans = Arc<Mutex<Vec<Span>>>;

    /// Start a receiver on a free port: (port, the spans received so far).
    pub async fn receiver() -> (u16, Spans) {
        let spans: Spans = Arc::default();
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                post(|State(spans): State<Spans>, body: Bytes| async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut all = spans.lock().unwrap();
                    for rs in req.resource_spans {
                        for ss in rs.scope_spans {
                            all.extend(ss.spans);
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }),
            )
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, spans)
    }

    pub fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A span attribute as text.
    pub fn attr(s: &Span, key: &str) -> Option<String> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let v = s
            .attributes
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_ref()?;
        Some(match v.value.as_ref()? {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            Value::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_follow_events_and_metrics_are_served() {
    use otlp::hex;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let Some(broker) = broker() else { return };
    let _serial = SERIAL.lock().await;
    let t = topics("telemetry");
    create(&broker, &t).await;
    let (otlp_port, spans) = otlp::receiver().await;

    // Five good events and one malformed, each with its producer's trace context.
    let producer: FutureProducer = conn(&broker).client_config().create().unwrap();
    let mut good = caption_events(5);
    good.push("{not json".to_owned());
    let mut sent = Vec::new(); // (trace id, parent span id)
    for (i, payload) in good.iter().enumerate() {
        let trace = format!("{:032x}", 0x5eed_0000_u64 + i as u64);
        let parent = format!("{:016x}", 0xfeed_0000_u64 + i as u64);
        let tp = format!("00-{trace}-{parent}-01");
        producer
            .send(
                FutureRecord::to(&t.input)
                    .key(&format!("k{i}"))
                    .payload(payload.as_bytes())
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "traceparent",
                        value: Some(tp.as_bytes()),
                    })),
                std::time::Duration::from_secs(10),
            )
            .await
            .unwrap();
        sent.push((trace, parent));
    }

    let metrics_port = common::free_port();
    let otlp_url = format!("http://127.0.0.1:{otlp_port}");
    let listen = format!("127.0.0.1:{metrics_port}");
    let w = worker(
        &broker,
        &t,
        &[
            ("FUSIONSTREAM__TELEMETRY__OTLP_ENDPOINT", &otlp_url),
            ("FUSIONSTREAM__TELEMETRY__METRICS_LISTEN", &listen),
            ("FUSIONSTREAM__KAFKA__STATISTICS_INTERVAL", "1s"),
        ],
    );
    let get = |path: &str| common::http_get(metrics_port, path);
    wait_for(|| get("/healthz").is_some(), "/healthz", 60);
    assert_eq!(get("/healthz").unwrap(), (200, "ok\n".to_owned()));
    wait_for(
        || get("/readyz").is_some_and(|(s, _)| s == 200),
        "/readyz 200",
        180,
    );
    wait_for(
        || committed(&broker, &t) == good.len() as i64,
        "all committed",
        180,
    );
    let metric = |text: &str, line: &str| text.lines().any(|l| l == line);
    wait_for(
        || {
            get("/metrics").is_some_and(|(_, m)| {
                metric(&m, "fusionstream_consumer_lag 0")
                    && metric(&m, "fusionstream_seconds_to_drain 0.0")
            })
        },
        "consumer lag 0 in /metrics",
        60,
    );
    let (status, m) = get("/metrics").unwrap();
    assert_eq!(status, 200);
    for line in [
        "fusionstream_events_read_total 6",
        "fusionstream_events_total{outcome=\"ok\"} 5",
        "fusionstream_events_total{outcome=\"dead_letter\"} 1",
        "fusionstream_dead_letters_total{reason=\"malformed_json\"} 1",
        "fusionstream_outputs_total{stream=\"captions\"} 5",
        "fusionstream_partitions_assigned 3",
        "fusionstream_events_in_flight 0",
        "fusionstream_model_loaded 1",
    ] {
        assert!(metric(&m, line), "{line:?} not in /metrics:\n{m}");
    }
    assert!(
        m.contains("fusionstream_stage_seconds_count{stage=\"model\"} 5"),
        "{m}"
    );
    let log = stop(w);
    assert!(
        get("/healthz").is_none(),
        "the server stops with the worker"
    );

    // Spans: the exporter flushed at exit.
    let spans = spans.lock().unwrap().clone();
    let recs = read_outputs(&broker, &t);
    for (i, (trace, parent)) in sent.iter().enumerate() {
        let event: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "fusionstream.event" && hex(&s.trace_id) == *trace)
            .collect();
        assert_eq!(
            event.len(),
            1,
            "event span of event {i}; spans received: {:?}; worker log:\n{log}",
            spans
                .iter()
                .map(|s| (s.name.as_str(), hex(&s.trace_id)))
                .collect::<Vec<_>>()
        );
        let event = event[0];
        assert_eq!(
            hex(&event.parent_span_id),
            *parent,
            "event {i}: parented to the producer's span"
        );
        let event_span = hex(&event.span_id);
        let outcome = if i < 5 { "ok" } else { "dead_letter" };
        assert_eq!(otlp::attr(event, "event.outcome").as_deref(), Some(outcome));
        if i < 5 {
            assert_eq!(otlp::attr(event, "event.id"), Some(format!("ev-{i:04}")));
            assert!(otlp::attr(event, "event.model_ms").is_some(), "{event:?}");
        }
        // Every output of the event names the event span.
        let expect = format!("00-{trace}-{event_span}-01");
        let outs: Vec<_> = recs
            .iter()
            .filter(|r| {
                r.2.get("traceparent")
                    .is_some_and(|tp| tp.contains(trace.as_str()))
            })
            .collect();
        let want = if i < 5 { 2 } else { 1 }; // caption + embedding, or the dead letter
        assert_eq!(outs.len(), want, "outputs of event {i}");
        for o in outs {
            assert_eq!(o.2["traceparent"], expect, "{}", o.0);
        }
        if i < 5 {
            for stage in ["fusionstream.fetch", "fusionstream.preprocess"] {
                assert!(
                    spans.iter().any(|s| s.name == stage
                        && hex(&s.trace_id) == *trace
                        && hex(&s.parent_span_id) == event_span),
                    "{stage} span of event {i}"
                );
            }
            // Both lanes' batches link to the event span.
            let linked = spans
                .iter()
                .filter(|s| s.name == "fusionstream.model_batch")
                .filter(|s| {
                    s.links
                        .iter()
                        .any(|l| hex(&l.trace_id) == *trace && hex(&l.span_id) == event_span)
                })
                .count();
            assert_eq!(linked, 2, "model batches linked to event {i}");
        }
    }
    let batch = spans
        .iter()
        .find(|s| s.name == "fusionstream.model_batch")
        .unwrap();
    assert!(batch.parent_span_id.is_empty(), "a batch span is a root");
}

/// SASL (PLAIN, and SCRAM-SHA-256 when built with `kafka-ssl`) against the dev broker's SASL
/// listener: the right password gets the events through (and never reaches the log); a wrong
/// one is refused by the broker, nothing is consumed, and the worker says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_authenticates_and_the_password_stays_secret() {
    let Some(broker) = broker() else { return };
    let Some(sasl) = common::service("FUSIONSTREAM_TEST_KAFKA_SASL") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let mut mechanisms = vec!["PLAIN"];
    if cfg!(feature = "kafka-ssl") {
        mechanisms.push("SCRAM-SHA-256");
    }
    for mechanism in mechanisms {
        let t = topics(&format!("sasl-{}", mechanism.to_lowercase()));
        create(&broker, &t).await;
        let n = 6;
        produce(&broker, &t.input, &caption_events(n));
        let user = std::env::var("AWS_ACCESS_KEY_ID").unwrap();
        let password = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
        let with = |password: &str| {
            worker(
                &sasl,
                &t,
                &[
                    ("FUSIONSTREAM__KAFKA__SECURITY_PROTOCOL", "sasl_plaintext"),
                    ("FUSIONSTREAM__KAFKA__SASL_MECHANISM", mechanism),
                    ("FUSIONSTREAM__KAFKA__SASL_USERNAME", &user),
                    ("FUSIONSTREAM__KAFKA__SASL_PASSWORD", password),
                    ("FUSIONSTREAM__TELEMETRY__LOG_LEVEL", "debug"),
                ],
            )
        };
        let wrong = with("not-the-password");
        wait_for(
            || wrong.log().to_lowercase().contains("authentication failed"),
            "the broker refusing a wrong password",
            60,
        );
        assert_eq!(
            committed(&broker, &t),
            0,
            "{mechanism}: nothing consumed without credentials"
        );
        stop(wrong);
        let right = with(&password);
        wait_for(
            || committed(&broker, &t) == n as i64,
            "all committed over SASL",
            180,
        );
        let log = stop(right);
        assert!(
            !log.contains(&password),
            "{mechanism}: the password is in the log"
        );
        assert_every_caption(&broker, &t, n);
    }
}

/// With two in-flight slots and a 50 ms grace, the consumer pauses its partitions whenever
/// the model falls behind and resumes when a slot frees up (librdkafka drops what it had
/// prefetched and fetches again from the next unread offset): it pauses many times, and
/// every event still gets its outputs exactly as if it had never paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_pauses_and_resumes_without_loss() {
    let Some(broker) = broker() else { return };
    let _serial = SERIAL.lock().await;
    let t = topics("pause");
    create(&broker, &t).await;
    let n = 120;
    produce(&broker, &t.input, &caption_events(n));
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let w = in_process(
        &broker,
        &t,
        &[
            ("FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT", "2"),
            ("FUSIONSTREAM__GENERATE_LANE__MAX_ITEMS", "1"),
            ("FUSIONSTREAM__KAFKA__PAUSE_AFTER", "50ms"),
            // The model must fall behind the 50 ms grace for the source to pause: candle's
            // one-item captions do (ONNX Runtime's are fast enough that it rarely pauses).
            ("FUSIONSTREAM__MODEL__BACKEND", "candle"),
            ("FUSIONSTREAM__TELEMETRY__METRICS_LISTEN", &listen),
        ],
    );
    wait_for(
        || committed(&broker, &t) >= n as i64,
        "all offsets committed",
        300,
    );
    let (_, m) = common::http_get(port, "/metrics").expect("metrics");
    let pauses: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("fusionstream_source_pauses_total "))
        .and_then(|v| v.parse().ok())
        .expect("pauses counter");
    let summary = w.stop().await;
    assert!(
        summary.stats.source_pauses >= pauses,
        "the summary counts the pauses too"
    );
    assert!(pauses >= 5, "the source paused only {pauses} times");
    let dups = assert_every_caption(&broker, &t, n);
    assert_eq!(dups, 0, "a pause needs no replay");
    eprintln!("{n} events, {pauses} pauses, no loss, no duplicates");
}

/// TLS to the dev broker's TLS listener (a certificate from a throw-away CA): trusting that
/// CA (`kafka.ssl_ca_location`) the events go through; with the system's CAs only, the
/// handshake is refused, nothing is consumed, and the worker says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_needs_the_right_ca_and_then_delivers() {
    if !cfg!(feature = "kafka-ssl") {
        eprintln!("skipped: built without kafka-ssl");
        return;
    }
    let Some(broker) = broker() else { return };
    let (Some(tls), Some(ca)) = (
        common::service("FUSIONSTREAM_TEST_KAFKA_TLS"),
        common::service("FUSIONSTREAM_TEST_KAFKA_CA"),
    ) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let t = topics("tls");
    create(&broker, &t).await;
    let n = 6;
    produce(&broker, &t.input, &caption_events(n));
    let untrusted = worker(
        &tls,
        &t,
        &[("FUSIONSTREAM__KAFKA__SECURITY_PROTOCOL", "ssl")],
    );
    wait_for(
        || untrusted.log().contains("certificate verify failed"),
        "the handshake refused without the CA",
        60,
    );
    assert_eq!(
        committed(&broker, &t),
        0,
        "nothing consumed over an untrusted TLS link"
    );
    stop(untrusted);
    let trusted = worker(
        &tls,
        &t,
        &[
            ("FUSIONSTREAM__KAFKA__SECURITY_PROTOCOL", "ssl"),
            ("FUSIONSTREAM__KAFKA__SSL_CA_LOCATION", &ca),
        ],
    );
    wait_for(
        || committed(&broker, &t) == n as i64,
        "all committed over TLS",
        180,
    );
    stop(trusted);
    assert_every_caption(&broker, &t, n);
}
