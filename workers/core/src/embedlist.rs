//! Lists of known embeddings: images a team already removed (or any it wants to find again),
//! as embeddings of one kind ([`EmbeddingKind`]: the bundle's CLIP image embeddings, or the
//! photo pack's), matched by cosine similarity. They find what a perceptual hash misses —
//! crops, re-framings, recolourings — because the embedding describes what is in the image,
//! not where its pixels are.
//!
//! Format: JSON lines, one entry each, either
//! `{"item": "<id>", "label": "<optional>", "embedding": [..]}` or an embeddings record as
//! the worker writes it (`event_id` is the item, the kind's field — `image_embedding` or
//! `photo_embedding` — the vector), so that the records of removed content can be listed as
//! they are. Blank lines and lines starting
//! with `#` are skipped. Every vector must have the list's dimension; vectors are
//! normalised on load. A bad line refuses the whole list, naming the line.

use serde::{Deserialize, Serialize};

/// One listed item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its id.
    pub item: String,
    /// Its label.
    pub label: Option<String>,
}

/// Which embedding a list holds, and so which of an image's embeddings it is matched with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingKind {
    /// The bundle's CLIP image embedding (`image_embedding`).
    #[default]
    ImageEmbedding,
    /// The photo pack's embedding (`photo_embedding`).
    PhotoEmbedding,
}

impl EmbeddingKind {
    /// The field of an embeddings record that holds it.
    pub fn field(self) -> &'static str {
        match self {
            Self::ImageEmbedding => "image_embedding",
            Self::PhotoEmbedding => "photo_embedding",
        }
    }
}

/// A parsed list.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingList {
    kind: EmbeddingKind,
    entries: Vec<Entry>,
    dim: usize,
    /// Row-major, unit vectors.
    vectors: Vec<f32>,
}

/// A line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

#[derive(Deserialize)]
struct Line {
    item: Option<String>,
    event_id: Option<String>,
    label: Option<String>,
    embedding: Option<Vec<f32>>,
    image_embedding: Option<Vec<f32>>,
    photo_embedding: Option<Vec<f32>>,
}

/// A listed entry within the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Index into [`EmbeddingList::entries`].
    pub entry: usize,
    /// Cosine similarity with the query.
    pub similarity: f32,
}

