//! Lists of known perceptual hashes (PDQ, 256 bits) and the search for every entry within a
//! Hamming distance of a query — the known-bad lists moderation teams match uploads against.
//!
//! **Format** (one entry per line, UTF-8): `<64 hex digits> <item id> [label …]`, separated by
//! spaces or tabs; `#` starts a comment; blank lines are ignored. The hash is the PDQ
//! reference's hex format (bit `k` of the 256-bit number). A list with any bad line is
//! refused whole, with the line number, so that a half-written file never replaces a good
//! list.
//!
//! **Search**: multi-index hashing (Norouzi, Punjani and Fleet, 2012). The 256 bits are cut
//! into 16 chunks of 16; two hashes within distance `d ≤ 31` differ in at most one bit in at
//! least one chunk (pigeonhole: 16 chunks × 2 bits would be 32). So the candidates are the
//! entries that, in some chunk, equal the query's chunk or differ from it in one bit: 16 × 17
//! bucket probes, each bucket holding about `n / 65,536` entries, instead of `n` distance
//! computations. Each candidate's full distance is then checked. Larger thresholds, and small
//! lists (where a scan is as fast), use a popcount scan; both give the same answer (property
//! test).

use std::collections::HashMap;

/// A 256-bit hash: bit `k` is `words[k / 64] >> (k % 64) & 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash256 {
    /// Little-endian 64-bit words.
    pub words: [u64; 4],
}

impl Hash256 {
    /// From 64 hex digits (most significant first).
    pub fn from_hex(s: &str) -> Result<Hash256, String> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("expected 64 hex digits, got {s:?}"));
        }
        let mut words = [0u64; 4];
        for (i, w) in words.iter_mut().enumerate() {
            let start = 64 - 16 * (i + 1);
            *w = u64::from_str_radix(&s[start..start + 16], 16).map_err(|e| e.to_string())?;
        }
        Ok(Hash256 { words })
    }

    /// 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        self.words
            .iter()
            .rev()
            .map(|w| format!("{w:016x}"))
            .collect()
    }

    /// Bits that differ.
    pub fn distance(&self, other: &Hash256) -> u32 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }

    /// The 16-bit chunk `c` (0–15).
    fn chunk(&self, c: usize) -> u16 {
        (self.words[c / 4] >> (16 * (c % 4))) as u16
    }
}

/// One entry of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The hash.
    pub hash: Hash256,
    /// The item's id in the list's source.
    pub item: String,
    /// Free text (a category, a case number), if any.
    pub label: Option<String>,
}

/// A hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Index of the entry in the list.
    pub entry: usize,
    /// Distance to the nearest query hash.
    pub distance: u32,
    /// Which query hash (for PDQ: which dihedral variant of the image) was nearest.
    pub query: usize,
}

/// Most distance the multi-index search answers (beyond it: a scan).
pub const MIH_MAX_DISTANCE: u32 = 31;

/// Lists under this size are scanned.
const SCAN_BELOW: usize = 4096;

/// A list of hashes, indexed for search.
#[derive(Debug, Clone)]
pub struct HashList {
    entries: Vec<Entry>,
    /// Per chunk: entry indices sorted by the chunk's value, and where each value starts.
    index: Vec<(Vec<u32>, Vec<u32>)>,
}

impl HashList {
    /// A list of these entries, indexed.
    pub fn new(entries: Vec<Entry>) -> HashList {
        let index = if entries.len() >= SCAN_BELOW {
            (0..16)
                .map(|c| {
                    let mut counts = vec![0u32; 65_537];
                    for e in &entries {
                        counts[usize::from(e.hash.chunk(c)) + 1] += 1;
                    }
                    for v in 1..counts.len() {
                        counts[v] += counts[v - 1];
                    }
                    let mut fill = counts.clone();
                    let mut order = vec![0u32; entries.len()];
                    for (i, e) in entries.iter().enumerate() {
                        let slot = &mut fill[usize::from(e.hash.chunk(c))];
                        order[*slot as usize] = i as u32;
                        *slot += 1;
                    }
                    (order, counts)
                })
                .collect()
        } else {
            Vec::new()
        };
        HashList { entries, index }
    }

