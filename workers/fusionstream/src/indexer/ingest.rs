//! The index's state beside its graphs: where each source was read to, which bundle's
//! space the vectors are in, what was refused, and when the next snapshot is due.

use std::time::{Duration, Instant};

use fusionstream_core::record::EmbeddingRecord;
use fusionstream_index::{Added, Kind, SnapshotMeta, VectorIndex};

/// Why a record was not indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not an embeddings record.
    Malformed,
    /// From another bundle than the index's (another embedding space).
    OtherBundle,
    /// A vector the index cannot hold (wrong dimension, NaN, zero).
    BadVector,
}

impl Refused {
    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            Refused::Malformed => "malformed",
            Refused::OtherBundle => "other_bundle",
            Refused::BadVector => "bad_vector",
        }
    }
}

/// What one record did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Vectors added under a new event id.
    pub added: usize,
    /// Vectors that replaced the event's earlier one (a replay, a re-run).
    pub replaced: usize,
    /// Why (part of) the record was refused.
    pub refused: Option<Refused>,
}

/// The index and what its snapshots record.
#[derive(Debug)]
pub struct Ingest {
    /// The graphs.
    pub index: VectorIndex,
    /// Positions, bundle, counts.
    pub meta: SnapshotMeta,
    kinds: Vec<Kind>,
    since_snapshot: u64,
    last_snapshot: Instant,
}

impl Ingest {
    /// Indexing `kinds` of each record into `index`, from where `meta` says.
    pub fn new(index: VectorIndex, meta: SnapshotMeta, kinds: Vec<Kind>) -> Ingest {
        Ingest {
            index,
            meta,
            kinds,
            since_snapshot: 0,
            last_snapshot: Instant::now(),
        }
    }

