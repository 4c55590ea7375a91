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
//! | `feed.rs` | the embeddings topic (every partition, assigned) or a local `embeddings.jsonl` |
//! | `query.rs` | embedding a query with the bundle, which graph each query vector searches |
//! | `serve.rs` | `/search`, `/metrics`, `/healthz`; the index's metrics |
//! | `remote.rs` | snapshots on S3: copied up after each save, down when starting behind |

pub mod feed;
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
use feed::{FileFeed, KafkaFeed};
use ingest::Ingest;
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

/// Run the index until `stop` (or, with `once`, until it has read what existed when it
/// started), then write a last snapshot. Blocking; `rt` serves HTTP.
pub fn run(
    c: &Config,
    rt: &tokio::runtime::Handle,
    once: bool,
    stop: CancellationToken,
) -> anyhow::Result<IndexSummary> {
    let dir = index_dir(c);
    let store = SnapshotDir::new(&dir);
    let remote = sync_down(c, rt)?;
    let (index, meta) = open(c, &dir)?;
    tracing::info!(dir = %dir.display(), entries = ?Kind::ALL.map(|k| index.len(k)), "index opened");
    let mut feed = match c.sink.kind {
        SinkKind::Kafka => feed::Feed::Kafka(KafkaFeed::open(
            &c.kafka.connection(),
            &c.kafka.embeddings_topic,
            &c.index.group_id,
            &meta.positions,
        )?),
        SinkKind::Local => feed::Feed::File(FileFeed::open(
            &c.sink.dir.join("embeddings.jsonl"),
            &meta.positions,
        )),
    };
    let ingest = Arc::new(RwLock::new(Ingest::new(index, meta, c.index.kinds.clone())));
    let stats = Arc::new(IndexStats::default());

    let mut listen = None;
    if !c.index.listen.is_empty() {
        let bundle = rt.block_on(crate::app::model::resolve_bundle(c))?;
        let model = crate::app::model::load(&c.model, &bundle, Default::default(), None)?;
        let shared = Shared::new(
            ingest.clone(),
            Arc::new(Mutex::new(model)),
            stats.clone(),
            c.index.max_k,
        );
        let addr = c.index.listen.parse().context("index.listen")?;
        let bound = rt.block_on(serve::spawn(addr, shared, stop.clone()))?;
        listen = Some(bound.to_string());
    }

    let mut last = None;
    // The last snapshot while it is not on S3 yet (its offsets are then not committed).
    let mut unpushed = None;
    let mut snapshot = |ingest: &RwLock<Ingest>, feed: &feed::Feed| -> anyhow::Result<PathBuf> {
        let started = Instant::now();
        let guard = ingest.read().unwrap_or_else(|p| p.into_inner());
        let written = store.save(&guard.index, &guard.meta)?;
        let positions = guard.meta.positions.clone();
        drop(guard);
        ingest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .snapshotted(Instant::now());
        let durable = match &remote {
            None => true,
            Some(r) => match rt.block_on(r.push(&written)) {
                Ok(()) => {
                    unpushed = None;
                    true
                }
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "index snapshot not copied to S3; the next one will be (offsets not committed)");
                    stats.push_failures.fetch_add(1, Relaxed);
                    unpushed = Some(written.clone());
                    false
                }
            },
        };
        if durable {
            feed.committed(&positions);
        }
        stats.snapshots.fetch_add(1, Relaxed);
        stats.snapshot_bytes.store(written.bytes, Relaxed);
        stats
            .snapshot_ms
            .store(started.elapsed().as_millis() as u64, Relaxed);
        tracing::info!(
            sequence = written.sequence,
            bytes = written.bytes,
            ms = started.elapsed().as_millis() as u64,
            "index snapshot written"
        );
        Ok(written.dir)
    };
    while !stop.is_cancelled() {
        let reads = feed.poll(POLL_MAX, POLL_WAIT)?;
        if !reads.is_empty() {
            let mut g = ingest.write().unwrap_or_else(|p| p.into_inner());
            for r in &reads {
                let a = g.apply(&r.source, r.next, &r.payload);
                stats.records.fetch_add(1, Relaxed);
                stats.added.fetch_add(a.added as u64, Relaxed);
                stats.replaced.fetch_add(a.replaced as u64, Relaxed);
                if let Some(why) = a.refused {
                    stats.refused(why);
                }
            }
        }
        let (due, positions) = {
            let g = ingest.read().unwrap_or_else(|p| p.into_inner());
            let due = g.snapshot_due(
                Instant::now(),
                c.index.snapshot_interval,
                c.index.snapshot_records,
            );
            (due, g.meta.positions.clone())
        };
        if due {
            last = Some(snapshot(&ingest, &feed)?);
        }
        if once && reads.is_empty() && feed.caught_up(&positions) {
            break;
        }
    }
    let dirty = ingest.read().unwrap_or_else(|p| p.into_inner()).dirty();
    if dirty || last.is_none() && store.current()?.is_none() {
        last = Some(snapshot(&ingest, &feed)?);
    } else if last.is_none() {
        last = store.current()?.map(|(d, _)| d);
    }
    if let (Some(r), Some(w)) = (&remote, &unpushed) {
        rt.block_on(r.push(w))
            .context("copying the last index snapshot to S3")?;
        let g = ingest.read().unwrap_or_else(|p| p.into_inner());
        feed.committed(&g.meta.positions);
    }
    stop.cancel();
    let g = ingest.read().unwrap_or_else(|p| p.into_inner());
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
