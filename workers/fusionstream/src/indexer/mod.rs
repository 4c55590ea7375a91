//! The live vector index's process (`fusionstream index`): reads the embeddings the workers
//! write, keeps them in HNSW graphs ([`fusionstream_index`]), snapshots them with the
//! positions they hold, and answers `/search` on its HTTP server.
//!
//! Delivery is the worker's rule turned around: the snapshot is written before the group's
//! offsets are committed, and a restart reads on from the snapshot's own positions, so a
//! crash re-reads at most what came after the last snapshot; entries are keyed by event id,
//! so what is read twice (here, or published twice by a worker) replaces, never duplicates.
//!
//! | file | owns |
//! |---|---|
//! | `ingest.rs` | the index's state: applying records, positions, the bundle's space, snapshot timing |
//! | `query.rs` | embedding a query with the bundle, which graph each query vector searches |
//! | `serve.rs` | `/search`, `/metrics`, `/healthz`; the index's metrics |
//! | `remote.rs` | snapshots on S3: copied up after each save, down when starting behind |
//!
//! The index reads through `fusionstream_io`'s [`Feed`] port: the embeddings topic with every
//! partition assigned (`io::kafka::AssignedFeed`) or a local `embeddings.jsonl` tailed
//! (`io::local::FileFeed`). The bundle for `/search` is loaded by `app::model`, as for `run`.

pub mod ingest;
pub mod query;
pub mod remote;
pub mod serve;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fusionstream_index::{Kind, SnapshotDir, SnapshotMeta, VectorIndex};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SinkKind};
use fusionstream_io::kafka::AssignedFeed;
use fusionstream_io::local::FileFeed;
use fusionstream_io::ports::{Feed, FeedRecord};
use ingest::Ingest;
use remote::Remote;
use serve::{IndexStats, Shared};

/// Records taken per poll.
const POLL_MAX: usize = 1000;
/// How long a poll waits for the first record.
const POLL_WAIT: Duration = Duration::from_millis(200);

/// What `fusionstream index` did.
#[derive(Debug, Clone, Serialize)]
pub struct IndexSummary {
    /// What it read.
    pub feed: String,
    /// Records read by this run.
    pub records: u64,
    /// Vectors added under new event ids.
    pub added: u64,
    /// Vectors replaced.
    pub replaced: u64,
    /// Records refused.
    pub refused: u64,
    /// Entries per kind at the end.
    pub entries: Vec<(Kind, usize)>,
    /// The embedding space.
    pub bundle: Option<String>,
    /// The last snapshot.
    pub snapshot: Option<PathBuf>,
    /// The HTTP server's address.
    pub listen: Option<String>,
}

/// The local snapshot folder: `index.dir` (`index.cache_dir` when `index.dir` is on S3),
/// or `<sink.dir>/index` when that is empty.
pub fn index_dir(c: &Config) -> PathBuf {
    let on_s3 = c.index.dir.to_string_lossy().starts_with("s3://");
    let dir = if on_s3 {
        &c.index.cache_dir
    } else {
        &c.index.dir
    };
    if dir.as_os_str().is_empty() {
        c.sink.dir.join("index")
    } else {
        dir.clone()
    }
}

