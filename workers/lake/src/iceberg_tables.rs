//! The Iceberg format: one table per stream in a REST catalog, data files written by
//! Iceberg's own Parquet writer (rolled at `target_file_bytes`, one writer per day
//! partition), appended with one snapshot per table per commit. The commit protocol —
//! intent first, then the tables, rolled forward on restart — is in `commit_record`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::Schema as ArrowSchema;
use bytes::Bytes;
use fusionstream_core::record::Stream;
use iceberg::spec::{
    deserialize_data_file_from_json, serialize_data_file_to_json, DataFile, DataFileFormat,
    Literal, PartitionKey, Struct,
};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::{DataFileWriter, DataFileWriterBuilder};
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_rest::{RestCatalog, RestCatalogBuilder};
use parquet::file::properties::WriterProperties;

use crate::commit_record::{summary, CommitRecord};
use crate::schema::{partition_spec, table_schema};
use crate::storage::{S3Storage, S3StorageFactory};

type Writer =
    DataFileWriter<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

/// The tables of one namespace, their open writers and the files staged for the next commit.
pub(crate) struct IcebergTables {
    catalog: RestCatalog,
    namespace: NamespaceIdent,
    storage: S3Storage,
    intent_url: String,
    props: WriterProperties,
    target_file_bytes: usize,
    tables: HashMap<Stream, Table>,
    open: BTreeMap<(Stream, i32), Writer>,
    staged: BTreeMap<Stream, Vec<DataFile>>,
    files: u64,
}

impl std::fmt::Debug for IcebergTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcebergTables")
            .field("namespace", &self.namespace)
            .field("open", &self.open.len())
            .finish_non_exhaustive()
    }
}

impl IcebergTables {
    /// Connect to the catalog at `uri` (warehouse `warehouse`), tables in `namespace`,
    /// created if missing.
    pub async fn connect(
        uri: &str,
        warehouse: &str,
        namespace: &str,
        storage: S3Storage,
        props: WriterProperties,
        target_file_bytes: usize,
        writer: &str,
    ) -> anyhow::Result<Self> {
        let catalog = RestCatalogBuilder::default()
            .with_storage_factory(Arc::new(S3StorageFactory(storage.clone())))
            .load(
                "fusionstream",
                HashMap::from([
                    ("uri".to_owned(), uri.to_owned()),
                    ("warehouse".to_owned(), warehouse.to_owned()),
                ]),
            )
            .await?;
        let namespace = NamespaceIdent::from_strs(namespace.split('.'))?;
        if !catalog.namespace_exists(&namespace).await? {
            match catalog.create_namespace(&namespace, HashMap::new()).await {
                Ok(_) => {}
                // Another shard created it meanwhile.
                Err(_) if catalog.namespace_exists(&namespace).await? => {}
                Err(e) => return Err(e.into()),
            }
        }
        let intent_url = format!(
            "{}/{}/_fusionstream/writers/{writer}.json",
            warehouse.trim_end_matches('/'),
            namespace.join("/")
        );
        Ok(Self {
            catalog,
            namespace,
            storage,
            intent_url,
            props,
            target_file_bytes,
            tables: HashMap::new(),
            open: BTreeMap::new(),
            staged: BTreeMap::new(),
            files: 0,
        })
    }

    /// `stream`'s table: loaded (and evolved: columns this code has and it lacks are added),
    /// or created with its schema and day partition.
    async fn table(&mut self, stream: Stream) -> anyhow::Result<&Table> {
        if !self.tables.contains_key(&stream) {
            let t = open_table(
                &self.catalog,
                &self.namespace,
                stream,
                self.target_file_bytes,
            )
            .await?;
            self.tables.insert(stream, t);
        }
        self.tables
            .get(&stream)
            .ok_or_else(|| anyhow::anyhow!("table {} not opened", stream.name()))
    }
}

