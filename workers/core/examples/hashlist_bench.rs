//! Known-bad list search at scale: a list of N random PDQ-sized hashes (default 1,000,000),
//! indexed; queries of 8 hashes (an image's dihedral variants) at the reference's threshold
//! of 31, half of them near copies of a listed hash (up to 31 bits flipped), half unrelated;
//! the same queries by a popcount scan for comparison. Prints the build time, µs per query
//! (median and p99) and the index's memory.
//! Usage: cargo run --release -p fusionstream-core --example hashlist_bench [N]
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Instant;

use fusionstream_core::hashlist::{Entry, Hash256, HashList};

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().unwrap());
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let entries: Vec<Entry> = (0..n)
        .map(|i| Entry {
            hash: Hash256 {
                words: [next(&mut s), next(&mut s), next(&mut s), next(&mut s)],
            },
            item: format!("item-{i}"),
            label: None,
        })
        .collect();
    let t = Instant::now();
    let list = HashList::new(entries.clone());
    let build = t.elapsed();
    let queries: Vec<Vec<Hash256>> = (0..200)
        .map(|k| {
            (0..8)
                .map(|v| {
                    if k % 2 == 0 && v == 3 {
                        let mut h = entries[(k * 7919) % n].hash;
                        for _ in 0..(k % 32) {
                            let b = (next(&mut s) % 256) as usize;
                            h.words[b / 64] ^= 1 << (b % 64);
                        }
                        h
                    } else {
                        Hash256 {
                            words: [next(&mut s), next(&mut s), next(&mut s), next(&mut s)],
                        }
                    }
                })
                .collect()
        })
        .collect();
    let time = |f: &dyn Fn(&[Hash256]) -> usize| {
        let mut us: Vec<f64> = Vec::new();
        let mut found = 0;
        for q in &queries {
            let t = Instant::now();
            found += f(q);
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        us.sort_by(f64::total_cmp);
        (us[us.len() / 2], us[us.len() * 99 / 100], found)
    };
    let (p50, p99, found) = time(&|q| list.search(q, 31).len());
    // The scan: the same distance checks over every entry.
    let (s50, s99, sfound) = time(&|q| {
        entries
            .iter()
            .filter(|e| q.iter().any(|h| e.hash.distance(h) <= 31))
            .count()
    });
    let index_bytes = 16 * (n * 4 + 65_537 * 4);
    println!(
        "{n} hashes: index built in {:.2} s, {:.0} MiB ({:.0} B per hash)",
        build.as_secs_f64(),
        index_bytes as f64 / (1 << 20) as f64,
        index_bytes as f64 / n as f64
    );
    println!("multi-index search, 8 hashes per query, distance <= 31: p50 {p50:.1} us, p99 {p99:.1} us ({found} hits in 200 queries)");
    println!("popcount scan, same queries:                         p50 {s50:.1} us, p99 {s99:.1} us ({sfound} hits)");
}