    /// Index the record at `source`, whose next record is at `next` (the position is
    /// advanced whether the record is indexed or refused: a refused record stays refused).
    pub fn apply(&mut self, source: &str, next: u64, payload: &[u8]) -> Applied {
        self.meta.positions.insert(source.to_owned(), next);
        self.meta.records += 1;
        self.since_snapshot += 1;
        let mut applied = Applied::default();
        let record: EmbeddingRecord = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(source, position = next - 1, error = %e, "not an embeddings record; skipped");
                return self.refuse(applied, Refused::Malformed);
            }
        };
        let bundle = format!("{}@{}", record.meta.bundle.id, record.meta.bundle.version);
        match &self.meta.bundle {
            Some(b) if *b != bundle => {
                tracing::warn!(event_id = %record.meta.event_id, record_bundle = %bundle, index_bundle = %b, "record of another bundle (another embedding space); skipped");
                return self.refuse(applied, Refused::OtherBundle);
            }
            _ => {}
        }
        for &kind in &self.kinds {
            let vector = match kind {
                Kind::Image => record.image_embedding.as_deref(),
                Kind::Text => record.text_embedding.as_deref(),
                Kind::Fused => record.fused_embedding.as_deref(),
                Kind::Photo => record.photo_embedding.as_deref(),
            };
            let Some(v) = vector else { continue };
            match self.index.upsert(kind, &record.meta.event_id, v) {
                Ok(Added::New) => applied.added += 1,
                Ok(Added::Replaced) => applied.replaced += 1,
                Err(e) => {
                    tracing::warn!(event_id = %record.meta.event_id, kind = kind.name(), error = %e, "vector not indexed");
                    applied.refused = Some(Refused::BadVector);
                }
            }
        }
        if applied.added + applied.replaced > 0 && self.meta.bundle.is_none() {
            self.meta.bundle = Some(bundle);
        }
        if applied.refused.is_some() {
            self.meta.refused += 1;
        }
        applied
    }

    fn refuse(&mut self, mut applied: Applied, why: Refused) -> Applied {
        self.meta.refused += 1;
        applied.refused = Some(why);
        applied
    }

    /// Whether a snapshot is due: records were read since the last one and `interval` has
    /// passed, or `records` were read.
    pub fn snapshot_due(&self, now: Instant, interval: Duration, records: u64) -> bool {
        self.since_snapshot > 0
            && (now.duration_since(self.last_snapshot) >= interval
                || self.since_snapshot >= records)
    }

    /// Whether anything was read since the last snapshot.
    pub fn dirty(&self) -> bool {
        self.since_snapshot > 0
    }

    /// Note that a snapshot of the current state was written.
    pub fn snapshotted(&mut self, now: Instant) {
        self.since_snapshot = 0;
        self.last_snapshot = now;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use fusionstream_index::Params;
    use serde_json::json;

    use super::*;

    fn record(id: &str, bundle: &str, image: Option<Vec<f32>>, text: Option<Vec<f32>>) -> Vec<u8> {
        let mut r = json!({
            "schema_version": 1, "event_id": id,
            "bundle": {"id": bundle, "version": "1"},
            "source": {"kind": "kafka", "stream": "e", "partition": 0, "offset": 0},
            "timings": {"received_at": "", "fetch_ms": 0.0, "preprocess_ms": 0.0, "queue_ms": 0.0, "model_ms": 0.0, "total_ms": 0.0},
            "degraded": [], "skipped": [], "dim": 2,
        });
        if let Some(v) = image {
            r["image_embedding"] = json!(v);
        }
        if let Some(v) = text {
            r["text_embedding"] = json!(v);
        }
        serde_json::to_vec(&r).unwrap()
    }

    #[test]
    fn records_are_indexed_once_per_event_and_positions_advance() {
        let ix = VectorIndex::new(Params::default()).unwrap();
        let mut ingest = Ingest::new(ix, SnapshotMeta::default(), vec![Kind::Image, Kind::Text]);
        let a = ingest.apply(
            "t/0",
            1,
            &record("a", "b", Some(vec![1.0, 0.0]), Some(vec![0.0, 1.0])),
        );
        assert_eq!((a.added, a.replaced, a.refused), (2, 0, None));
        // The same event again (a replay): replaced, not duplicated.
        let a = ingest.apply("t/0", 2, &record("a", "b", Some(vec![1.0, 0.0]), None));
        assert_eq!((a.added, a.replaced), (0, 1));
        assert_eq!(ingest.index.len(Kind::Image), 1);
        assert_eq!(ingest.meta.bundle.as_deref(), Some("b@1"));
        // Another bundle's vectors are another space: refused.
        let a = ingest.apply("t/1", 5, &record("c", "other", Some(vec![1.0, 0.0]), None));
        assert_eq!(a.refused, Some(Refused::OtherBundle));
        let a = ingest.apply("t/1", 6, b"{not json");
        assert_eq!(a.refused, Some(Refused::Malformed));
        let a = ingest.apply("t/1", 7, &record("d", "b", Some(vec![1.0, 0.0, 0.0]), None));
        assert_eq!(a.refused, Some(Refused::BadVector));
        assert_eq!(ingest.meta.positions["t/0"], 2);
        assert_eq!(ingest.meta.positions["t/1"], 7);
        assert_eq!((ingest.meta.records, ingest.meta.refused), (5, 3));
        assert_eq!(ingest.index.len(Kind::Image), 1);
    }

    #[test]
    fn photo_embeddings_are_indexed_in_their_own_graph() {
        let ix = VectorIndex::new(Params::default()).unwrap();
        let mut ingest = Ingest::new(ix, SnapshotMeta::default(), vec![Kind::Image, Kind::Photo]);
        let mut r: serde_json::Value =
            serde_json::from_slice(&record("p", "b", Some(vec![1.0, 0.0]), None)).unwrap();
        // The photo pack's vector has its own dimension.
        r["photo_embedding"] = json!([0.0, 0.6, 0.8]);
        let a = ingest.apply("t/0", 1, &serde_json::to_vec(&r).unwrap());
        assert_eq!((a.added, a.refused), (2, None));
        assert_eq!(ingest.index.len(Kind::Photo), 1);
        assert_eq!(ingest.index.dim(Kind::Photo), Some(3));
        let hit = &ingest
            .index
            .search(Kind::Photo, &[0.0, 0.6, 0.8], 1)
            .unwrap()[0];
        assert_eq!(hit.event_id, "p");
        // Not indexed when the kind is not configured.
        let ix = VectorIndex::new(Params::default()).unwrap();
        let mut only_image = Ingest::new(ix, SnapshotMeta::default(), vec![Kind::Image]);
        only_image.apply("t/0", 1, &serde_json::to_vec(&r).unwrap());
        assert_eq!(only_image.index.len(Kind::Photo), 0);
    }

    #[test]
    fn snapshots_are_due_by_time_or_count_and_only_when_dirty() {
        let ix = VectorIndex::new(Params::default()).unwrap();
        let mut ingest = Ingest::new(ix, SnapshotMeta::default(), vec![Kind::Image]);
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        assert!(!ingest.snapshot_due(t0 + 10 * sec, sec, 100));
        ingest.apply("f", 10, &record("a", "b", Some(vec![1.0, 0.0]), None));
        assert!(!ingest.snapshot_due(ingest.last_snapshot, sec, 100));
        assert!(ingest.snapshot_due(ingest.last_snapshot + sec, sec, 100));
        assert!(ingest.snapshot_due(ingest.last_snapshot, sec, 1));
        ingest.snapshotted(t0);
        assert!(!ingest.dirty());
        assert!(!ingest.snapshot_due(t0 + 10 * sec, sec, 100));
    }
}
