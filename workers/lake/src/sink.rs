//! The lake sink: the engine's [`OutputSink`] and [`Transactions`] over the tables.
//!
//! Long because the sink and its transactions share one state — the open commit's rows and
//! files, the positions and floors, the commit in doubt — that every step touches.
//!
//! The engine drives it as it drives Kafka transactions (`fusionstream_engine::transaction`):
//! outputs are written only once their events are in the done prefix; `flush` closes the
//! open data files; `commit` writes the commit record with the durable source positions
//! ([`PositionLabels`]) and commits; `abort` drops what the open transaction wrote (the
//! engine writes its records again); `recover` rolls a commit whose outcome is unknown
//! forward (or finds it was never started).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fusionstream_core::position::PartitionId;
use fusionstream_core::record::Stream;
use fusionstream_io::ports::{
    BoxError, OutputSink, PositionLabels, PublishError, Transactions, TxnError,
};
use tokio::runtime::Handle;
use tokio::sync::Mutex;

use crate::commit_record::CommitRecord;
use crate::iceberg_tables::IcebergTables;
use crate::parquet_files::ParquetFiles;
use crate::rows::{decode, prepare, Row};

/// The tables of one format.
#[derive(Debug)]
pub(crate) enum Tables {
    Iceberg(Box<IcebergTables>),
    Parquet(Box<ParquetFiles>),
}

/// What the lake has committed, for progress lines and the summary.
#[derive(Debug, Default)]
pub struct LakeCounts {
    /// Commits.
    pub commits: AtomicU64,
    /// Rows committed.
    pub rows: AtomicU64,
    /// Files committed.
    pub files: AtomicU64,
}

struct Inner {
    tables: Tables,
    writer: String,
    /// Rows waiting to be decoded, per (stream, day).
    pending: BTreeMap<(Stream, i32), Vec<Row>>,
    batch_rows: usize,
    /// The open transaction's id (in file names: unique per attempt).
    txn: String,
    /// The last commit's sequence number.
    seq: u64,
    /// The commit whose intent is out but whose outcome is unknown.
    in_doubt: Option<(CommitRecord, Vec<(PartitionId, u64)>)>,
    /// Per partition, the position below which every event's rows are in the lake (this
    /// writer's commits, and with shared sources every writer's): rows of those events are
    /// dropped, never written twice.
    committed: BTreeMap<PartitionId, u64>,
    /// Every position this writer has committed, by durable name (each commit record carries
    /// them all: a source this writer gave up keeps its last position in the lake).
    known: BTreeMap<String, String>,
    /// Sources move between writers (Kafka partitions): a partition's floor is read from
    /// every writer's last commit before its first row is written here.
    shared_sources: bool,
    /// Partitions whose floor was read since this writer last took them.
    fresh: BTreeSet<PartitionId>,
}

struct Shared {
    rt: Handle,
    inner: Mutex<Inner>,
    labels: Arc<dyn PositionLabels>,
    counts: Arc<LakeCounts>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSink").finish_non_exhaustive()
    }
}

/// The lake sink.
#[derive(Debug, Clone)]
pub struct LakeSink {
    shared: Arc<Shared>,
}

fn new_txn() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl LakeSink {
    pub(crate) fn new(
        tables: Tables,
        writer: String,
        last: Option<&CommitRecord>,
        batch_rows: usize,
        labels: Arc<dyn PositionLabels>,
        shared_sources: bool,
    ) -> Self {
        let inner = Inner {
            tables,
            writer,
            pending: BTreeMap::new(),
            batch_rows: batch_rows.max(1),
            txn: new_txn(),
            seq: last.map_or(0, |r| r.seq),
            in_doubt: None,
            committed: BTreeMap::new(),
            known: last.map(|r| r.positions.clone()).unwrap_or_default(),
            shared_sources,
            fresh: BTreeSet::new(),
        };
        Self {
            shared: Arc::new(Shared {
                rt: Handle::current(),
                inner: Mutex::new(inner),
                labels,
                counts: Arc::default(),
            }),
        }
    }

    /// What it has committed so far.
    pub fn counts(&self) -> Arc<LakeCounts> {
        self.shared.counts.clone()
    }
}

fn retryable(e: anyhow::Error) -> PublishError {
    PublishError::Retryable(e.into())
}

impl Inner {
    async fn write_rows(&mut self, stream: Stream, day: i32) -> anyhow::Result<()> {
        let Some(rows) = self.pending.remove(&(stream, day)) else {
            return Ok(());
        };
        if rows.is_empty() {
            return Ok(());
        }
        let prefix = format!("{}-{}", self.writer, self.txn);
        match &mut self.tables {
            Tables::Iceberg(t) => {
                let schema = t.arrow_schema(stream).await?;
                let batch = decode(stream, &schema, &rows)?;
                t.write(stream, day, batch, &prefix).await
            }
            Tables::Parquet(t) => {
                let schema = t.arrow_schema(stream)?;
                let batch = decode(stream, &schema, &rows)?;
                t.write(stream, day, batch, &prefix).await
            }
        }
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let keys: Vec<_> = self.pending.keys().copied().collect();
        for (s, d) in keys {
            self.write_rows(s, d).await?;
        }
        match &mut self.tables {
            Tables::Iceberg(t) => t.close_files().await,
            Tables::Parquet(t) => t.close_files().await,
        }
    }

