//! The in-memory index: one HNSW graph (usearch) per embedding kind, keyed by event id.
//!
//! Every kind has its own graph because the kinds are searched apart (text → image is a
//! query of the text tower's space against the image graph) and the fused head's
//! dimension need not be CLIP's. An event id has at most one vector per kind: adding it
//! again replaces the vector under the same key, so replays (the worker publishes at least
//! once, the indexer reads at least once) never duplicate an entry.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use usearch::{new_index, Index, IndexOptions, MetricKind, ScalarKind};

use crate::IndexError;

/// Which embedding of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `image_embedding` (CLIP's image tower).
    Image,
    /// `text_embedding` (CLIP's text tower, the image's space).
    Text,
    /// `fused_embedding` (the fusion head).
    Fused,
    /// `photo_embedding` (the photo pack: near duplicates of real photos).
    Photo,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Image, Kind::Text, Kind::Fused, Kind::Photo];

    /// Lower-case name (file stems, metric labels, the API).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Text => "text",
            Kind::Fused => "fused",
            Kind::Photo => "photo",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Result<Kind, IndexError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                IndexError::Invalid(format!("unknown kind {s:?} (image, text, fused, photo)"))
            })
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// How vectors are stored in the graph (searches quantise the query the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// 4 bytes per dimension.
    F32,
    /// 2 bytes per dimension (the default: recall as f32's on unit vectors).
    F16,
    /// 1 byte per dimension (usearch's scaling of unit vectors to ±127).
    I8,
}

impl Storage {
    fn scalar(self) -> ScalarKind {
        match self {
            Storage::F32 => ScalarKind::F32,
            Storage::F16 => ScalarKind::F16,
            Storage::I8 => ScalarKind::I8,
        }
    }
}

/// HNSW parameters (hnswlib's and faiss's names: M, efConstruction, efSearch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Vector storage.
    pub storage: Storage,
    /// Neighbours per node (M).
    pub connectivity: usize,
    /// Candidates kept while inserting (efConstruction).
    pub expansion_add: usize,
    /// Candidates kept while searching (efSearch; at least k is used).
    pub expansion_search: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            storage: Storage::F16,
            connectivity: 16,
            expansion_add: 128,
            // recall@10 0.99 on 50,000 embedding-like vectors (0.85 at 64, 0.96 at 128):
            // workers/index/tests/recall.rs, benches/README.md.
            expansion_search: 256,
        }
    }
}

impl Params {
    /// Errors of out-of-range values.
    pub fn validate(&self) -> Result<(), IndexError> {
        if !(2..=256).contains(&self.connectivity) {
            return Err(IndexError::Invalid(format!(
                "connectivity {} is outside 2..=256",
                self.connectivity
            )));
        }
        if self.expansion_add == 0 || self.expansion_search == 0 {
            return Err(IndexError::Invalid("expansions must be at least 1".into()));
        }
        Ok(())
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The event whose embedding this is.
    pub event_id: String,
    /// Cosine similarity with the query, in [-1, 1] (of the stored, quantised vector).
    pub score: f32,
}

/// What adding an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new event id.
    New,
    /// The event id was there; its vector was replaced.
    Replaced,
}

/// The graph of one kind and its keys.
pub(crate) struct KindIndex {
    pub(crate) graph: Index,
    pub(crate) dim: usize,
    /// Key → event id (keys are positions here).
    pub(crate) ids: Vec<String>,
    /// Event id → key.
    keys: HashMap<String, u64>,
}

impl KindIndex {
    pub(crate) fn new(params: &Params, dim: usize) -> Result<KindIndex, IndexError> {
        let graph = new_index(&IndexOptions {
            dimensions: dim,
            // Vectors are normalised on the way in: the inner product is their cosine, at a
            // third of the cosine kernel's work (no norms per comparison).
            metric: MetricKind::IP,
            quantization: params.storage.scalar(),
            connectivity: params.connectivity,
            expansion_add: params.expansion_add,
            expansion_search: params.expansion_search,
            multi: false,
        })
        .map_err(usearch_error)?;
        Ok(KindIndex {
            graph,
            dim,
            ids: Vec::new(),
            keys: HashMap::new(),
        })
    }