/// `stream`'s table in `namespace`: loaded and evolved, or created.
async fn open_table(
    catalog: &RestCatalog,
    namespace: &NamespaceIdent,
    stream: Stream,
    target_file_bytes: usize,
) -> anyhow::Result<Table> {
    let ident = TableIdent::new(namespace.clone(), stream.name().to_owned());
    let want = table_schema(stream)?;
    if !catalog.table_exists(&ident).await? {
        let creation = TableCreation::builder()
            .name(stream.name().to_owned())
            .schema(want.clone())
            .partition_spec(partition_spec(&want, stream)?)
            .properties([
                (
                    "write.parquet.compression-codec".to_owned(),
                    "zstd".to_owned(),
                ),
                (
                    "write.target-file-size-bytes".to_owned(),
                    target_file_bytes.to_string(),
                ),
            ])
            .build();
        match catalog.create_table(namespace, creation).await {
            Ok(t) => {
                tracing::info!(table = %ident, "lake table created");
                return Ok(t);
            }
            // Another shard created it meanwhile: load it.
            Err(e) if !catalog.table_exists(&ident).await? => return Err(e.into()),
            Err(_) => {}
        }
    }
    let table = catalog.load_table(&ident).await?;
    let have = table.metadata().current_schema().clone();
    let missing: Vec<_> = want
        .as_struct()
        .fields()
        .iter()
        .filter(|f| have.field_by_name(&f.name).is_none())
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(table);
    }
    let names: Vec<_> = missing.iter().map(|f| f.name.clone()).collect();
    let mut update = Transaction::new(&table).update_schema();
    for f in missing {
        update = update.add_column(AddColumn::optional(&f.name, (*f.field_type).clone()));
    }
    let table = update
        .apply(Transaction::new(&table))?
        .commit(catalog)
        .await?;
    tracing::info!(table = %ident, added = ?names, "lake table schema evolved");
    Ok(table)
}

impl IcebergTables {
    /// The Arrow schema rows of `stream` decode into (the table's current schema).
    pub async fn arrow_schema(&mut self, stream: Stream) -> anyhow::Result<Arc<ArrowSchema>> {
        let t = self.table(stream).await?;
        Ok(Arc::new(iceberg::arrow::schema_to_arrow_schema(
            t.metadata().current_schema(),
        )?))
    }

    /// Write `batch` (rows of `stream` on `day`) into the open data file of that partition.
    pub async fn write(
        &mut self,
        stream: Stream,
        day: i32,
        batch: RecordBatch,
        file_prefix: &str,
    ) -> anyhow::Result<()> {
        if !self.open.contains_key(&(stream, day)) {
            let w = self.new_writer(stream, day, file_prefix).await?;
            self.open.insert((stream, day), w);
        }
        let w = self
            .open
            .get_mut(&(stream, day))
            .ok_or_else(|| anyhow::anyhow!("no writer"))?;
        w.write(batch).await?;
        Ok(())
    }

    async fn new_writer(
        &mut self,
        stream: Stream,
        day: i32,
        file_prefix: &str,
    ) -> anyhow::Result<Writer> {
        self.files += 1;
        let n = self.files;
        let (props, target) = (self.props.clone(), self.target_file_bytes);
        let t = self.table(stream).await?;
        let meta = t.metadata();
        let schema = meta.current_schema().clone();
        let spec = meta.default_partition_spec().as_ref().clone();
        let key = PartitionKey::new(
            spec,
            schema.clone(),
            Struct::from_iter([Some(Literal::date(day))]),
        );
        let location = DefaultLocationGenerator::new(meta)?;
        let names = DefaultFileNameGenerator::new(
            format!("{file_prefix}-{n}"),
            None,
            DataFileFormat::Parquet,
        );
        let parquet = ParquetWriterBuilder::new(props, schema);
        let rolling =
            RollingFileWriterBuilder::new(parquet, target, t.file_io().clone(), location, names);
        Ok(DataFileWriterBuilder::new(rolling).build(Some(key)).await?)
    }

    /// Close every open writer: their files are staged for the next commit.
    pub async fn close_files(&mut self) -> anyhow::Result<()> {
        while let Some(((stream, _), mut w)) = self.open.pop_first() {
            let files = w.close().await?;
            self.staged.entry(stream).or_default().extend(files);
        }
        Ok(())
    }

    /// Drop what the open transaction wrote (its files stay unreferenced).
    pub fn abort(&mut self) {
        self.open.clear();
        self.staged.clear();
        // The tables are loaded again: a failed commit may have left a stale copy.
        self.tables.clear();
    }

    /// Whether anything is staged.
    pub fn has_staged(&self) -> bool {
        self.staged.values().any(|v| !v.is_empty())
    }

    /// Files and rows staged.
    pub fn staged_counts(&self) -> (u64, u64) {
        let files = self.staged.values().map(|v| v.len() as u64).sum();
        let rows = self
            .staged
            .values()
            .flatten()
            .map(DataFile::record_count)
            .sum();
        (files, rows)
    }

