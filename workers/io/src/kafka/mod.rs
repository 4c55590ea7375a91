//! Kafka: the connection settings shared by the consumer and the producer (security
//! settings passed through) and topic creation for tests and set-up; the adapters beside it.
//!
//! | file | owns |
//! |---|---|
//! | `consumer.rs` | the consumer-group source: rebalances, pausing, lag, held records |
//! | `commit.rs` | the offset committer and the crash guard's marks in commit metadata |
//! | `sink.rs` | the output sink: idempotent producer, `acks=all`, keyed by event id |
//! | `transactions.rs` | exactly-once: the transactional producer, outputs and offsets in one transaction |
//! | `assigned.rs` | [`AssignedFeed`]: every partition of a topic assigned, read as a [`crate::ports::Feed`] |

mod assigned;
mod commit;
mod consumer;
mod labels;
mod sink;
mod transactions;

pub use assigned::{partition_key, AssignedFeed};
pub use commit::KafkaCommitter;
pub use consumer::{GroupSettings, KafkaShared, KafkaSource};
pub use labels::source_name;
pub use sink::{KafkaSink, KafkaSinkError};
pub use transactions::{KafkaTransactions, TransactionSettings};

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

/// Connection settings of every Kafka client of a worker.
#[derive(Clone)]
pub struct KafkaConnection {
    /// `host:port,…`.
    pub bootstrap_servers: String,
    /// Client id reported to the brokers.
    pub client_id: String,
    /// librdkafka properties passed through (security.protocol, sasl.*, ssl.*).
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Properties may hold passwords: print their names only.
        f.debug_struct("KafkaConnection")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client_id", &self.client_id)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KafkaConnection {
    /// A client configuration with these settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Each topic's `max.message.bytes` (the broker's refusal limit for one record batch);
    /// `None` where it cannot be read (the topic does not exist yet, no permission).
    pub async fn message_limits(&self, topics: &[String]) -> Vec<Option<usize>> {
        use rdkafka::admin::{ConfigResourceResult, ResourceSpecifier};
        let Ok(admin) = self
            .client_config()
            .create::<AdminClient<DefaultClientContext>>()
        else {
            return vec![None; topics.len()];
        };
        let specs: Vec<ResourceSpecifier<'_>> =
            topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let results: Vec<ConfigResourceResult> = match admin.describe_configs(&specs, &opts).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the output topics' max.message.bytes");
                return vec![None; topics.len()];
            }
        };
        results
            .into_iter()
            .map(|r| {
                r.ok()
                    .and_then(|c| c.get("max.message.bytes")?.value.clone())
                    .and_then(|v| v.parse().ok())
            })
            .collect()
    }

    /// Create `topics` (name, partitions) with replication 1 if they do not exist.
    pub async fn ensure_topics(
        &self,
        topics: &[(&str, i32)],
    ) -> Result<(), rdkafka::error::KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for r in admin.create_topics(new.iter(), &opts).await? {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => {
                    tracing::error!(topic = %t, error = %e, "cannot create topic");
                    return Err(rdkafka::error::KafkaError::AdminOp(e));
                }
            }
        }
        Ok(())
    }
}
