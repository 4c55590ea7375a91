//! The local adapters: a JSONL file source resuming from its checkpoint, and the checkpoint
//! file as a committer.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use fusionstream_core::position::PartitionId;
use fusionstream_io::checkpoint::Checkpoint;
use fusionstream_io::local_source::LocalSource;

use super::{CommitAck, Committer, Emitter, Source};

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
    async fn run(self, emit: Emitter) -> anyhow::Result<bool> {
        let done = self
            .source
            .read(&self.starts, |rec| {
                let emit = &emit;
                async move { emit.emit(rec).await }
            })
            .await?;
        Ok(done)
    }
}

/// The local checkpoint as a committer.
#[derive(Debug)]
pub struct LocalCheckpoint {
    path: std::path::PathBuf,
    streams: Vec<String>,
    state: Checkpoint,
}

impl LocalCheckpoint {
    /// Commit positions of `streams` (partition order) into `state`, stored at `path`.
    pub fn new(path: &Path, streams: Vec<String>, state: Checkpoint) -> Self {
        Self {
            path: path.to_owned(),
            streams,
            state,
        }
    }
}

impl Committer for LocalCheckpoint {
    fn commit(&mut self, positions: &[(PartitionId, u64)]) -> anyhow::Result<CommitAck> {
        for (p, o) in positions {
            let s = self
                .streams
                .get(*p as usize)
                .context("commit for an unknown partition")?;
            self.state.positions.insert(s.clone(), *o);
        }
        self.state.version = 1;
        self.state.store(&self.path)?;
        Ok(CommitAck::Confirmed)
    }
}
