//! Kafka positions by name (`kafka:<topic>/<partition>` → the next offset), for a sink that
//! stores them with its outputs (the lake).

use std::collections::BTreeMap;
use std::sync::Arc;

use fusionstream_core::position::PartitionId;

use super::consumer::{KafkaShared, PartitionMap};
use crate::ports::PositionLabels;

/// The durable names of a consumer's partitions.
#[derive(Debug)]
struct KafkaLabels {
    map: Arc<PartitionMap>,
}

/// `kafka:<topic>/<partition>`.
pub fn source_name(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}/{partition}")
}

impl PositionLabels for KafkaLabels {
    fn durable(
        &self,
        positions: &[(PartitionId, u64)],
    ) -> anyhow::Result<BTreeMap<String, String>> {
        Ok(positions
            .iter()
            .filter_map(|(p, next)| {
                let (topic, partition) = self.map.get(*p)?;
                Some((source_name(&topic, partition), next.to_string()))
            })
            .collect())
    }

    fn partition_of(&self, source: &str) -> Option<PartitionId> {
        let (topic, partition) = source.strip_prefix("kafka:")?.rsplit_once('/')?;
        Some(self.map.id(topic, partition.parse().ok()?))
    }
}

impl KafkaShared {
    /// The durable names of this consumer's positions.
    pub fn labels(&self) -> Arc<dyn PositionLabels> {
        Arc::new(KafkaLabels {
            map: self.map.clone(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_partitions_round_trip() {
        let shared = KafkaShared::default();
        let labels = shared.labels();
        let p = labels.partition_of("kafka:events.v1/3").unwrap();
        let q = labels.partition_of("kafka:other/0").unwrap();
        assert_ne!(p, q);
        assert_eq!(labels.partition_of("kafka:events.v1/3"), Some(p));
        let d = labels.durable(&[(p, 42), (q, 7)]).unwrap();
        assert_eq!(d["kafka:events.v1/3"], "42");
        assert_eq!(d["kafka:other/0"], "7");
        assert_eq!(labels.partition_of("s3://b/p#0/1"), None);
        assert_eq!(labels.partition_of("kafka:t/x"), None);
    }
}