    pub(crate) fn with_ids(mut self, ids: Vec<String>) -> Result<KindIndex, IndexError> {
        let keys: HashMap<String, u64> = ids
            .iter()
            .enumerate()
            .map(|(k, id)| (id.clone(), k as u64))
            .collect();
        if keys.len() != ids.len() || self.graph.size() != ids.len() {
            return Err(IndexError::Invalid(format!(
                "{} ids ({} distinct) for a graph of {} vectors",
                ids.len(),
                keys.len(),
                self.graph.size()
            )));
        }
        self.ids = ids;
        self.keys = keys;
        Ok(self)
    }
}

/// The index: a graph per kind, created with the first vector of that kind.
pub struct VectorIndex {
    params: Params,
    kinds: [Option<KindIndex>; 4],
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("VectorIndex");
        d.field("params", &self.params);
        for k in Kind::ALL {
            d.field(k.name(), &self.len(k));
        }
        d.finish()
    }
}

impl VectorIndex {
    /// An empty index.
    pub fn new(params: Params) -> Result<VectorIndex, IndexError> {
        params.validate()?;
        Ok(VectorIndex {
            params,
            kinds: [None, None, None, None],
        })
    }

    pub(crate) fn from_parts(params: Params, kinds: [Option<KindIndex>; 4]) -> VectorIndex {
        VectorIndex { params, kinds }
    }

