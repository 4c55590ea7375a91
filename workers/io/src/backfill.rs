//! Backfill: the objects under an S3 prefix as image events, through the same pipeline as a
//! stream, resumable from the local checkpoint.
//!
//! The source lists the prefix page by page in key order (`StartAfter` = the last key seen,
//! so no continuation token has to survive a restart), keeps the keys of its shard whose
//! suffix is wanted, and emits one event per object. Positions are ordinals of this run
//! (partition 0); the checkpoint turns the committed ordinal back into the key it stood for,
//! so a resumed run lists from the last acknowledged key, whatever was added or removed
//! before it meanwhile. The map from ordinal to key holds only events in flight (bounded by
//! `pipeline.max_in_flight`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use fusionstream_core::backfill_shard::{in_shard, object_event, wanted};
use fusionstream_core::backoff::Backoff;
use fusionstream_core::position::PartitionId;
use fusionstream_core::{Classify as _, ErrorClass, TaskSet};

use crate::local::checkpoint::{BackfillPosition, Checkpoint};
use crate::ports::{CommitAck, Committer, PositionLabels, Source, SourceHandle};
use crate::retry::retry;
use crate::s3::S3Media;
use crate::SourceRecord;

/// What to backfill.
#[derive(Debug, Clone)]
pub struct BackfillSpec {
    /// Bucket.
    pub bucket: String,
    /// Key prefix.
    pub prefix: String,
    /// This shard.
    pub shard: u32,
    /// Number of shards.
    pub shards: u32,
    /// Key suffixes taken (empty: all).
    pub suffixes: Vec<String>,
    /// Tasks asked of every object.
    pub tasks: TaskSet,
    /// Keys per listing request.
    pub page: u32,
    /// Retries of a failed listing request.
    pub backoff: Backoff,
}

impl BackfillSpec {
    /// `s3://bucket/prefix`, the stream name of the records and the checkpoint's source.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// The name of this shard's position in a lake commit: `s3://bucket/prefix#shard/shards`.
    pub fn source_key(&self) -> String {
        format!("{}#{}/{}", self.url(), self.shard, self.shards)
    }

    /// Where an earlier run stopped, from a lake commit's durable position of this shard.
    pub fn resume_from_label(&self, label: &str) -> anyhow::Result<BackfillPosition> {
        let p: BackfillPosition = serde_json::from_str(label)
            .with_context(|| format!("reading the lake's position of {}", self.source_key()))?;
        anyhow::ensure!(
            p.source == self.url() && p.shard == self.shard && p.shards == self.shards,
            "the lake's position of {} names another backfill ({} shard {} of {})",
            self.source_key(),
            p.source,
            p.shard,
            p.shards
        );
        Ok(p)
    }

    /// Where an earlier run of this backfill stopped, from `checkpoint`; an error when the
    /// checkpoint belongs to another backfill (another prefix or sharding).
    pub fn resume_from(&self, checkpoint: &Checkpoint) -> anyhow::Result<BackfillPosition> {
        match &checkpoint.backfill {
            None if checkpoint.positions.is_empty() => Ok(BackfillPosition {
                source: self.url(),
                shard: self.shard,
                shards: self.shards,
                start_after: None,
                done: 0,
            }),
            Some(p)
                if p.source == self.url() && p.shard == self.shard && p.shards == self.shards =>
            {
                Ok(p.clone())
            }
            Some(p) => anyhow::bail!(
                "the checkpoint is of another backfill ({} shard {} of {}): use another \
                 checkpoint.path, or --fresh to start over",
                p.source,
                p.shard,
                p.shards
            ),
            None => anyhow::bail!(
                "the checkpoint is of a stream, not of a backfill: use another checkpoint.path, \
                 or --fresh to start over"
            ),
        }
    }
}

/// Ordinal of an emitted event → its key, while the event is in flight.
type InFlightKeys = Arc<Mutex<BTreeMap<u64, String>>>;

/// The listing source.
#[derive(Debug)]
pub struct BackfillSource {
    store: S3Media,
    spec: BackfillSpec,
    start_after: Option<String>,
    keys: InFlightKeys,
}

