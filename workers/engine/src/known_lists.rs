//! Known lists as the pipeline sees them (`[matching]`, docs/matching.md): a snapshot of
//! every list, replaced list by list when a file changes (`app/lists.rs` loads and reloads);
//! the match of an image's 8 dihedral PDQ hashes against the hash lists (on the
//! preprocessing pool), and of its embeddings (CLIP's, the photo pack's) against the
//! embedding lists of their kind (when the model's outputs are assembled).

use std::sync::{Arc, RwLock};

use fusionstream_core::embedlist::{EmbeddingKind, EmbeddingList};
use fusionstream_core::hashlist::HashList;
use fusionstream_core::moderation::{Action, EmbeddingMatch, ListMatch};
use fusionstream_model::pdq::Dihedral;

/// One loaded list.
#[derive(Debug)]
pub struct LoadedList {
    /// Its id (`matching.hash_lists.<id>`).
    pub id: String,
    /// What a match asks for.
    pub action: Action,
    /// The entries.
    pub list: ListBody,
}

/// A list's entries.
#[derive(Debug)]
pub enum ListBody {
    /// PDQ hashes, indexed.
    Hashes(HashList),
    /// Image embeddings.
    Embeddings(EmbeddingList),
}

impl ListBody {
    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            ListBody::Hashes(l) => l.len(),
            ListBody::Embeddings(l) => l.len(),
        }
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every list, swapped whole.
#[derive(Debug)]
pub struct KnownLists {
    current: RwLock<Arc<Vec<Arc<LoadedList>>>>,
    /// Most bits apart that match.
    pub max_distance: u32,
    /// Least hash quality matched.
    pub min_quality: u32,
    /// Least cosine similarity an embedding list matches at.
    pub min_similarity: f32,
}

impl KnownLists {
    /// These lists.
    pub fn new(
        lists: Vec<LoadedList>,
        max_distance: u32,
        min_quality: u32,
        min_similarity: f32,
    ) -> KnownLists {
        KnownLists {
            current: RwLock::new(Arc::new(lists.into_iter().map(Arc::new).collect())),
            max_distance,
            min_quality,
            min_similarity,
        }
    }

    /// Whether any list is of embeddings of `kind` (the model then gives `moderate` images
    /// that embedding).
    pub fn has_embedding_lists(&self, kind: EmbeddingKind) -> bool {
        self.snapshot()
            .iter()
            .any(|l| matches!(&l.list, ListBody::Embeddings(e) if e.kind() == kind))
    }

    /// The entries of the lists of `kind` an image's embedding of that kind matches, most
    /// similar first.
    pub fn embedding_matches(&self, embedding: &[f32], kind: EmbeddingKind) -> Vec<EmbeddingMatch> {
        let mut out = Vec::new();
        for l in self.snapshot().iter() {
            let ListBody::Embeddings(list) = &l.list else {
                continue;
            };
            if list.kind() != kind {
                continue;
            }
            for hit in list.search(embedding, self.min_similarity) {
                let e = &list.entries()[hit.entry];
                out.push(EmbeddingMatch {
                    list: l.id.clone(),
                    item: e.item.clone(),
                    label: e.label.clone(),
                    similarity: hit.similarity,
                    min_similarity: self.min_similarity,
                    action: l.action,
                });
            }
        }
        out.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        out
    }

    /// The lists now.
    pub fn snapshot(&self) -> Arc<Vec<Arc<LoadedList>>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replace the list of the same id (events being matched keep the snapshot they took).
    pub fn replace(&self, list: LoadedList) {
        let mut cur = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next: Vec<Arc<LoadedList>> = cur.iter().cloned().collect();
        match next.iter_mut().find(|l| l.id == list.id) {
            Some(slot) => *slot = Arc::new(list),
            None => next.push(Arc::new(list)),
        }
        *cur = Arc::new(next);
    }

    /// The entries an image matches, nearest first; none for a hash under `min_quality`.
    pub fn matches(&self, image: &Dihedral) -> Vec<ListMatch> {
        if image.quality < self.min_quality {
            return Vec::new();
        }
        let queries: Vec<_> = image.hashes.iter().map(|h| h.to_hash256()).collect();
        let mut out = Vec::new();
        for l in self.snapshot().iter() {
            let ListBody::Hashes(list) = &l.list else {
                continue;
            };
            for hit in list.search(&queries, self.max_distance) {
                let e = &list.entries()[hit.entry];
                out.push(ListMatch {
                    list: l.id.clone(),
                    item: e.item.clone(),
                    label: e.label.clone(),
                    distance: hit.distance,
                    max_distance: self.max_distance,
                    action: l.action,
                });
            }
        }
        out.sort_by_key(|m| m.distance);
        out
    }
}