impl EmbeddingList {
    /// Parse a list of `kind`.
    pub fn parse(text: &str, kind: EmbeddingKind) -> Result<EmbeddingList, ParseError> {
        let mut list = EmbeddingList {
            kind,
            ..EmbeddingList::default()
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why: String| ParseError { line: i + 1, why };
            let l: Line = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
            let item = l
                .item
                .or(l.event_id)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| err("no \"item\" (or \"event_id\")".into()))?;
            let of_kind = match kind {
                EmbeddingKind::ImageEmbedding => l.image_embedding,
                EmbeddingKind::PhotoEmbedding => l.photo_embedding,
            };
            let mut v = l
                .embedding
                .or(of_kind)
                .ok_or_else(|| err(format!("no \"embedding\" (or \"{}\")", kind.field())))?;
            if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
                return Err(err("an empty embedding, or one with NaN or infinity".into()));
            }
            // In f64: the squares of large components would overflow f32.
            let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            if norm == 0.0 {
                return Err(err("a zero embedding".into()));
            }
            if list.entries.is_empty() {
                list.dim = v.len();
            } else if v.len() != list.dim {
                return Err(err(format!(
                    "{} dimensions; the list's first entry has {}",
                    v.len(),
                    list.dim
                )));
            }
            v.iter_mut()
                .for_each(|x| *x = (f64::from(*x) / norm) as f32);
            list.vectors.extend_from_slice(&v);
            list.entries.push(Entry {
                item,
                label: l.label.filter(|s| !s.is_empty()),
            });
        }
        Ok(list)
    }

    /// The kind of embedding listed.
    pub fn kind(&self) -> EmbeddingKind {
        self.kind
    }

    /// The entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `i`'s vector, normalised.
    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    /// The vectors' dimension (0 for an empty list).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Entries whose cosine similarity with `query` is at least `min_similarity`, most
    /// similar first; none when `query` has another dimension than the list's (another
    /// bundle's list) or no direction. An exact scan: a list of 100,000 entries of 512
    /// dimensions is 51 million multiply-adds a query.
    pub fn search(&self, query: &[f32], min_similarity: f32) -> Vec<Hit> {
        if query.len() != self.dim || self.dim == 0 {
            return Vec::new();
        }
        let norm = query
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return Vec::new();
        }
        let query: Vec<f32> = query
            .iter()
            .map(|&x| (f64::from(x) / norm) as f32)
            .collect();
        let mut hits: Vec<Hit> = self
            .vectors
            .chunks_exact(self.dim)
            .enumerate()
            .filter_map(|(entry, v)| {
                let similarity = v.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>();
                (similarity >= min_similarity).then_some(Hit { entry, similarity })
            })
            .collect();
        hits.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        hits
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_finds_by_cosine() {
        let text = "# removed uploads\n\
            {\"item\": \"a\", \"label\": \"spam\", \"embedding\": [3, 4]}\n\
            \n\
            {\"event_id\": \"b\", \"image_embedding\": [0, 2], \"dim\": 2}\n";
        let l = EmbeddingList::parse(text, EmbeddingKind::ImageEmbedding).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l.dim(), 2);
        assert_eq!(l.entries()[0].label.as_deref(), Some("spam"));
        assert_eq!(l.entries()[1].item, "b");
        // (0.6, 0.8) normalised; the query need not be.
        let hits = l.search(&[6.0, 8.0], 0.99);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].entry, 0);
        assert!((hits[0].similarity - 1.0).abs() < 1e-6);
        let hits = l.search(&[0.0, 1.0], 0.5);
        assert_eq!(hits.iter().map(|h| h.entry).collect::<Vec<_>>(), [1, 0]);
        assert!(
            l.search(&[1.0, 0.0, 0.0], 0.0).is_empty(),
            "another dimension"
        );
        assert!(l.search(&[0.0, 0.0], -1.0).is_empty(), "no direction");
        // Components whose squares overflow f32 still have a direction.
        let big = EmbeddingList::parse(
            "{\"item\": \"c\", \"embedding\": [7.7e25, 0]}",
            EmbeddingKind::ImageEmbedding,
        )
        .unwrap();
        let hits = big.search(&[3e38, 3e38], -1.0);
        assert!(
            (hits[0].similarity - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6,
            "{hits:?}"
        );
    }

    #[test]
    fn a_bad_line_refuses_the_list_naming_it() {
        for (text, line) in [
            (
                "{\"item\": \"a\", \"embedding\": [1, 0]}\n{\"item\": \"b\", \"embedding\": [1]}",
                2,
            ),
            ("{\"embedding\": [1, 0]}", 1),
            ("{\"item\": \"a\"}", 1),
            ("\n{\"item\": \"a\", \"embedding\": [0, 0]}", 2),
            ("{\"item\": \"a\", \"embedding\": []}", 1),
            ("not json", 1),
        ] {
            assert_eq!(
                EmbeddingList::parse(text, EmbeddingKind::ImageEmbedding)
                    .unwrap_err()
                    .line,
                line,
                "{text}"
            );
        }
    }

    #[test]
    fn a_photo_list_reads_the_photo_embedding_of_worker_records() {
        let record =
            "{\"event_id\": \"p\", \"image_embedding\": [1, 0], \"photo_embedding\": [0, 3, 4]}";
        let photo = EmbeddingList::parse(record, EmbeddingKind::PhotoEmbedding).unwrap();
        assert_eq!(photo.kind(), EmbeddingKind::PhotoEmbedding);
        assert_eq!((photo.len(), photo.dim()), (1, 3));
        assert_eq!(photo.vector(0), &[0.0, 0.6, 0.8]);
        // The same record as a CLIP list takes its image embedding.
        let clip = EmbeddingList::parse(record, EmbeddingKind::ImageEmbedding).unwrap();
        assert_eq!(
            (clip.kind(), clip.dim()),
            (EmbeddingKind::ImageEmbedding, 2)
        );
        // A photo list of records without the field names it.
        let err = EmbeddingList::parse(
            "{\"event_id\": \"q\", \"image_embedding\": [1]}",
            EmbeddingKind::PhotoEmbedding,
        )
        .unwrap_err();
        assert!(err.why.contains("photo_embedding"), "{err}");
    }
}
