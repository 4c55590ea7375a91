//! The lake sink of fusionstream: every output stream as a table on S3, committed exactly
//! once together with the source positions it covers.
//!
//! - **Iceberg** (`format = "iceberg"`): one table per stream in a REST catalog, created on
//!   first use with typed columns ([`schema`]), partitioned by day, evolved when this code
//!   adds a column.
//! - **Parquet** (`format = "parquet"`): Hive-style files and one manifest per commit, for
//!   users without a catalog.
//!
//! The engine drives the sink as it drives Kafka transactions: outputs enter the open
//! transaction only once their events are in the done prefix, and a commit carries the
//! positions of that prefix ([`commit_record`]). A restart resumes from the positions of
//! the writer's last commit ([`Lake::last`]): a crash between writing files and committing
//! loses nothing (the events run again) and adds no row twice (the files written before it
//! are never referenced).
//!
//! | file | owns |
//! |---|---|
//! | `schema.rs` | the tables' schemas, partitioning and evolution rules |
//! | `rows.rs` | records → rows → Arrow batches (pure) |
//! | `commit_record.rs` | what a commit records, and where |
//! | `iceberg_tables.rs` | the catalog, the tables, their writers and commits |
//! | `parquet_files.rs` | the Parquet files and manifests |
//! | `storage.rs` | S3 through the worker's client (multipart uploads) |
//! | `sink.rs` | the engine's sink and transactions over either format |

use std::sync::Arc;

use fusionstream_io::ports::PositionLabels;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

pub mod commit_record;
mod iceberg_tables;
mod parquet_files;
pub mod rows;
pub mod schema;
mod sink;
pub mod storage;

pub use commit_record::CommitRecord;
pub use sink::{LakeCounts, LakeSink};

use iceberg_tables::IcebergTables;
use parquet_files::ParquetFiles;
use sink::Tables;
use storage::S3Storage;

/// Which table format (`lake.format`: `iceberg` or `parquet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LakeFormat {
    /// Apache Iceberg tables in a REST catalog.
    Iceberg,
    /// Parquet files with manifests.
    Parquet,
}

/// Where and how the sink writes.
#[derive(Debug, Clone)]
pub struct LakeSettings {
    /// The format.
    pub format: LakeFormat,
    /// The REST catalog (Iceberg).
    pub catalog_uri: String,
    /// `s3://bucket/prefix`: the Iceberg warehouse, or the Parquet root.
    pub warehouse: String,
    /// Namespace of the tables (Iceberg), or the folder under the warehouse (Parquet).
    pub namespace: String,
    /// Roll a data file at about this size.
    pub target_file_bytes: u64,
    /// Bytes per Parquet row group at most (before compression).
    pub row_group_bytes: u64,
    /// Rows decoded and written at once, per stream and day.
    pub batch_rows: usize,
}

/// The lake opened for one writer, its last commit rolled forward.
#[derive(Debug)]
pub struct Lake {
    tables: Tables,
    writer: String,
    last: Option<CommitRecord>,
    settings: LakeSettings,
}

impl LakeFormat {
    /// Its name in messages.
    pub fn title(self) -> &'static str {
        match self {
            LakeFormat::Iceberg => "Iceberg",
            LakeFormat::Parquet => "Parquet",
        }
    }
}

impl Lake {
    /// Open the lake for `writer` (unique per backfill shard or worker; it names the commit
    /// records and the files), with the worker's S3 client.
    pub async fn open(
        settings: &LakeSettings,
        client: aws_sdk_s3::Client,
        writer: &str,
    ) -> anyhow::Result<Self> {
        let storage = S3Storage::new(client);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_bytes(Some(
                usize::try_from(settings.row_group_bytes.max(1 << 20)).unwrap_or(usize::MAX),
            ))
            .build();
        let target = usize::try_from(settings.target_file_bytes).unwrap_or(usize::MAX);
        let mut tables = match settings.format {
            LakeFormat::Iceberg => Tables::Iceberg(Box::new(
                IcebergTables::connect(
                    &settings.catalog_uri,
                    &settings.warehouse,
                    &settings.namespace,
                    storage,
                    props,
                    target,
                    writer,
                )
                .await?,
            )),
            LakeFormat::Parquet => {
                let root = format!(
                    "{}/{}",
                    settings.warehouse.trim_end_matches('/'),
                    settings.namespace.replace('.', "/")
                );
                Tables::Parquet(Box::new(ParquetFiles::new(
                    storage, &root, props, target, writer,
                )))
            }
        };
        let last = match &mut tables {
            Tables::Iceberg(t) => t.resume().await?,
            Tables::Parquet(t) => t.resume().await?,
        };
        if let Some(r) = &last {
            tracing::info!(writer, seq = r.seq, positions = ?r.positions, "lake: resuming after the last commit");
        }
        Ok(Self {
            tables,
            writer: writer.to_owned(),
            last,
            settings: settings.clone(),
        })
    }

    /// The writer's last commit (positions to resume from), if any.
    pub fn last(&self) -> Option<&CommitRecord> {
        self.last.as_ref()
    }

    /// The sink, naming positions with `labels`. `shared_sources`: sources move between
    /// writers (a Kafka group's partitions): before a partition's first row, every writer's
    /// last commit is read for how far the lake already has it.
    pub fn into_sink(self, labels: Arc<dyn PositionLabels>, shared_sources: bool) -> LakeSink {
        LakeSink::new(
            self.tables,
            self.writer,
            self.last.as_ref(),
            self.settings.batch_rows,
            labels,
            shared_sources,
        )
    }
}
