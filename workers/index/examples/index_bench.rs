//! The index's side of `benches/compare_index.sh`: build the index over the vectors the
//! Python side generated (raw little-endian f32), one writer as in `fusionstream index`,
//! then answer the queries one at a time on one thread, and print one JSON line: inserts/s,
//! queries/s, recall@k against the exact ground truth, memory per vector.
//!
//! Usage: index_bench BASE.f32 QUERIES.f32 GROUND_TRUTH.i32 DIM K STORAGE M EF_ADD EF_SEARCH
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use fusionstream_index::{Kind, Params, Storage, VectorIndex};

fn read_f32(path: &str, dim: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).expect(path);
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect::<Vec<f32>>()
        .chunks_exact(dim)
        .map(<[f32]>::to_vec)
        .collect()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert_eq!(
        a.len(),
        10,
        "usage: index_bench BASE QUERIES GT DIM K STORAGE M EF_ADD EF_SEARCH"
    );
    let dim: usize = a[4].parse().unwrap();
    let k: usize = a[5].parse().unwrap();
    let storage = match a[6].as_str() {
        "f32" => Storage::F32,
        "f16" => Storage::F16,
        "i8" => Storage::I8,
        s => panic!("storage {s}"),
    };
    let params = Params {
        storage,
        connectivity: a[7].parse().unwrap(),
        expansion_add: a[8].parse().unwrap(),
        expansion_search: a[9].parse().unwrap(),
    };
    let base = read_f32(&a[1], dim);
    let queries = read_f32(&a[2], dim);
    let gt: Vec<Vec<usize>> = std::fs::read(&a[3])
        .unwrap()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect::<Vec<usize>>()
        .chunks_exact(k)
        .map(<[usize]>::to_vec)
        .collect();
    let ids: Vec<String> = (0..base.len()).map(|i| i.to_string()).collect();

    let rss0 = rss_bytes();
    let mut ix = VectorIndex::new(params).unwrap();
    let t = Instant::now();
    for (id, v) in ids.iter().zip(&base) {
        ix.upsert(Kind::Image, id, v).unwrap();
    }
    let insert_s = t.elapsed().as_secs_f64();
    let rss1 = rss_bytes();

    let t = Instant::now();
    let found: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| {
            ix.search(Kind::Image, q, k)
                .unwrap()
                .iter()
                .map(|h| h.event_id.parse().unwrap())
                .collect()
        })
        .collect();
    let query_s = t.elapsed().as_secs_f64();
    let recall = fusionstream_index::exact::recall(&gt, &found);
    let n = base.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "engine": format!("fusionstream HNSW (usearch, {})", a[6]),
            "n": base.len(), "dim": dim, "threads": 1,
            "inserts_per_s": n / insert_s,
            "queries_per_s": queries.len() as f64 / query_s,
            "recall_at_k": recall, "k": k,
            "index_bytes_per_vector": ix.memory_bytes() as f64 / n,
            "rss_bytes_per_vector": (rss1.saturating_sub(rss0)) as f64 / n,
        })
    );
}
