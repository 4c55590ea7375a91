//! Queries: a text, an image or both, embedded by the bundle's CLIP (and fusion head), then
//! searched in each kind's graph. A text query searches the image graph with its text
//! embedding (text → image: CLIP puts both in one space) and the text graph with the same;
//! an image query searches both with its image embedding (image → image, image → text);
//! the fused graph is searched with the query's fused embedding.

use fusionstream_core::task::{Task, TaskSet};
use fusionstream_index::{Hit, Kind, VectorIndex};
use fusionstream_model::FusionModel;

use crate::config::Config;
use serde::Serialize;

/// A query's embeddings.
#[derive(Debug, Clone, Default)]
pub struct QueryVectors {
    /// CLIP image embedding.
    pub image: Option<Vec<f32>>,
    /// CLIP text embedding.
    pub text: Option<Vec<f32>>,
    /// Fusion head's embedding.
    pub fused: Option<Vec<f32>>,
    /// The photo pack's embedding of the image (when the model has the pack).
    pub photo: Option<Vec<f32>>,
}

impl QueryVectors {
    /// The vector searched in `kind`'s graph, and which of the query's it is.
    fn for_kind(&self, kind: Kind) -> Option<(&[f32], &'static str)> {
        let image = self.image.as_deref().map(|v| (v, "image"));
        let text = self.text.as_deref().map(|v| (v, "text"));
        match kind {
            Kind::Image => image.or(text),
            Kind::Text => text.or(image),
            Kind::Fused => self.fused.as_deref().map(|v| (v, "fused")),
            // Photo embeddings are of images only: no text → photo search.
            Kind::Photo => self.photo.as_deref().map(|v| (v, "photo")),
        }
    }
}

/// The photo pack queries need: the embeddings' pack, when the index holds photo
/// embeddings (`index.kinds` has `photo`).
pub fn query_photo_options(c: &Config) -> Option<fusionstream_model::photo::PhotoOptions> {
    let photo = c.index.kinds.contains(&Kind::Photo);
    c.photo_options()
        .filter(|_| photo)
        .map(|o| fusionstream_model::photo::PhotoOptions {
            classifier: None,
            ..o
        })
        .filter(|o| o.embedder.is_some())
}

/// Embed a query with the model (blocking).
pub fn embed(
    model: &FusionModel,
    text: Option<&str>,
    image: Option<&[u8]>,
) -> anyhow::Result<QueryVectors> {
    anyhow::ensure!(
        text.is_some() || image.is_some(),
        "a query needs a text or an image"
    );
    let mut tasks = TaskSet::default();
    tasks.insert(Task::Embed);
    let item = model.prepare(image, text, None, tasks)?;
    let out = model
        .infer_batch(&[item])?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the model returned no output"))?;
    Ok(QueryVectors {
        image: out.image_embedding,
        text: out.text_embedding,
        fused: out.fused_embedding,
        photo: out.photo_embedding,
    })
}

/// One graph's results.
#[derive(Debug, Clone, Serialize)]
pub struct KindResults {
    /// The graph searched.
    pub kind: Kind,
    /// The query's embedding it was searched with (`image`, `text`, `fused`).
    pub query: &'static str,
    /// Entries of the graph.
    pub entries: usize,
    /// Most similar first.
    pub hits: Vec<Hit>,
}

/// A search's answer.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResults {
    /// The embedding space (`bundle@version`) of the index.
    pub bundle: Option<String>,
    /// How many results were asked for.
    pub k: usize,
    /// Per graph searched.
    pub results: Vec<KindResults>,
}

/// Search `kinds` (every kind with entries when empty) of `index` for the `k` nearest to
/// `q`.
pub fn search(
    index: &VectorIndex,
    bundle: Option<&str>,
    q: &QueryVectors,
    kinds: &[Kind],
    k: usize,
) -> anyhow::Result<SearchResults> {
    let kinds: Vec<Kind> = if kinds.is_empty() {
        Kind::ALL
            .into_iter()
            .filter(|&kind| index.len(kind) > 0)
            .collect()
    } else {
        kinds.to_vec()
    };
    let mut results = Vec::new();
    for kind in kinds {
        let Some((v, which)) = q.for_kind(kind) else {
            continue;
        };
        results.push(KindResults {
            kind,
            query: which,
            entries: index.len(kind),
            hits: index.search(kind, v, k)?,
        });
    }
    Ok(SearchResults {
        bundle: bundle.map(str::to_owned),
        k,
        results,
    })
}

/// An error when the index's vectors are not in `model`'s space.
pub fn check_space(model: &FusionModel, index_bundle: Option<&str>) -> anyhow::Result<()> {
    let m = model.manifest();
    let ours = format!("{}@{}", m.id, m.version);
    match index_bundle {
        Some(b) if b != ours => anyhow::bail!(
            "the index holds embeddings of bundle {b}; the model loaded is {ours} (another embedding space)"
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use fusionstream_index::Params;

    use super::*;

    #[test]
    fn text_queries_search_images_and_image_queries_search_texts() {
        let mut ix = VectorIndex::new(Params::default()).unwrap();
        ix.upsert(Kind::Image, "cat-photo", &[1.0, 0.0]).unwrap();
        ix.upsert(Kind::Image, "dog-photo", &[0.0, 1.0]).unwrap();
        ix.upsert(Kind::Text, "cat-text", &[0.9, 0.1]).unwrap();
        let q = QueryVectors {
            text: Some(vec![0.95, 0.05]),
            ..Default::default()
        };
        let r = search(&ix, Some("b@1"), &q, &[], 1).unwrap();
        assert_eq!(r.results.len(), 2);
        assert_eq!(r.results[0].kind, Kind::Image);
        assert_eq!(r.results[0].query, "text");
        assert_eq!(r.results[0].hits[0].event_id, "cat-photo");
        let q = QueryVectors {
            image: Some(vec![0.0, 1.0]),
            ..Default::default()
        };
        let r = search(&ix, None, &q, &[Kind::Text, Kind::Fused], 5).unwrap();
        assert_eq!(r.results.len(), 1, "no fused vector, no fused search");
        assert_eq!(r.results[0].query, "image");
        assert_eq!(r.results[0].hits.len(), 1);
    }
}
