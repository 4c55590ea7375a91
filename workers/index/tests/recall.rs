//! recall@10 of the default index against exact search on 50,000 random vectors.
//!
//! Two sets: 512-dimensional vectors near a random 32-dimensional subspace (the shape of
//! CLIP embeddings, `exact::random_embeddings`), and uniformly random 32-dimensional unit
//! vectors. Uniformly random 512-dimensional vectors are not a test of an index: their
//! nearest neighbours are barely nearer than any other point, and HNSW (usearch's or
//! faiss's) finds a fraction of them at any practical setting; their figures are in
//! `benches/README.md`.
#![allow(clippy::unwrap_used)]

use fusionstream_index::exact::{random_embeddings, random_unit_vectors, recall, top_k};
use fusionstream_index::{Kind, Params, Storage, VectorIndex};

const N: usize = 50_000;
const QUERIES: usize = 200;
const K: usize = 10;

fn recall_at_10(base: &[Vec<f32>], queries: &[Vec<f32>]) -> f64 {
    let params = Params::default();
    assert_eq!(params.storage, Storage::F16);
    let mut ix = VectorIndex::new(params).unwrap();
    for (i, v) in base.iter().enumerate() {
        ix.upsert(Kind::Image, &i.to_string(), v).unwrap();
    }
    assert_eq!(ix.len(Kind::Image), base.len());
    let exact: Vec<Vec<usize>> = queries.iter().map(|q| top_k(base, q, K)).collect();
    let approximate: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| {
            let hits = ix.search(Kind::Image, q, K).unwrap();
            assert_eq!(hits.len(), K);
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            hits.iter().map(|h| h.event_id.parse().unwrap()).collect()
        })
        .collect();
    recall(&exact, &approximate)
}

#[test]
fn recall_at_10_on_50k_embedding_like_512d_vectors() {
    let base = random_embeddings(N, 512, 32, 0.1, 1);
    let queries = random_embeddings(QUERIES, 512, 32, 0.1, 2);
    let r = recall_at_10(&base, &queries);
    eprintln!("recall@10, 50k 512-d embedding-like, defaults: {r:.4}");
    assert!(r >= 0.95, "recall@10 = {r:.4}");
}

#[test]
fn recall_at_10_on_50k_uniform_32d_vectors() {
    let base = random_unit_vectors(N, 32, 1);
    let queries = random_unit_vectors(QUERIES, 32, 2);
    let r = recall_at_10(&base, &queries);
    eprintln!("recall@10, 50k uniform 32-d, defaults: {r:.4}");
    assert!(r >= 0.95, "recall@10 = {r:.4}");
}
