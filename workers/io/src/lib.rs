//! Sources, sinks and media stores of fusionstream.
//!
//! | module | owns |
//! |---|---|
//! | [`source`] | the record a source hands to the pipeline |
//! | [`local_source`] | events from a JSONL file or a folder of them, one partition per file |
//! | [`checkpoint`] | the local position checkpoint (atomic JSON file) |
//! | [`media`] | media fetch errors with reason codes; the local file-system store |
//! | [`jsonl_sink`] | one JSONL file per output stream, durable on flush |
//! | [`s3`] | the S3 media store (aws-sdk-s3; MinIO through endpoint and path style) |
//! | [`kafka`] | Kafka client settings, the Kafka output sink, topic creation |

pub mod checkpoint;
pub mod jsonl_sink;
pub mod kafka;
pub mod local_source;
pub mod media;
pub mod s3;
pub mod source;

pub use source::SourceRecord;
