//! The local ports: a JSONL file source resuming from its checkpoint, the checkpoint file
//! as a committer (with the crash-loop guard's marks beside the positions), and the JSONL
//! files as output sink.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use fusionstream_core::crash_guard::{GuardSettings, Mark};
use fusionstream_core::lock;
use fusionstream_core::position::PartitionId;

use super::checkpoint::Checkpoint;
use super::sink::{JsonlSink, SinkError};
use super::source::LocalSource;
use crate::crash_marks::{CrashGuard, MarkStore};
use crate::ports::{CommitAck, Committer, OutputSink, PublishError, Source, SourceHandle};
use fusionstream_core::record::Stream;

/// A local JSONL source with the start positions of its checkpoint.
#[derive(Debug)]
pub struct LocalJsonl {
    source: LocalSource,
    starts: BTreeMap<String, u64>,
}

impl LocalJsonl {
    /// Open `path`, resuming from `checkpoint`.
    pub fn open(
        path: &Path,
        max_line_bytes: usize,
        checkpoint: &Checkpoint,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            source: LocalSource::open(path, max_line_bytes)?,
            starts: checkpoint.positions.clone(),
        })
    }

    /// Stream names in partition order.
    pub fn streams(&self) -> Vec<String> {
        self.source.streams()
    }
}

impl Source for LocalJsonl {
    fn kind(&self) -> &'static str {
        "local"
    }
    fn partitions(&self) -> Vec<(PartitionId, u64)> {
        self.source
            .streams()
            .iter()
            .enumerate()
            .map(|(i, s)| (i as PartitionId, self.starts.get(s).copied().unwrap_or(0)))
            .collect()
    }
    async fn run<H: SourceHandle>(self, handle: H) -> anyhow::Result<bool> {
        let done = self
            .source
            .read(&self.starts, |rec| {
                let handle = &handle;
                async move { handle.emit(rec).await }
            })
            .await?;
        Ok(done)
    }
}

/// The checkpoint file and what it holds, shared by the committer and the crash guard's
/// marks.
#[derive(Debug)]
struct Book {
    path: std::path::PathBuf,
    streams: Vec<String>,
    state: Mutex<Checkpoint>,
}

impl Book {
    fn stream(&self, p: PartitionId) -> anyhow::Result<&String> {
        self.streams
            .get(p as usize)
            .context("commit for an unknown partition")
    }

    /// Record positions (and their marks) and store the file.
    fn write(
        &self,
        entries: impl IntoIterator<Item = (PartitionId, u64, Option<Mark>)>,
    ) -> anyhow::Result<()> {
        let mut st = lock(&self.state);
        for (p, next, mark) in entries {
            let s = self.stream(p)?.clone();
            if let Some(m) = mark {
                st.marks.insert(s.clone(), m.encode());
            }
            st.positions.insert(s, next);
        }
        st.version = 1;
        st.store(&self.path)?;
        Ok(())
    }
}

/// The local checkpoint as a committer.
#[derive(Debug)]
pub struct LocalCheckpoint {
    book: Arc<Book>,
    guard: Option<Arc<CrashGuard>>,
}

impl LocalCheckpoint {
    /// Commit positions of `streams` (partition order) into `state`, stored at `path`; with
    /// `guard`, the crash-loop guard keeps its marks in the file too.
    pub fn new(
        path: &Path,
        streams: Vec<String>,
        state: Checkpoint,
        guard: Option<GuardSettings>,
    ) -> Self {
        let book = Arc::new(Book {
            path: path.to_owned(),
            streams,
            state: Mutex::new(state),
        });
        let guard = guard.map(|s| CrashGuard::new(s, LocalMarks(book.clone())));
        Self { book, guard }
    }

    fn write(&self, positions: &[(PartitionId, u64)], clean: bool) -> anyhow::Result<()> {
        self.book.write(positions.iter().map(|(p, next)| {
            let mark = self.guard.as_ref().map(|g| g.mark_for(*p, *next, clean));
            (*p, *next, mark)
        }))
    }
}

impl Committer for LocalCheckpoint {
    fn commit(&mut self, positions: &[(PartitionId, u64)]) -> anyhow::Result<CommitAck> {
        self.write(positions, false)?;
        Ok(CommitAck::Confirmed)
    }

    /// The last commit of a clean stop: marks `clean`.
    fn commit_and_wait(
        &mut self,
        positions: &[(PartitionId, u64)],
        _timeout: std::time::Duration,
    ) -> anyhow::Result<()> {
        self.write(positions, true)
    }

    fn crash_guard(&self) -> Option<Arc<CrashGuard>> {
        self.guard.clone()
    }
}

/// The crash guard's marks in the checkpoint file.
#[derive(Debug)]
struct LocalMarks(Arc<Book>);

impl MarkStore for LocalMarks {
    fn read(&self, partition: PartitionId) -> anyhow::Result<Option<Mark>> {
        let s = self.0.stream(partition)?;
        Ok(lock(&self.0.state)
            .marks
            .get(s)
            .and_then(|m| Mark::decode(m)))
    }

    fn write(&self, partition: PartitionId, next: u64, mark: Mark) -> anyhow::Result<()> {
        self.0.write([(partition, next, Some(mark))])
    }
}

/// Writing a local file fails only for reasons a retry cannot fix (disk full, permissions):
/// fatal, nothing unflushed is acknowledged.
impl OutputSink for JsonlSink {
    async fn write(
        &mut self,
        stream: Stream,
        _key: &str,
        json: &[u8],
        _traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        JsonlSink::write(self, stream, json)
            .await
            .map_err(|e: SinkError| PublishError::Fatal(Box::new(e)))
    }

    async fn flush(&mut self) -> Result<(), PublishError> {
        JsonlSink::flush(self)
            .await
            .map_err(|e| PublishError::Fatal(Box::new(e)))
    }
}
