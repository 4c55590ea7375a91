//! The Kafka output sink: an idempotent producer (`acks=all`, lz4), records keyed by event
//! id with the trace context and the worker's headers, acknowledged when the brokers confirm
//! every queued delivery.

use std::time::Duration;

use fusionstream_core::record::Stream;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaConnection;
use crate::ports::{OutputSink, PublishError};

/// Errors of the Kafka sink.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// The producer could not be created.
    #[error("kafka producer: {0}")]
    Create(rdkafka::error::KafkaError),
    /// A record was not delivered (after librdkafka's own retries, `delivery.timeout.ms`).
    #[error("delivery to {topic} failed: {error}")]
    Delivery {
        /// Topic.
        topic: String,
        /// Cause.
        error: rdkafka::error::KafkaError,
    },
    /// The producer went away before confirming.
    #[error("producer dropped before confirming a delivery")]
    Canceled,
}

impl KafkaSinkError {
    /// The broker (or librdkafka's own `message.max.bytes` check) refused a record or a batch
    /// as too large: not retryable as it is, but the record can be cut or replaced.
    pub fn is_too_large(&self) -> bool {
        use rdkafka::error::KafkaError;
        let KafkaSinkError::Delivery { error, .. } = self else {
            return false;
        };
        let code = match error {
            KafkaError::MessageProduction(c) => Some(*c),
            other => other.rdkafka_error_code(),
        };
        matches!(
            code,
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::MessageBatchTooLarge
            )
        )
    }
}

impl fusionstream_core::Classify for KafkaSinkError {
    /// Errors a later attempt cannot fix (authorisation, records the broker refuses, a
    /// producer in a fatal state) are fatal; the rest (timeouts, brokers away, leaders
    /// moving) are retried: outputs are sent again, never dropped.
    fn class(&self) -> fusionstream_core::ErrorClass {
        use fusionstream_core::ErrorClass;
        use rdkafka::error::KafkaError;
        let code = match self {
            KafkaSinkError::Create(_) => return ErrorClass::Fatal,
            KafkaSinkError::Canceled => return ErrorClass::Retryable,
            KafkaSinkError::Delivery { error, .. } => match error {
                KafkaError::MessageProduction(c) => *c,
                other => match other.rdkafka_error_code() {
                    Some(c) => c,
                    None => return ErrorClass::Retryable,
                },
            },
        };
        match code {
            RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::InvalidMessageSize => ErrorClass::Fatal,
            _ => ErrorClass::Retryable,
        }
    }
}

/// Output records to Kafka topics, one per stream.
pub struct KafkaSink {
    producer: FutureProducer,
    topics: [String; Stream::COUNT],
    headers: Vec<(String, String)>,
    pending: Vec<(usize, DeliveryFuture)>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topics", &self.topics)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl KafkaSink {
    /// An idempotent producer (`acks=all`) writing stream `s` to `topics[s.index()]`;
    /// `headers` go on every record (schema version, bundle version).
    pub fn new(
        conn: &KafkaConnection,
        topics: [String; Stream::COUNT],
        headers: Vec<(String, String)>,
    ) -> Result<Self, KafkaSinkError> {
        let producer: FutureProducer = conn
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create()
            .map_err(KafkaSinkError::Create)?;
        Ok(Self {
            producer,
            topics,
            headers,
            pending: Vec::new(),
        })
    }

    /// Queue one record; waits while librdkafka's queue is full.
    pub async fn write(
        &mut self,
        stream: Stream,
        key: &str,
        json: &[u8],
        traceparent: Option<&str>,
    ) -> Result<(), KafkaSinkError> {
        let topic = &self.topics[stream.index()];
        let f = produce(&self.producer, topic, &self.headers, key, json, traceparent).await?;
        self.pending.push((stream.index(), f));
        Ok(())
    }

    /// Wait until every queued record is acknowledged by the brokers.
    pub async fn flush(&mut self) -> Result<(), KafkaSinkError> {
        await_deliveries(&mut self.pending, &self.topics).await
    }
}

/// Queue one record to `topic` with `headers` and the trace context; waits while
/// librdkafka's queue is full (never drops).
pub(super) async fn produce(
    producer: &FutureProducer,
    topic: &str,
    headers: &[(String, String)],
    key: &str,
    json: &[u8],
    traceparent: Option<&str>,
) -> Result<DeliveryFuture, KafkaSinkError> {
    let mut owned = OwnedHeaders::new_with_capacity(headers.len() + 1);
    for (k, v) in headers {
        owned = owned.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    if let Some(tp) = traceparent {
        owned = owned.insert(Header {
            key: "traceparent",
            value: Some(tp.as_bytes()),
        });
    }
    let mut record = FutureRecord::to(topic)
        .key(key)
        .payload(json)
        .headers(owned);
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((
                rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                record = r;
                // Let deliveries drain, then try again: never drop.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((error, _)) => {
                return Err(KafkaSinkError::Delivery {
                    topic: topic.to_owned(),
                    error,
                })
            }
        }
    }
}

/// Wait for every delivery of `pending` (stream index, delivery).
pub(super) async fn await_deliveries(
    pending: &mut Vec<(usize, DeliveryFuture)>,
    topics: &[String; Stream::COUNT],
) -> Result<(), KafkaSinkError> {
    for (i, f) in pending.drain(..) {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => {
                return Err(KafkaSinkError::Delivery {
                    topic: topics[i].clone(),
                    error,
                })
            }
            Err(_) => return Err(KafkaSinkError::Canceled),
        }
    }
    Ok(())
}

/// Delivery errors by what the engine does next: a record refused as too large can be cut
/// or replaced; the rest by their class.
pub(super) fn publish_error(e: KafkaSinkError) -> PublishError {
    if e.is_too_large() {
        PublishError::TooLarge(Box::new(e))
    } else {
        PublishError::classified(e)
    }
}

impl OutputSink for KafkaSink {
    async fn write(
        &mut self,
        stream: Stream,
        key: &str,
        json: &[u8],
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        KafkaSink::write(self, stream, key, json, traceparent)
            .await
            .map_err(publish_error)
    }

    async fn flush(&mut self) -> Result<(), PublishError> {
        KafkaSink::flush(self).await.map_err(publish_error)
    }
}