/// The S3 store of `index.dir`, if it is on S3, after copying its current snapshot into
/// the local folder when that is behind.
pub fn sync_down(
    c: &Config,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<Option<remote::Remote>> {
    let Some((bucket, prefix)) = remote::parse_url(&c.index.dir)? else {
        return Ok(None);
    };
    let r = rt.block_on(remote::Remote::new(c.bundle_s3_settings(), bucket, prefix));
    rt.block_on(r.pull(&SnapshotDir::new(index_dir(c))))?;
    Ok(Some(r))
}

/// Load the index at `dir` (an empty one with `c`'s parameters when there is none yet).
pub fn open(c: &Config, dir: &std::path::Path) -> anyhow::Result<(VectorIndex, SnapshotMeta)> {
    let store = SnapshotDir::new(dir);
    match store
        .load()
        .with_context(|| format!("loading the index snapshot in {}", dir.display()))?
    {
        Some((mut index, meta)) => {
            let (ours, theirs) = (c.index.params(), *index.params());
            if (ours.storage, ours.connectivity, ours.expansion_add)
                != (theirs.storage, theirs.connectivity, theirs.expansion_add)
            {
                tracing::warn!(snapshot = ?theirs, config = ?ours, "the snapshot's graphs were built with other parameters; they keep theirs (start a new index to change them)");
            }
            index.set_expansion_search(ours.expansion_search)?;
            Ok((index, meta))
        }
        None => Ok((VectorIndex::new(c.index.params())?, SnapshotMeta::default())),
    }
}

/// The embeddings the workers write, from the snapshot's positions: the topic (Kafka sink)
/// or the local file.
fn open_feed(c: &Config, meta: &SnapshotMeta) -> anyhow::Result<Box<dyn Feed>> {
    Ok(match c.sink.kind {
        SinkKind::Kafka => Box::new(AssignedFeed::open(
            &c.kafka.connection(),
            &c.kafka.embeddings_topic,
            &c.index.group_id,
            &meta.positions,
        )?),
        SinkKind::Local => Box::new(FileFeed::open(
            &c.sink.dir.join("embeddings.jsonl"),
            &meta.positions,
        )),
        SinkKind::Lake => anyhow::bail!(
            "the index follows the embeddings of a kafka or local sink, not of sink.kind = \"lake\" \
             (read the lake's embeddings table instead: docs/lake.md)"
        ),
    })
}

/// Start `/search` (with the bundle to embed queries) when `index.listen` is set; its
/// address.
fn serve_search(
    c: &Config,
    rt: &tokio::runtime::Handle,
    ingest: &Arc<RwLock<Ingest>>,
    stats: &Arc<IndexStats>,
    stop: &CancellationToken,
) -> anyhow::Result<Option<String>> {
    if c.index.listen.is_empty() {
        return Ok(None);
    }
    let bundle = rt.block_on(crate::app::model::resolve_bundle(c))?;
    let model = crate::app::model::load(
        &c.model,
        &bundle,
        Default::default(),
        crate::app::model::Packs {
            moderation: None,
            photo: query::query_photo_options(c).as_ref(),
        },
    )?;
    let shared = Shared::new(
        ingest.clone(),
        Arc::new(Mutex::new(model)),
        stats.clone(),
        c.index.max_k,
    );
    let addr = c.index.listen.parse().context("index.listen")?;
    let bound = rt.block_on(serve::spawn(addr, shared, stop.clone()))?;
    Ok(Some(bound.to_string()))
}

/// Apply records read to the index, counting what they did.
fn apply(ingest: &RwLock<Ingest>, stats: &IndexStats, reads: &[FeedRecord]) {
    if reads.is_empty() {
        return;
    }
    let mut g = write(ingest);
    for r in reads {
        let a = g.apply(&r.source, r.next, &r.payload);
        stats.records.fetch_add(1, Relaxed);
        stats.added.fetch_add(a.added as u64, Relaxed);
        stats.replaced.fetch_add(a.replaced as u64, Relaxed);
        if let Some(why) = a.refused {
            stats.refused(why);
        }
    }
}

fn read(ingest: &RwLock<Ingest>) -> std::sync::RwLockReadGuard<'_, Ingest> {
    ingest.read().unwrap_or_else(|p| p.into_inner())
}

fn write(ingest: &RwLock<Ingest>) -> std::sync::RwLockWriteGuard<'_, Ingest> {
    ingest.write().unwrap_or_else(|p| p.into_inner())
}

/// Writing snapshots: locally, then to S3 when `index.dir` is there; the feed's positions
/// are recorded as saved only once the snapshot is durable.
struct Snapshots<'a> {
    store: SnapshotDir,
    remote: Option<Remote>,
    rt: &'a tokio::runtime::Handle,
    stats: &'a IndexStats,
    /// The last snapshot while it is not on S3 yet (its offsets are then not committed).
    unpushed: Option<fusionstream_index::snapshot::Written>,
}