    /// Parse the list format (see the module docs); the error names the first bad line.
    pub fn parse(text: &str) -> Result<HashList, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(hash), Some(item)) = (fields.next(), fields.next()) else {
                return Err(format!(
                    "line {}: expected `<hash> <item id> [label]`",
                    n + 1
                ));
            };
            let hash = Hash256::from_hex(&hash.to_ascii_lowercase())
                .map_err(|e| format!("line {}: {e}", n + 1))?;
            let label: Vec<&str> = fields.collect();
            entries.push(Entry {
                hash,
                item: item.to_owned(),
                label: (!label.is_empty()).then(|| label.join(" ")),
            });
        }
        Ok(HashList::new(entries))
    }

    /// The entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry within `max_distance` of any of `queries` (for PDQ: the 8 dihedral
    /// hashes of an image), with its nearest query; ordered by distance, then entry.
    pub fn search(&self, queries: &[Hash256], max_distance: u32) -> Vec<Hit> {
        let mut best: HashMap<usize, Hit> = HashMap::new();
        let mut consider = |entry: usize, q: usize, query: &Hash256| {
            let d = self.entries[entry].hash.distance(query);
            if d <= max_distance {
                let hit = Hit {
                    entry,
                    distance: d,
                    query: q,
                };
                best.entry(entry)
                    .and_modify(|h| {
                        if (d, q) < (h.distance, h.query) {
                            *h = hit.clone();
                        }
                    })
                    .or_insert(hit);
            }
        };
        if self.index.is_empty() || max_distance > MIH_MAX_DISTANCE {
            for (q, query) in queries.iter().enumerate() {
                for e in 0..self.entries.len() {
                    consider(e, q, query);
                }
            }
        } else {
            // A candidate found in several buckets is checked again (4 popcounts, cheaper
            // than remembering it); the map keeps one hit per entry.
            for (q, query) in queries.iter().enumerate() {
                for (c, (order, starts)) in self.index.iter().enumerate() {
                    let v = query.chunk(c);
                    for flip in 0..=16u32 {
                        let probe = if flip == 16 { v } else { v ^ (1 << flip) };
                        let p = usize::from(probe);
                        for &e in &order[starts[p] as usize..starts[p + 1] as usize] {
                            consider(e as usize, q, query);
                        }
                    }
                }
            }
        }
        let mut hits: Vec<Hit> = best.into_values().collect();
        hits.sort_by_key(|h| (h.distance, h.entry));
        hits
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(words: [u64; 4]) -> Hash256 {
        Hash256 { words }
    }

    #[test]
    fn hex_is_the_pdq_format() {
        let x = Hash256::from_hex(&format!("8{}1", "0".repeat(62))).unwrap();
        assert_eq!(x.words, [1, 0, 0, 1 << 63]);
        assert_eq!(Hash256::from_hex(&x.to_hex()).unwrap(), x);
        assert!(Hash256::from_hex("12").is_err());
        assert!(Hash256::from_hex(&"z".repeat(64)).is_err());
    }

    #[test]
    fn lists_parse_with_comments_labels_and_line_numbers_in_errors() {
        let text = format!(
            "# known bad\n{} case-1 csam severe\n\n{}\tcase-2 # trailing comment\n",
            "f".repeat(64),
            "0".repeat(64)
        );
        let l = HashList::parse(&text).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l.entries()[0].label.as_deref(), Some("csam severe"));
        assert_eq!(l.entries()[1].item, "case-2");
        assert_eq!(l.entries()[1].label, None);
        let bad = format!("{} ok\nnot-a-hash item\n", "a".repeat(64));
        assert!(HashList::parse(&bad).unwrap_err().starts_with("line 2:"));
        assert!(HashList::parse(&"a".repeat(64))
            .unwrap_err()
            .starts_with("line 1:"));
    }

    fn rng_hash(seed: &mut u64) -> Hash256 {
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        h([next(), next(), next(), next()])
    }

    fn flip(mut x: Hash256, bits: &[usize]) -> Hash256 {
        for b in bits {
            x.words[b / 64] ^= 1 << (b % 64);
        }
        x
    }

    proptest! {
        /// The multi-index search finds exactly what a scan finds, with the same nearest
        /// query, on lists big enough to be indexed, for queries near listed hashes (bits
        /// flipped anywhere, including several in one chunk) and random ones.
        #[test]
        fn indexed_search_equals_a_scan(
            seed in 1u64..u64::MAX, extra in 0usize..500,
            flips in proptest::collection::vec(proptest::collection::vec(0usize..256, 0..40), 1..6),
            max_distance in 0u32..=31,
        ) {
            let mut s = seed;
            let entries: Vec<Entry> = (0..SCAN_BELOW + extra)
                .map(|i| Entry { hash: rng_hash(&mut s), item: format!("i{i}"), label: None })
                .collect();
            let indexed = HashList::new(entries.clone());
            prop_assert!(!indexed.index.is_empty());
            let mut queries: Vec<Hash256> = flips
                .iter()
                .enumerate()
                .map(|(k, f)| flip(entries[(k * 977 + extra) % entries.len()].hash, f))
                .collect();
            queries.push(rng_hash(&mut s));
            let got = indexed.search(&queries, max_distance);
            let scanned = HashList { entries: entries.clone(), index: Vec::new() };
            let want = scanned.search(&queries, max_distance);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_near_copy_is_found_and_its_nearest_variant_named() {
        let mut s = 7u64;
        let entries: Vec<Entry> = (0..10_000)
            .map(|i| Entry {
                hash: rng_hash(&mut s),
                item: format!("i{i}"),
                label: None,
            })
            .collect();
        let l = HashList::new(entries.clone());
        let target = entries[1234].hash;
        // 31 flipped bits spread so that every chunk but one differs in two bits.
        let bits: Vec<usize> = (0..15)
            .flat_map(|c| [16 * c, 16 * c + 1])
            .chain([250])
            .collect();
        let queries = [rng_hash(&mut s), flip(target, &bits)];
        let hits = l.search(&queries, 31);
        assert_eq!(
            hits,
            vec![Hit {
                entry: 1234,
                distance: 31,
                query: 1
            }]
        );
        assert!(l.search(&queries, 30).is_empty());
    }
}