    /// The staged files as the record's `files`.
    pub async fn staged_json(
        &mut self,
    ) -> anyhow::Result<BTreeMap<String, Vec<serde_json::Value>>> {
        let mut out = BTreeMap::new();
        let staged = std::mem::take(&mut self.staged);
        for (stream, files) in &staged {
            let t = self.table(*stream).await?;
            let meta = t.metadata();
            let ptype = meta
                .default_partition_spec()
                .partition_type(meta.current_schema())?;
            let mut list = Vec::new();
            for f in files {
                let json = serialize_data_file_to_json(f.clone(), &ptype, meta.format_version())?;
                list.push(serde_json::from_str(&json)?);
            }
            out.insert(stream.name().to_owned(), list);
        }
        self.staged = staged;
        Ok(out)
    }

    /// Put the intent (the commit record) on S3: from here the commit happens, now or at the
    /// next start.
    pub async fn put_intent(&mut self, record: &CommitRecord) -> anyhow::Result<()> {
        let bytes = Bytes::from(serde_json::to_vec_pretty(record)?);
        let (storage, url) = (self.storage.clone(), self.intent_url.clone());
        storage.put(&url, bytes).await?;
        Ok(())
    }

    /// Commit `record`'s files to each table; `rolling_forward`: only to those whose
    /// snapshots do not carry its `txn` yet (a new commit's `txn` is in none).
    pub async fn apply(
        &mut self,
        record: &CommitRecord,
        rolling_forward: bool,
    ) -> anyhow::Result<()> {
        for (name, files) in &record.files {
            let stream = Stream::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| anyhow::anyhow!("unknown stream {name} in a commit record"))?;
            // Fresh metadata: the commit must see the latest snapshots.
            self.tables.remove(&stream);
            let table = self.table(stream).await?.clone();
            if rolling_forward && has_txn(&table, &record.txn) {
                continue;
            }
            let meta = table.metadata();
            let spec = meta.default_partition_spec();
            let ptype = spec.partition_type(meta.current_schema())?;
            let mut data = Vec::with_capacity(files.len());
            for f in files {
                data.push(deserialize_data_file_from_json(
                    &f.to_string(),
                    spec.spec_id(),
                    &ptype,
                    meta.current_schema(),
                )?);
            }
            let props = HashMap::from([
                (summary::WRITER.to_owned(), record.writer.clone()),
                (summary::TXN.to_owned(), record.txn.clone()),
                (summary::SEQ.to_owned(), record.seq.to_string()),
                (
                    summary::POSITIONS.to_owned(),
                    serde_json::to_string(&record.positions)?,
                ),
            ]);
            let tx = Transaction::new(&table);
            let append = tx
                .fast_append()
                .add_data_files(data)
                .set_snapshot_properties(props);
            let committed = append.apply(tx)?.commit(&self.catalog).await?;
            self.tables.insert(stream, committed);
        }
        self.staged.clear();
        Ok(())
    }

    /// Every writer's last intent, each rolled forward (a writer that crashed mid-commit and
    /// never came back included): the positions of every source in the lake.
    pub async fn all_records(&mut self) -> anyhow::Result<Vec<CommitRecord>> {
        let dir = match self.intent_url.rsplit_once('/') {
            Some((d, _)) => format!("{d}/"),
            None => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for url in self.storage.list(&dir).await? {
            if !url.ends_with(".json") {
                continue;
            }
            let Some(bytes) = self.storage.get(&url).await? else {
                continue;
            };
            let record: CommitRecord = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?;
            self.apply(&record, true).await?;
            out.push(record);
        }
        Ok(out)
    }

    /// The writer's last intent, rolled forward: after this every table it names has its
    /// snapshot. `None`: the writer never committed.
    pub async fn resume(&mut self) -> anyhow::Result<Option<CommitRecord>> {
        let Some(bytes) = self.storage.get(&self.intent_url).await? else {
            return Ok(None);
        };
        let record: CommitRecord = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.intent_url))?;
        self.apply(&record, true).await?;
        Ok(Some(record))
    }
}

/// Whether a snapshot of `table` (its current lineage) carries `txn`.
fn has_txn(table: &Table, txn: &str) -> bool {
    let meta = table.metadata();
    let mut at = meta.current_snapshot().cloned();
    while let Some(s) = at {
        if s.summary()
            .additional_properties
            .get(summary::TXN)
            .map(String::as_str)
            == Some(txn)
        {
            return true;
        }
        at = s
            .parent_snapshot_id()
            .and_then(|p| meta.snapshot_by_id(p).cloned());
    }
    false
}
