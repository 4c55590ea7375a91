//! Known-embedding lists (`fusionstream_core::embedlist`) on arbitrary text: parsing never
//! panics, and when the text is a list, every stored vector has unit length, and searching
//! for an entry's own vector finds every entry (threshold -2), most similar first, with
//! similarities within [-1, 1] and that entry as similar as the best.
#![no_main]

use fusionstream_core::embedlist::{EmbeddingKind, EmbeddingList};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if data.is_empty() {
        return;
    }
    // The first byte picks the kind (which record field is read).
    let kind = if data[0] & 1 == 0 {
        EmbeddingKind::ImageEmbedding
    } else {
        EmbeddingKind::PhotoEmbedding
    };
    let Ok(list) = EmbeddingList::parse(text, kind) else {
        return;
    };
    assert_eq!(list.kind(), kind);
    for i in 0..list.len() {
        let n: f32 = list.vector(i).iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-3, "entry {i} has squared norm {n}");
    }
    if list.is_empty() {
        return;
    }
    let q = list.vector(0).to_vec();
    let hits = list.search(&q, -2.0);
    assert_eq!(hits.len(), list.len(), "every entry is within -2");
    assert!(hits.windows(2).all(|w| w[0].similarity >= w[1].similarity));
    assert!(hits.iter().all(|h| (-1.001..=1.001).contains(&h.similarity)));
    let own = hits.iter().find(|h| h.entry == 0).expect("entry 0 among all");
    assert!(own.similarity >= hits[0].similarity - 1e-3, "{own:?} vs {:?}", hits[0]);
});
