//! The ports of the fusionstream pipeline and their adapters, each beside its client.
//!
//! | module | owns |
//! |---|---|
//! | [`ports`] | `Source`, `SourceHandle`, `OutputSink`, `Committer`: what the engine needs of them; `Feed`: what the live index reads |
//! | [`source`] | the record a source hands to the pipeline |
//! | [`metrics`] | what the adapters count (assignment, lag, pauses, commits, suspect partitions) |
//! | [`retry`] | the one retry loop (jittered backoff) of fetches, publishing, listing, marks |
//! | [`crash_marks`] | the crash-loop guard's waiting and its marks beside the committed positions |
//! | [`local`] | JSONL file source, checkpoint file committer, JSONL output sink, a tailed JSONL file feed |
//! | [`kafka`] | Kafka connection, consumer-group source, offset committer, output sink, assigned-partitions feed, topics |
//! | [`s3`] | the S3 media store (aws-sdk-s3; MinIO through endpoint and path style) |
//! | [`backfill`] | the backfill source (an S3 prefix listed page by page) and its checkpoint |
//! | [`media`] | where an event's image comes from ([`media::MediaStores`]: local files, inline bytes or S3), fetch errors with reason codes, the local file-system store |

pub mod backfill;
pub mod crash_marks;
pub mod kafka;
pub mod local;
pub mod media;
pub mod metrics;
pub mod ports;
pub mod retry;
pub mod s3;
pub mod source;

pub use source::SourceRecord;