    fn abort(&mut self) {
        self.pending.clear();
        // A failed handover may have left partitions behind: read floors again.
        self.fresh.clear();
        match &mut self.tables {
            Tables::Iceberg(t) => t.abort(),
            Tables::Parquet(t) => t.abort(),
        }
        self.txn = new_txn();
    }

    fn has_staged(&self) -> bool {
        match &self.tables {
            Tables::Iceberg(t) => t.has_staged(),
            Tables::Parquet(t) => t.has_staged(),
        }
    }

    fn staged_counts(&self) -> (u64, u64) {
        match &self.tables {
            Tables::Iceberg(t) => t.staged_counts(),
            Tables::Parquet(t) => t.staged_counts(),
        }
    }

    /// Commit what is staged with `positions` (durable names `durable`).
    async fn commit(
        &mut self,
        positions: &[(PartitionId, u64)],
        durable: BTreeMap<String, String>,
        counts: &LakeCounts,
    ) -> Result<(), TxnError> {
        if self.in_doubt.is_some() {
            // Nothing more commits before the last commit's outcome is known (`recover`).
            return Err(TxnError::Fatal(
                "the last commit's outcome is still unknown".into(),
            ));
        }
        if !self.pending.is_empty() {
            return Err(TxnError::Abortable("rows written after the flush".into()));
        }
        if !self.has_staged() && durable.is_empty() {
            return Ok(());
        }
        let (files, rows) = self.staged_counts();
        let abortable = |e: anyhow::Error| TxnError::Abortable(e.into());
        let staged = match &mut self.tables {
            Tables::Iceberg(t) => t.staged_json().await.map_err(abortable)?,
            Tables::Parquet(t) => t.staged_json().map_err(abortable)?,
        };
        let record = CommitRecord {
            writer: self.writer.clone(),
            seq: self.seq + 1,
            txn: self.txn.clone(),
            positions: merged(&self.known, durable),
            files: staged,
            rows,
            written_at: now_rfc3339(),
        };
        match &mut self.tables {
            Tables::Iceberg(t) => {
                t.put_intent(&record).await.map_err(abortable)?;
                self.in_doubt = Some((record.clone(), positions.to_vec()));
                t.apply(&record, false)
                    .await
                    .map_err(|e| TxnError::Fatal(BoxError::from(e)))?;
            }
            Tables::Parquet(t) => {
                // One PUT: it happened or it did not (a timeout is retried as a new attempt
                // with a new seq only after `recover` read the manifests back).
                self.in_doubt = Some((record.clone(), positions.to_vec()));
                t.commit(&record)
                    .await
                    .map_err(|e| TxnError::Fatal(BoxError::from(e)))?;
            }
        }
        self.done(&record, positions);
        counts.commits.fetch_add(1, Relaxed);
        counts.rows.fetch_add(rows, Relaxed);
        counts.files.fetch_add(files, Relaxed);
        tracing::info!(seq = self.seq, rows, files, "lake commit");
        Ok(())
    }

    fn done(&mut self, record: &CommitRecord, positions: &[(PartitionId, u64)]) {
        self.seq = record.seq;
        self.known.clone_from(&record.positions);
        self.in_doubt = None;
        for (p, o) in positions {
            let floor = self.committed.entry(*p).or_insert(0);
            *floor = (*floor).max(*o);
        }
        self.txn = new_txn();
    }

    /// Read every writer's last commit (rolled forward): raise the floors of the partitions
    /// they name.
    async fn refresh_floors(&mut self, labels: &dyn PositionLabels) -> anyhow::Result<()> {
        let records = match &mut self.tables {
            Tables::Iceberg(t) => t.all_records().await?,
            Tables::Parquet(t) => t.all_records().await?,
        };
        for r in records {
            for (source, at) in &r.positions {
                if let (Some(p), Ok(next)) = (labels.partition_of(source), at.parse::<u64>()) {
                    let floor = self.committed.entry(p).or_insert(0);
                    *floor = (*floor).max(next);
                }
            }
        }
        Ok(())
    }

    /// A commit's outcome is unknown: read the writer's last record back (rolling an
    /// Iceberg intent forward); the commit happened iff it is that record.
    async fn recover(&mut self) -> anyhow::Result<()> {
        let last = match &mut self.tables {
            Tables::Iceberg(t) => t.resume().await?,
            Tables::Parquet(t) => t.resume().await?,
        };
        if let (Some(last), Some((doubt, positions))) = (last, self.in_doubt.take()) {
            if last.txn == doubt.txn {
                self.done(&last, &positions);
                return Ok(());
            }
        }
        self.abort();
        Ok(())
    }
}