    pub(crate) fn part(&self, kind: Kind) -> Option<&KindIndex> {
        self.kinds[kind.slot()].as_ref()
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Add `event_id`'s `kind` vector, or replace the one it had. The vector need not be
    /// normalised; it must be finite, non-zero and of the kind's dimension (the first
    /// vector of a kind sets it).
    pub fn upsert(
        &mut self,
        kind: Kind,
        event_id: &str,
        vector: &[f32],
    ) -> Result<Added, IndexError> {
        check_vector(vector)?;
        let params = self.params;
        let part = match &mut self.kinds[kind.slot()] {
            Some(p) => p,
            slot @ None => slot.insert(KindIndex::new(&params, vector.len())?),
        };
        if vector.len() != part.dim {
            return Err(IndexError::Dimension {
                kind: kind.name(),
                expected: part.dim,
                got: vector.len(),
            });
        }
        let vector = &unit(vector);
        if let Some(&key) = part.keys.get(event_id) {
            part.graph.remove(key).map_err(usearch_error)?;
            part.graph.add(key, vector).map_err(usearch_error)?;
            return Ok(Added::Replaced);
        }
        let key = part.ids.len() as u64;
        if part.graph.size() + 1 > part.graph.capacity() {
            let grown = (part.graph.capacity() * 2).max(1024);
            part.graph.reserve(grown).map_err(usearch_error)?;
        }
        part.graph.add(key, vector).map_err(usearch_error)?;
        part.ids.push(event_id.to_owned());
        part.keys.insert(event_id.to_owned(), key);
        Ok(Added::New)
    }

    /// The `k` nearest entries of `kind` to `query`, most similar first (none when the kind
    /// has no entries yet).
    pub fn search(&self, kind: Kind, query: &[f32], k: usize) -> Result<Vec<Hit>, IndexError> {
        check_vector(query)?;
        let Some(part) = self.part(kind) else {
            return Ok(Vec::new());
        };
        if query.len() != part.dim {
            return Err(IndexError::Dimension {
                kind: kind.name(),
                expected: part.dim,
                got: query.len(),
            });
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let found = part.graph.search(&unit(query), k).map_err(usearch_error)?;
        Ok(found
            .keys
            .iter()
            .zip(&found.distances)
            .map(|(&key, &d)| Hit {
                event_id: part.ids[key as usize].clone(),
                score: 1.0 - d,
            })
            .collect())
    }

    /// Change how many candidates searches keep (efSearch): more is slower and finds more
    /// of the true nearest.
    pub fn set_expansion_search(&mut self, n: usize) -> Result<(), IndexError> {
        if n == 0 {
            return Err(IndexError::Invalid(
                "expansion_search must be at least 1".into(),
            ));
        }
        self.params.expansion_search = n;
        for p in self.kinds.iter().flatten() {
            p.graph.change_expansion_search(n);
        }
        Ok(())
    }

    /// Whether `event_id` has a `kind` vector.
    pub fn contains(&self, kind: Kind, event_id: &str) -> bool {
        self.part(kind)
            .is_some_and(|p| p.keys.contains_key(event_id))
    }

    /// Entries of `kind`.
    pub fn len(&self, kind: Kind) -> usize {
        self.part(kind).map_or(0, |p| p.ids.len())
    }

    /// Whether there are no entries at all.
    pub fn is_empty(&self) -> bool {
        Kind::ALL.iter().all(|&k| self.len(k) == 0)
    }

    /// The dimension of `kind` (once it has an entry).
    pub fn dim(&self, kind: Kind) -> Option<usize> {
        self.part(kind).map(|p| p.dim)
    }

    /// Event ids of `kind`, in insertion order.
    pub fn ids(&self, kind: Kind) -> &[String] {
        self.part(kind).map_or(&[], |p| &p.ids)
    }

    /// Bytes the graphs hold (usearch's count: vectors, links, reserved capacity), plus the
    /// id maps.
    pub fn memory_bytes(&self) -> usize {
        self.kinds
            .iter()
            .flatten()
            .map(|p| {
                let ids: usize = p.ids.iter().map(|s| s.len() * 2 + 48).sum();
                p.graph.memory_usage() + ids
            })
            .sum()
    }
}

fn check_vector(v: &[f32]) -> Result<(), IndexError> {
    if v.is_empty() {
        return Err(IndexError::Invalid("empty vector".into()));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(IndexError::Invalid("vector with a NaN or infinity".into()));
    }
    if v.iter().all(|&x| x == 0.0) {
        return Err(IndexError::Invalid("zero vector (no direction)".into()));
    }
    Ok(())
}

/// `v` scaled to unit length (checked non-zero and finite before).
fn unit(v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    crate::exact::normalise(&mut v);
    v
}

pub(crate) fn usearch_error(e: impl std::fmt::Display) -> IndexError {
    IndexError::Usearch(e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        crate::exact::random_unit_vectors(1, dim, seed).remove(0)
    }

    #[test]
    fn a_vector_finds_itself_and_replacing_keeps_one_entry() {
        let mut ix = VectorIndex::new(Params::default()).unwrap();
        for i in 0..200 {
            assert_eq!(
                ix.upsert(Kind::Image, &format!("e{i}"), &unit(i, 32))
                    .unwrap(),
                Added::New
            );
        }
        let hits = ix.search(Kind::Image, &unit(7, 32), 3).unwrap();
        assert_eq!(hits[0].event_id, "e7");
        assert!(hits[0].score > 0.99, "{hits:?}");
        // Replacing e7 with e8's vector: one entry still, found by its new vector.
        assert_eq!(
            ix.upsert(Kind::Image, "e7", &unit(8, 32)).unwrap(),
            Added::Replaced
        );
        assert_eq!(ix.len(Kind::Image), 200);
        let hits = ix.search(Kind::Image, &unit(8, 32), 2).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.event_id.as_str()).collect();
        assert!(ids.contains(&"e7") && ids.contains(&"e8"), "{ids:?}");
        assert!(ix.search(Kind::Text, &unit(1, 32), 3).unwrap().is_empty());
    }

    #[test]
    fn bad_vectors_are_refused() {
        let mut ix = VectorIndex::new(Params::default()).unwrap();
        ix.upsert(Kind::Text, "a", &unit(1, 8)).unwrap();
        assert!(matches!(
            ix.upsert(Kind::Text, "b", &unit(1, 9)),
            Err(IndexError::Dimension { .. })
        ));
        assert!(ix.upsert(Kind::Text, "c", &[0.0; 8]).is_err());
        assert!(ix.upsert(Kind::Text, "d", &[f32::NAN; 8]).is_err());
        assert!(ix.search(Kind::Text, &unit(1, 7), 1).is_err());
        assert_eq!(ix.len(Kind::Text), 1);
        // Components whose squares overflow f32 still have a direction.
        let mut big = vec![0.0f32; 8];
        big[0] = 3e38;
        assert_eq!(ix.upsert(Kind::Text, "big", &big).unwrap(), Added::New);
        let hit = &ix.search(Kind::Text, &big, 1).unwrap()[0];
        assert_eq!(hit.event_id, "big");
        assert!(hit.score > 0.99, "{hit:?}");
    }
}
