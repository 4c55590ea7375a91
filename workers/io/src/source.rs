//! What every source hands to the pipeline.

use fusionstream_core::position::PartitionId;

/// One payload read from a source, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Partition (a Kafka partition, or the index of a local file).
    pub partition: PartitionId,
    /// Topic, or file path as given to the source.
    pub stream: String,
    /// Offset (line number from 0 for a local file).
    pub offset: u64,
    /// The payload, cut to the source's limit when `oversized`.
    pub payload: Vec<u8>,
    /// The payload was longer than the limit and was cut.
    pub oversized: bool,
    /// W3C trace context carried with the record, if any.
    pub traceparent: Option<String>,
}