/// This writer's positions after a commit: those it had, updated by the commit's; an offset
/// never moves back (a partition taken over from a writer that had gone further: its rows
/// up to there are dropped as already in the lake, its position stays).
fn merged(
    known: &BTreeMap<String, String>,
    new: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = known.clone();
    for (source, at) in new {
        let keep_old = match (
            out.get(&source).map(|o| o.parse::<u64>()),
            at.parse::<u64>(),
        ) {
            (Some(Ok(old)), Ok(n)) => old > n,
            _ => false,
        };
        if !keep_old {
            out.insert(source, at);
        }
    }
    out
}

fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let day = i32::try_from(d.as_secs() / 86_400).unwrap_or(0);
    let s = d.as_secs() % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        crate::rows::date_of(day),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

impl OutputSink for LakeSink {
    async fn write(
        &mut self,
        stream: Stream,
        _key: &str,
        json: &[u8],
        _traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let row = prepare(stream, json).map_err(|e| PublishError::Fatal(Box::new(e)))?;
        let mut inner = self.shared.inner.lock().await;
        if let (true, Some((p, _))) = (inner.shared_sources, row.at) {
            if !inner.fresh.contains(&p) {
                inner
                    .refresh_floors(&*self.shared.labels)
                    .await
                    .map_err(retryable)?;
                inner.fresh.insert(p);
            }
        }
        // An event a commit already covers (the engine writes an unknown-outcome commit's
        // records again when it cannot tell): its rows are in the tables.
        if let Some((p, o)) = row.at {
            if inner.committed.get(&p).is_some_and(|&next| o < next) {
                return Ok(());
            }
        }
        let day = row.day;
        let full = {
            let rows = inner.pending.entry((stream, day)).or_default();
            rows.push(row);
            rows.len()
        } >= inner.batch_rows;
        if full {
            inner.write_rows(stream, day).await.map_err(retryable)?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), PublishError> {
        let mut inner = self.shared.inner.lock().await;
        inner.flush().await.map_err(retryable)
    }

    fn transactions(&self) -> Option<Arc<dyn Transactions>> {
        Some(Arc::new(LakeTxns {
            shared: self.shared.clone(),
        }))
    }
}

/// The sink's commits, called by the engine off the runtime.
#[derive(Debug)]
struct LakeTxns {
    shared: Arc<Shared>,
}

impl LakeTxns {
    fn within<T>(
        &self,
        timeout: Duration,
        f: impl std::future::Future<Output = Result<T, TxnError>>,
    ) -> Result<T, TxnError> {
        self.shared.rt.block_on(async {
            tokio::time::timeout(timeout, f).await.unwrap_or_else(|_| {
                Err(TxnError::Fatal(
                    format!("no answer within {timeout:?}").into(),
                ))
            })
        })
    }
}

impl Transactions for LakeTxns {
    fn release_on_write(&self) -> bool {
        true
    }

    fn informs_committer(&self) -> bool {
        true
    }

    fn commit(
        &self,
        positions: &[(PartitionId, u64)],
        clean: &[PartitionId],
        _last: bool,
        timeout: Duration,
    ) -> Result<(), TxnError> {
        let durable = self
            .shared
            .labels
            .durable(positions)
            .map_err(|e| TxnError::Abortable(e.into()))?;
        self.within(timeout, async {
            let mut inner = self.shared.inner.lock().await;
            inner
                .commit(positions, durable, &self.shared.counts)
                .await?;
            // Handed over (a revoke): if they come back, their floors are read again.
            for p in clean {
                inner.fresh.remove(p);
            }
            Ok(())
        })
    }

    fn abort(&self, timeout: Duration) -> Result<(), TxnError> {
        self.within(timeout, async {
            self.shared.inner.lock().await.abort();
            Ok(())
        })
    }

    fn recover(&self, timeout: Duration) -> Result<(), TxnError> {
        self.within(timeout, async {
            let mut inner = self.shared.inner.lock().await;
            inner
                .recover()
                .await
                .map_err(|e| TxnError::Abortable(e.into()))
        })
    }

    fn committed(
        &self,
        partitions: &[PartitionId],
        _timeout: Duration,
    ) -> anyhow::Result<Vec<(PartitionId, Option<u64>)>> {
        let inner = self.shared.rt.block_on(self.shared.inner.lock());
        Ok(partitions
            .iter()
            .map(|p| (*p, inner.committed.get(p).copied()))
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn positions_accumulate_and_offsets_never_move_back() {
        let known = map(&[("kafka:t/0", "10"), ("kafka:t/1", "5")]);
        let m = merged(&known, map(&[("kafka:t/0", "8"), ("kafka:t/2", "3")]));
        assert_eq!(
            m,
            map(&[("kafka:t/0", "10"), ("kafka:t/1", "5"), ("kafka:t/2", "3")])
        );
        let m = merged(&m, map(&[("kafka:t/0", "11")]));
        assert_eq!(m["kafka:t/0"], "11");
        // A backfill's position is not a number: the newer one wins.
        let b = merged(
            &map(&[("s3://b/p#0/1", r#"{"done":9}"#)]),
            map(&[("s3://b/p#0/1", r#"{"done":12}"#)]),
        );
        assert_eq!(b["s3://b/p#0/1"], r#"{"done":12}"#);
    }
}
