//! What one lake commit covers, written as JSON: the writer, its commit sequence number, the
//! source positions the commit covers and the files it adds per stream.
//!
//! - **Iceberg**: the record is the writer's *intent*, put on S3 before any table commits
//!   (`<warehouse>/<namespace>/_fusionstream/writers/<writer>.json`, one object per writer,
//!   replaced at each commit); every table snapshot of the commit carries its `txn` and
//!   positions in its summary. Six tables cannot commit in one catalog call through the REST
//!   client, so the intent makes the set atomic: a restart finishes (rolls forward) the
//!   tables the last intent names whose snapshots lack its `txn`.
//! - **Parquet**: the record is the commit itself, a manifest
//!   (`<root>/_manifests/<writer>/<seq>.json`): files not listed in a manifest are not part
//!   of the table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Snapshot summary keys of a table commit.
pub mod summary {
    /// The writer (one per backfill shard or worker).
    pub const WRITER: &str = "fusionstream.writer";
    /// The commit's id, unique per attempt.
    pub const TXN: &str = "fusionstream.txn";
    /// The writer's commit sequence number.
    pub const SEQ: &str = "fusionstream.seq";
    /// The source positions the commit covers (JSON object: source → position).
    pub const POSITIONS: &str = "fusionstream.positions";
}

/// One commit of one writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// The writer.
    pub writer: String,
    /// Its commit sequence number (1, 2, …).
    pub seq: u64,
    /// Unique id of this commit.
    pub txn: String,
    /// Source → durable position after the commit (a backfill: the last key done; Kafka:
    /// the next offset).
    pub positions: BTreeMap<String, String>,
    /// Stream → the files it adds (Iceberg: data files as Iceberg's JSON; Parquet: entries).
    pub files: BTreeMap<String, Vec<serde_json::Value>>,
    /// Rows added, over all streams.
    pub rows: u64,
    /// When it was written (RFC 3339).
    pub written_at: String,
}

/// One Parquet file of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// `s3://…/stream=<s>/dt=<day>/part-….parquet`.
    pub path: String,
    /// The day partition, `YYYY-MM-DD`.
    pub dt: String,
    /// Rows in the file.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
}
