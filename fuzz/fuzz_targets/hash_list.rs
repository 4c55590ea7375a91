//! Known-hash lists (`fusionstream_core::hashlist`) on arbitrary text: parsing never panics,
//! and when the text is a list, the indexed search within 31 bits finds exactly what a scan
//! of the entries finds, for queries derived from the input (near copies of listed hashes).
#![no_main]

use fusionstream_core::hashlist::{Hash256, HashList};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(list) = HashList::parse(text) else {
        return;
    };
    // Make the list big enough to be indexed: its entries, each repeated with bits flipped.
    let mut entries = list.entries().to_vec();
    if entries.is_empty() {
        return;
    }
    let base = entries.clone();
    let mut k = 0u64;
    while entries.len() < 5000 {
        let mut e = base[(k as usize) % base.len()].clone();
        e.hash.words[(k % 4) as usize] ^= k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        entries.push(e);
        k += 1;
    }
    let list = HashList::new(entries.clone());
    let mut q = base[0].hash;
    q.words[0] ^= u64::from(data[0]) | (u64::from(data[data.len() - 1]) << 40);
    let queries: Vec<Hash256> = vec![q, base[base.len() - 1].hash];
    let hits = list.search(&queries, 31);
    let mut want: Vec<usize> = (0..entries.len())
        .filter(|&i| queries.iter().any(|h| entries[i].hash.distance(h) <= 31))
        .collect();
    let mut got: Vec<usize> = hits.iter().map(|h| h.entry).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
});
