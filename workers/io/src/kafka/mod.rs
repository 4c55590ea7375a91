//! Kafka: the connection settings shared by the consumer and the producer (security
//! settings passed through) and topic creation for tests and set-up; the adapters beside it.
//!
//! | file | owns |
//! |---|---|
//! | `consumer.rs` | the consumer-group source: rebalances, pausing, lag, held records |
//! | `commit.rs` | the offset committer and the crash guard's marks in commit metadata |
//! | `sink.rs` | the output sink: idempotent producer, `acks=all`, keyed by event id |
//! | `assigned.rs` | [`AssignedFeed`]: every partition of a topic assigned, read as a [`crate::ports::Feed`] |

mod assigned;
mod commit;
mod consumer;
mod sink;

pub use assigned::{partition_key, AssignedFeed};
pub use commit::KafkaCommitter;
pub use consumer::{GroupSettings, KafkaShared, KafkaSource};
pub use sink::{KafkaSink, KafkaSinkError};

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