/// The checkpoint of a backfill as a committer.
#[derive(Debug)]
pub struct BackfillCheckpoint {
    path: PathBuf,
    state: Checkpoint,
    done_before: u64,
    keys: InFlightKeys,
}

/// A backfill source and its committer, sharing the keys in flight.
pub fn backfill(
    store: S3Media,
    spec: BackfillSpec,
    resume: BackfillPosition,
    checkpoint_path: &Path,
) -> (BackfillSource, BackfillCheckpoint) {
    let keys = InFlightKeys::default();
    let source = BackfillSource {
        store,
        spec,
        start_after: resume.start_after.clone(),
        keys: keys.clone(),
    };
    let committer = BackfillCheckpoint {
        path: checkpoint_path.to_owned(),
        done_before: resume.done,
        state: Checkpoint {
            version: 1,
            positions: BTreeMap::new(),
            backfill: Some(resume),
            marks: BTreeMap::new(),
        },
        keys,
    };
    (source, committer)
}

impl Source for BackfillSource {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn partitions(&self) -> Vec<(PartitionId, u64)> {
        vec![(0, 0)]
    }

    async fn run<H: SourceHandle>(self, emit: H) -> anyhow::Result<bool> {
        let s = &self.spec;
        let stream = s.url();
        let max_keys = i32::try_from(s.page).unwrap_or(1000);
        let mut after = self.start_after.clone();
        let mut next = 0u64;
        loop {
            let list = || {
                self.store
                    .list_after(&s.bucket, &s.prefix, after.as_deref(), max_keys)
            };
            let page = retry(&s.backoff, list, |e, attempt| {
                let again = e.class() == ErrorClass::Retryable;
                if again {
                    tracing::warn!(error = %e, attempt, "listing {stream} failed; retrying");
                    emit.context().metrics.source_retries.fetch_add(1, Relaxed);
                }
                again
            })
            .await
            .with_context(|| format!("listing {stream}"))?;
            for key in &page.keys {
                if !wanted(key, &s.suffixes) || !in_shard(key, s.shard, s.shards) {
                    continue;
                }
                self.keys
                    .lock()
                    .map_err(|_| anyhow::anyhow!("backfill key map poisoned"))?
                    .insert(next, key.clone());
                let rec = SourceRecord {
                    partition: 0,
                    stream: stream.clone(),
                    offset: next,
                    payload: object_event(&s.bucket, key, s.tasks),
                    oversized: false,
                    traceparent: None,
                };
                if !emit.emit(rec).await {
                    return Ok(false);
                }
                next += 1;
            }
            if let Some(last) = page.keys.last() {
                after = Some(last.clone());
            }
            if !page.truncated || page.keys.is_empty() {
                return Ok(true);
            }
        }
    }
}

/// The key of the last event below `next` (partition 0's next position), forgetting the
/// keys before it; `None` when nothing is done yet.
fn done_key(
    keys: &InFlightKeys,
    positions: &[(PartitionId, u64)],
) -> anyhow::Result<Option<(String, u64)>> {
    let Some(&(_, next)) = positions.iter().find(|(p, _)| *p == 0) else {
        return Ok(None);
    };
    if next == 0 {
        return Ok(None);
    }
    let mut keys = keys
        .lock()
        .map_err(|_| anyhow::anyhow!("backfill key map poisoned"))?;
    let key = keys
        .get(&(next - 1))
        .cloned()
        .context("commit of a backfill position that was never emitted")?;
    // Keep the committed key: a later commit at the same position still finds it.
    keys.retain(|&n, _| n + 1 >= next);
    Ok(Some((key, next)))
}

impl Committer for BackfillCheckpoint {
    fn commit(&mut self, positions: &[(PartitionId, u64)]) -> anyhow::Result<CommitAck> {
        let Some((key, next)) = done_key(&self.keys, positions)? else {
            return Ok(CommitAck::Confirmed);
        };
        if let Some(b) = &mut self.state.backfill {
            b.start_after = Some(key);
            b.done = self.done_before + next;
        }
        self.state.store(&self.path)?;
        Ok(CommitAck::Confirmed)
    }
}

