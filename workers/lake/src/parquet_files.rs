//! The Parquet format, for users without a catalog: Hive-style paths
//! `<root>/stream=<s>/dt=<YYYY-MM-DD>/part-<writer>-<txn>-<n>.parquet` (zstd, rolled at
//! `target_file_bytes`, multipart uploads), and one manifest per commit under
//! `<root>/_manifests/<writer>/<seq>.json` listing the files it adds and the source
//! positions it covers. The manifests are the table: a file no manifest lists (an aborted or
//! crashed commit's) is not part of it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::Schema as ArrowSchema;
use bytes::Bytes;
use fusionstream_core::record::Stream;
use futures::future::BoxFuture;
use futures::FutureExt as _;
use iceberg::io::FileWrite as _;
use parquet::arrow::async_writer::{AsyncArrowWriter, AsyncFileWriter};
use parquet::file::properties::WriterProperties;

use crate::commit_record::{CommitRecord, FileEntry};
use crate::rows::date_of;
use crate::schema::table_schema;
use crate::storage::{S3Storage, S3Writer};

impl AsyncFileWriter for S3Writer {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        async move {
            iceberg::io::FileWrite::write(self, bs)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        async move {
            self.close()
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }
}

struct OpenFile {
    writer: AsyncArrowWriter<S3Writer>,
    path: String,
    rows: u64,
}

/// The files of one root, the open ones and those staged for the next manifest.
pub(crate) struct ParquetFiles {
    storage: S3Storage,
    root: String,
    manifests: String,
    props: WriterProperties,
    target_file_bytes: usize,
    schemas: BTreeMap<Stream, Arc<ArrowSchema>>,
    open: BTreeMap<(Stream, i32), OpenFile>,
    staged: BTreeMap<Stream, Vec<FileEntry>>,
    files: u64,
}

impl std::fmt::Debug for ParquetFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetFiles")
            .field("root", &self.root)
            .field("open", &self.open.len())
            .finish_non_exhaustive()
    }
}

impl ParquetFiles {
    /// Files under `root` (`s3://bucket/prefix`), manifests of `writer`.
    pub fn new(
        storage: S3Storage,
        root: &str,
        props: WriterProperties,
        target_file_bytes: usize,
        writer: &str,
    ) -> Self {
        let root = root.trim_end_matches('/').to_owned();
        Self {
            manifests: format!("{root}/_manifests/{writer}/"),
            storage,
            root,
            props,
            target_file_bytes,
            schemas: BTreeMap::new(),
            open: BTreeMap::new(),
            staged: BTreeMap::new(),
            files: 0,
        }
    }

    /// The Arrow schema of `stream`'s files (the table schema, field ids included).
    pub fn arrow_schema(&mut self, stream: Stream) -> anyhow::Result<Arc<ArrowSchema>> {
        if let Some(s) = self.schemas.get(&stream) {
            return Ok(s.clone());
        }
        let s = Arc::new(iceberg::arrow::schema_to_arrow_schema(&table_schema(
            stream,
        )?)?);
        self.schemas.insert(stream, s.clone());
        Ok(s)
    }

    /// Write `batch` into the open file of (`stream`, `day`); roll it at the target size.
    pub async fn write(
        &mut self,
        stream: Stream,
        day: i32,
        batch: RecordBatch,
        file_prefix: &str,
    ) -> anyhow::Result<()> {
        if !self.open.contains_key(&(stream, day)) {
            self.files += 1;
            let path = format!(
                "{}/stream={}/dt={}/part-{file_prefix}-{}.parquet",
                self.root,
                stream.name(),
                date_of(day),
                self.files
            );
            let schema = self.arrow_schema(stream)?;
            let out = self.storage.file_writer(&path)?;
            let writer = AsyncArrowWriter::try_new(out, schema, Some(self.props.clone()))?;
            self.open.insert(
                (stream, day),
                OpenFile {
                    writer,
                    path,
                    rows: 0,
                },
            );
        }
        let f = self
            .open
            .get_mut(&(stream, day))
            .ok_or_else(|| anyhow::anyhow!("no writer"))?;
        f.rows += batch.num_rows() as u64;
        f.writer.write(&batch).await?;
        if f.writer.bytes_written() + f.writer.in_progress_size() >= self.target_file_bytes {
            if let Some(f) = self.open.remove(&(stream, day)) {
                self.close_one(stream, day, f).await?;
            }
        }
        Ok(())
    }

    async fn close_one(&mut self, stream: Stream, day: i32, f: OpenFile) -> anyhow::Result<()> {
        let mut writer = f.writer;
        writer.finish().await?;
        let bytes = writer.bytes_written() as u64;
        self.staged.entry(stream).or_default().push(FileEntry {
            path: f.path,
            dt: date_of(day),
            rows: f.rows,
            bytes,
        });
        Ok(())
    }

    /// Close every open file: staged for the next manifest.
    pub async fn close_files(&mut self) -> anyhow::Result<()> {
        while let Some(((stream, day), f)) = self.open.pop_first() {
            self.close_one(stream, day, f).await?;
        }
        Ok(())
    }

    /// Drop what the open transaction wrote (its files stay unlisted).
    pub fn abort(&mut self) {
        self.open.clear();
        self.staged.clear();
    }

    /// Whether anything is staged.
    pub fn has_staged(&self) -> bool {
        self.staged.values().any(|v| !v.is_empty())
    }

    /// Files and rows staged.
    pub fn staged_counts(&self) -> (u64, u64) {
        let files = self.staged.values().map(|v| v.len() as u64).sum();
        let rows = self.staged.values().flatten().map(|f| f.rows).sum();
        (files, rows)
    }

    /// The staged files as the record's `files`.
    pub fn staged_json(&self) -> anyhow::Result<BTreeMap<String, Vec<serde_json::Value>>> {
        let mut out = BTreeMap::new();
        for (s, files) in &self.staged {
            let list = files
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?;
            out.insert(s.name().to_owned(), list);
        }
        Ok(out)
    }

    /// Write the manifest: the commit.
    pub async fn commit(&mut self, record: &CommitRecord) -> anyhow::Result<()> {
        let url = format!("{}{:020}.json", self.manifests, record.seq);
        let bytes = Bytes::from(serde_json::to_vec_pretty(record)?);
        self.storage.put(&url, bytes).await?;
        self.staged.clear();
        Ok(())
    }

    /// Every writer's last manifest: the positions of every source in the lake.
    pub async fn all_records(&mut self) -> anyhow::Result<Vec<CommitRecord>> {
        let all = format!("{}/_manifests/", self.root);
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        for url in self.storage.list(&all).await? {
            let Some((writer, _)) = url[all.len()..].split_once('/') else {
                continue;
            };
            let e = last.entry(writer.to_owned()).or_default();
            if url > *e {
                *e = url;
            }
        }
        let mut out = Vec::new();
        for url in last.into_values() {
            if let Some(bytes) = self.storage.get(&url).await? {
                out.push(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?,
                );
            }
        }
        Ok(out)
    }

    /// The writer's last manifest; `None`: it never committed.
    pub async fn resume(&mut self) -> anyhow::Result<Option<CommitRecord>> {
        let Some(last) = self.storage.list(&self.manifests).await?.into_iter().max() else {
            return Ok(None);
        };
        let bytes = self
            .storage
            .get(&last)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{last} vanished"))?;
        Ok(Some(
            serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("reading {last}: {e}"))?,
        ))
    }
}