impl Snapshots<'_> {
    /// Write a snapshot of the index; its folder.
    fn take(&mut self, ingest: &RwLock<Ingest>, feed: &dyn Feed) -> anyhow::Result<PathBuf> {
        let started = Instant::now();
        let guard = read(ingest);
        let written = self.store.save(&guard.index, &guard.meta)?;
        let positions = guard.meta.positions.clone();
        drop(guard);
        write(ingest).snapshotted(Instant::now());
        let durable = match &self.remote {
            None => true,
            Some(r) => match self.rt.block_on(r.push(&written)) {
                Ok(()) => {
                    self.unpushed = None;
                    true
                }
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "index snapshot not copied to S3; the next one will be (offsets not committed)");
                    self.stats.push_failures.fetch_add(1, Relaxed);
                    self.unpushed = Some(written.clone());
                    false
                }
            },
        };
        if durable {
            feed.saved(&positions);
        }
        let ms = started.elapsed().as_millis() as u64;
        self.stats.snapshots.fetch_add(1, Relaxed);
        self.stats.snapshot_bytes.store(written.bytes, Relaxed);
        self.stats.snapshot_ms.store(ms, Relaxed);
        tracing::info!(
            sequence = written.sequence,
            bytes = written.bytes,
            ms,
            "index snapshot written"
        );
        Ok(written.dir)
    }

    /// At the end: a last snapshot when anything changed since the last (or there is none),
    /// and the last one copied to S3 if it is not there yet. The current snapshot's folder.
    fn finish(
        &mut self,
        ingest: &RwLock<Ingest>,
        feed: &dyn Feed,
        last: Option<PathBuf>,
    ) -> anyhow::Result<Option<PathBuf>> {
        let dirty = read(ingest).dirty();
        let last = if dirty || last.is_none() && self.store.current()?.is_none() {
            Some(self.take(ingest, feed)?)
        } else if last.is_none() {
            self.store.current()?.map(|(d, _)| d)
        } else {
            last
        };
        if let (Some(r), Some(w)) = (&self.remote, &self.unpushed) {
            self.rt
                .block_on(r.push(w))
                .context("copying the last index snapshot to S3")?;
            feed.saved(&read(ingest).meta.positions);
        }
        Ok(last)
    }
}

/// Run the index until `stop` (or, with `once`, until it has read what existed when it
/// started), then write a last snapshot. Blocking; `rt` serves HTTP.
pub fn run(
    c: &Config,
    rt: &tokio::runtime::Handle,
    once: bool,
    stop: CancellationToken,
) -> anyhow::Result<IndexSummary> {
    let dir = index_dir(c);
    let remote = sync_down(c, rt)?;
    let (index, meta) = open(c, &dir)?;
    tracing::info!(dir = %dir.display(), entries = ?Kind::ALL.map(|k| index.len(k)), "index opened");
    let mut feed = open_feed(c, &meta)?;
    let ingest = Arc::new(RwLock::new(Ingest::new(index, meta, c.index.kinds.clone())));
    let stats = Arc::new(IndexStats::default());
    let listen = serve_search(c, rt, &ingest, &stats, &stop)?;
    let mut snapshots = Snapshots {
        store: SnapshotDir::new(&dir),
        remote,
        rt,
        stats: &stats,
        unpushed: None,
    };
    let mut last = None;
    while !stop.is_cancelled() {
        let reads = feed.poll(POLL_MAX, POLL_WAIT)?;
        apply(&ingest, &stats, &reads);
        let (due, positions) = {
            let g = read(&ingest);
            let interval = c.index.snapshot_interval;
            let due = g.snapshot_due(Instant::now(), interval, c.index.snapshot_records);
            (due, g.meta.positions.clone())
        };
        if due {
            last = Some(snapshots.take(&ingest, &*feed)?);
        }
        if once && reads.is_empty() && feed.caught_up(&positions) {
            break;
        }
    }
    let last = snapshots.finish(&ingest, &*feed, last)?;
    stop.cancel();
    let g = read(&ingest);
    Ok(IndexSummary {
        feed: feed.describe(),
        records: stats.records.load(Relaxed),
        added: stats.added.load(Relaxed),
        replaced: stats.replaced.load(Relaxed),
        refused: stats.refused.iter().map(|c| c.load(Relaxed)).sum(),
        entries: Kind::ALL.map(|k| (k, g.index.len(k))).to_vec(),
        bundle: g.meta.bundle.clone(),
        snapshot: last,
        listen,
    })
}