impl BackfillCheckpoint {
    /// The durable names of this backfill's positions (a lake commit stores them instead of
    /// the checkpoint file).
    pub fn labels(&self) -> Arc<dyn PositionLabels> {
        let resume = self.state.backfill.clone().unwrap_or_default();
        Arc::new(BackfillLabels {
            keys: self.keys.clone(),
            done_before: self.done_before,
            resume,
        })
    }
}

/// A backfill's positions as its shard's last key done ([`BackfillPosition`] as JSON).
#[derive(Debug)]
struct BackfillLabels {
    keys: InFlightKeys,
    done_before: u64,
    resume: BackfillPosition,
}

impl PositionLabels for BackfillLabels {
    fn durable(
        &self,
        positions: &[(PartitionId, u64)],
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let key = format!(
            "{}#{}/{}",
            self.resume.source, self.resume.shard, self.resume.shards
        );
        let Some((last, next)) = done_key(&self.keys, positions)? else {
            return Ok(BTreeMap::new());
        };
        let p = BackfillPosition {
            start_after: Some(last),
            done: self.done_before + next,
            ..self.resume.clone()
        };
        Ok(BTreeMap::from([(key, serde_json::to_string(&p)?)]))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> BackfillSpec {
        BackfillSpec {
            bucket: "b".into(),
            prefix: "p/".into(),
            shard: 1,
            shards: 2,
            suffixes: vec![],
            tasks: TaskSet::unnamed(),
            page: 10,
            backoff: Backoff {
                initial: std::time::Duration::ZERO,
                max: std::time::Duration::ZERO,
                retries: 0,
            },
        }
    }

    #[test]
    fn resumes_only_its_own_backfill() {
        let s = spec();
        let fresh = s.resume_from(&Checkpoint::default()).unwrap();
        assert_eq!((fresh.start_after, fresh.done), (None, 0));
        let cp = Checkpoint {
            backfill: Some(BackfillPosition {
                source: "s3://b/p/".into(),
                shard: 1,
                shards: 2,
                start_after: Some("p/k9".into()),
                done: 9,
            }),
            ..Checkpoint::default()
        };
        assert_eq!(
            s.resume_from(&cp).unwrap().start_after.as_deref(),
            Some("p/k9")
        );
        for other in [
            BackfillPosition {
                shard: 0,
                ..cp.backfill.clone().unwrap()
            },
            BackfillPosition {
                source: "s3://b/q/".into(),
                ..cp.backfill.clone().unwrap()
            },
        ] {
            let c = Checkpoint {
                backfill: Some(other),
                ..Checkpoint::default()
            };
            assert!(s.resume_from(&c).is_err());
        }
        let mut stream = Checkpoint::default();
        stream.positions.insert("events.jsonl".into(), 3);
        assert!(s.resume_from(&stream).is_err());
    }

    #[test]
    fn the_checkpoint_records_the_key_of_the_done_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let resume = BackfillPosition {
            source: "s3://b/p/".into(),
            shard: 1,
            shards: 2,
            start_after: None,
            done: 5,
        };
        let store = unused_store();
        let (_source, mut cp) = backfill(store, spec(), resume, &path);
        for (n, k) in ["p/a", "p/b", "p/c"].iter().enumerate() {
            cp.keys.lock().unwrap().insert(n as u64, (*k).to_owned());
        }
        cp.commit(&[(0, 2)]).unwrap();
        let b = Checkpoint::load(&path).unwrap().backfill.unwrap();
        assert_eq!((b.start_after.as_deref(), b.done), (Some("p/b"), 7));
        // Only the committed key and those after it stay in the map.
        assert_eq!(cp.keys.lock().unwrap().len(), 2);
        cp.commit(&[(0, 2)]).unwrap();
        cp.commit(&[(0, 3)]).unwrap();
        let b = Checkpoint::load(&path).unwrap().backfill.unwrap();
        assert_eq!((b.start_after.as_deref(), b.done), (Some("p/c"), 8));
        assert!(cp.commit(&[(0, 9)]).is_err(), "never emitted");
    }

    /// A store that is never called (the committer test does not list).
    fn unused_store() -> S3Media {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(S3Media::new(crate::s3::S3Settings {
                endpoint: Some("http://127.0.0.1:9".into()),
                region: "us-east-1".into(),
                ..Default::default()
            }))
    }
}
