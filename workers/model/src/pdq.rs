//! PDQ, Meta's perceptual image hash (the published algorithm of "The PDQ hashing algorithm",
//! 2017): luminance, a two-pass Jarosz (tent) filter and decimation to 64×64, the 16×16
//! low-frequency block of the 2D DCT, one bit per coefficient above their median; a quality
//! score from the 64×64 image's gradients; the hashes of the 8 rotations and flips (the
//! dihedral group) from one DCT, by sign and transpose rules.
//!
//! The arithmetic follows the reference implementation step by step (single-precision sums in
//! the same order, the same integer truncations), so hashes match the `pdqhash` package
//! (Python bindings of the reference C++) bit for bit on the same pixels (tested in
//! `tests/pdq.rs`). Luminance is computed in double precision then rounded to single, as that
//! package does before calling the reference code.
//!
//! A hash prints as 64 hex digits, the reference's format: its 16-bit words from the 16th to
//! the first, so that bit `k` (coefficient row `k / 16`, column `k % 16`) is bit `k` of the
//! 256-bit number.
//!
//! Long because the filter, the DCT, the quality score
//! and the dihedral rules are one algorithm whose arithmetic must stay in lockstep with the
//! reference's.

/// Smallest side hashed; smaller images get the zero hash and quality 0 (as the reference).
pub const MIN_SIDE: usize = 5;

/// The distance at or under which two hashes are the same image by the reference's
/// recommendation.
pub const MATCH_DISTANCE: u32 = 31;

/// A 256-bit PDQ hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PdqHash {
    /// Word `w` holds bits `16w .. 16w + 15`, bit `k` at `1 << (k % 16)`.
    pub words: [u16; 16],
}

impl PdqHash {
    /// Bit `k` (0–255).
    pub fn bit(&self, k: usize) -> bool {
        self.words[k / 16] >> (k % 16) & 1 == 1
    }

    fn set(&mut self, k: usize) {
        self.words[k / 16] |= 1 << (k % 16);
    }

    /// Bits that differ.
    pub fn distance(&self, other: &PdqHash) -> u32 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }

    /// The same bits as a [`fusionstream_core::hashlist::Hash256`] (for list search).
    pub fn to_hash256(&self) -> fusionstream_core::hashlist::Hash256 {
        let mut words = [0u64; 4];
        for (w, v) in self.words.iter().enumerate() {
            words[w / 4] |= u64::from(*v) << (16 * (w % 4));
        }
        fusionstream_core::hashlist::Hash256 { words }
    }

    /// 64 lower-case hex digits (the reference's format).
    pub fn to_hex(&self) -> String {
        self.words
            .iter()
            .rev()
            .map(|w| format!("{w:04x}"))
            .collect()
    }

    /// From 64 hex digits.
    pub fn from_hex(s: &str) -> Result<PdqHash, String> {
        let s = s.trim();
        if s.len() != 64 || !s.is_ascii() {
            return Err(format!("a PDQ hash is 64 hex digits, got {:?}", s));
        }
        let mut h = PdqHash::default();
        for (i, chunk) in s.as_bytes().chunks(4).enumerate() {
            let text = std::str::from_utf8(chunk).map_err(|e| e.to_string())?;
            h.words[15 - i] = u16::from_str_radix(text, 16).map_err(|e| format!("{s:?}: {e}"))?;
        }
        Ok(h)
    }
}

impl std::fmt::Display for PdqHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for PdqHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// A hash and its quality (0–100; the reference suggests ignoring hashes under 50 when
/// matching: flat or tiny images hash poorly). Serialises as `{"hash": hex, "quality": n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Pdq {
    /// The hash.
    pub hash: PdqHash,
    /// Gradient-based quality, 0–100.
    pub quality: u32,
}

/// The 8 dihedral variants, in the reference's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dihedral {
    /// Original, rotated 90°, 180°, 270°, flipped about X, about Y, about the main diagonal
    /// (`+1`), about the other diagonal (`-1`).
    pub hashes: [PdqHash; 8],
    /// Quality of the image.
    pub quality: u32,
}

/// Luminance of packed RGB pixels (`width × height × 3`, row-major), row-major.
pub fn luma_from_rgb(rgb: &[u8], width: usize, height: usize) -> Vec<f32> {
    rgb.chunks_exact(3)
        .take(width * height)
        .map(|p| {
            (f64::from(p[0]) * 0.299 + f64::from(p[1]) * 0.587 + f64::from(p[2]) * 0.114) as f32
        })
        .collect()
}

/// The PDQ hash of a decoded image.
pub fn hash_image(img: &crate::preprocess::RgbImage) -> Pdq {
    hash_rgb(&img.data, img.width as usize, img.height as usize)
}

/// The PDQ hash of packed RGB pixels.
pub fn hash_rgb(rgb: &[u8], width: usize, height: usize) -> Pdq {
    hash_luma(luma_from_rgb(rgb, width, height), height, width)
}

/// The PDQ hash of a luminance image (`rows × cols`, row-major; consumed as scratch space).
pub fn hash_luma(luma: Vec<f32>, rows: usize, cols: usize) -> Pdq {
    if rows < MIN_SIDE || cols < MIN_SIDE || luma.len() < rows * cols {
        return Pdq {
            hash: PdqHash::default(),
            quality: 0,
        };
    }
    // The reference hashes a 64×64 input as it is (no blur); its dihedral path always blurs.
    let (small, quality) = downsample(luma, rows, cols, rows == 64 && cols == 64);
    Pdq {
        hash: bits(&dct64_to_16(&small)),
        quality,
    }
}

/// The 8 dihedral hashes of packed RGB pixels.
pub fn dihedral_rgb(rgb: &[u8], width: usize, height: usize) -> Dihedral {
    let (rows, cols) = (height, width);
    let luma = luma_from_rgb(rgb, width, height);
    if rows < MIN_SIDE || cols < MIN_SIDE || luma.len() < rows * cols {
        return Dihedral {
            hashes: [PdqHash::default(); 8],
            quality: 0,
        };
    }
    let (small, quality) = downsample(luma, rows, cols, false);
    let d = dct64_to_16(&small);
    // Rotations and flips of the image are sign changes (odd frequencies) and transposes of
    // its DCT.
    let variant = |transpose: bool, negate: &dyn Fn(usize, usize) -> bool| {
        let mut out = [[0f32; 16]; 16];
        for (i, row) in d.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                let v = if negate(i, j) { -*v } else { *v };
                if transpose {
                    out[j][i] = v;
                } else {
                    out[i][j] = v;
                }
            }
        }
        bits(&out)
    };
    Dihedral {
        hashes: [
            bits(&d),
            variant(true, &|_, j| j & 1 == 0),
            variant(false, &|i, j| (i + j) & 1 == 1),
            variant(true, &|i, _| i & 1 == 0),
            variant(false, &|i, _| i & 1 == 0),
            variant(false, &|_, j| j & 1 == 0),
            variant(true, &|_, _| false),
            variant(true, &|i, j| (i + j) & 1 == 1),
        ],
        quality,
    }
}

/// Blur and decimate to 64×64 (unless `as_is`: already 64×64), and the quality score.
fn downsample(mut luma: Vec<f32>, rows: usize, cols: usize, as_is: bool) -> ([[f32; 64]; 64], u32) {
    let mut small = [[0f32; 64]; 64];
    if as_is {
        for (i, row) in small.iter_mut().enumerate() {
            row.copy_from_slice(&luma[i * 64..i * 64 + 64]);
        }
    } else {
        let along_rows = window(cols);
        let along_cols = window(rows);
        let mut scratch = vec![0f32; rows * cols];
        for _ in 0..2 {
            for r in 0..rows {
                box_1d(&luma, &mut scratch, r * cols, 1, cols, along_rows);
            }
            box_columns(&scratch, &mut luma, rows, cols, along_cols);
        }
        // Sample at the centres of the 64 target cells.
        for (oi, row) in small.iter_mut().enumerate() {
            let ii = ((oi as f64 + 0.5) * rows as f64 / 64.0) as usize;
            for (oj, v) in row.iter_mut().enumerate() {
                let ij = ((oj as f64 + 0.5) * cols as f64 / 64.0) as usize;
                *v = luma[ii * cols + ij];
            }
        }
    }
    (small, quality(&small))
}

/// Box window per pass: half of a target cell, rounded up (two passes make a tent).
fn window(old: usize) -> usize {
    old.div_ceil(2 * 64)
}

/// One box-filter pass over `n` values at `start`, `start + stride`, …: a centred running
/// mean whose window shrinks at the edges (the reference's four phases, same sums in the same
/// order).
fn box_1d(input: &[f32], out: &mut [f32], start: usize, stride: usize, n: usize, full: usize) {
    let half = (full + 2) / 2;
    let grow = half - 1;
    let first = full - half + 1;
    let steady = n.saturating_sub(full);
    let at = |k: usize| start + k * stride;
    let (mut left, mut right, mut o) = (0usize, 0usize, 0usize);
    let mut sum = 0f32;
    let mut size = 0u32;
    for _ in 0..grow.min(n) {
        sum += input[at(right)];
        size += 1;
        right += 1;
    }
    for _ in 0..first {
        if right >= n {
            break;
        }
        sum += input[at(right)];
        size += 1;
        out[at(o)] = sum / size as f32;
        right += 1;
        o += 1;
    }
    for _ in 0..steady {
        sum += input[at(right)];
        sum -= input[at(left)];
        out[at(o)] = sum / size as f32;
        left += 1;
        right += 1;
        o += 1;
    }
    for _ in 0..grow {
        if o >= n {
            break;
        }
        sum -= input[at(left)];
        size -= 1;
        out[at(o)] = sum / size as f32;
        left += 1;
        o += 1;
    }
}

/// [`box_1d`] down every column at once, sweeping rows (cache-friendly on large images): each
/// column still sees the same operations in the same order.
fn box_columns(input: &[f32], out: &mut [f32], rows: usize, cols: usize, full: usize) {
    let half = (full + 2) / 2;
    let grow = (half - 1).min(rows);
    let first = (full - half + 1).min(rows - grow);
    let steady = rows.saturating_sub(full);
    let row = |r: usize| r * cols..r * cols + cols;
    let mut sums = vec![0f32; cols];
    let (mut left, mut right, mut o) = (0usize, 0usize, 0usize);
    let mut size = 0u32;
    for _ in 0..grow {
        for (s, v) in sums.iter_mut().zip(&input[row(right)]) {
            *s += v;
        }
        size += 1;
        right += 1;
    }
    for _ in 0..first {
        size += 1;
        let n = size as f32;
        for ((s, v), d) in sums
            .iter_mut()
            .zip(&input[row(right)])
            .zip(&mut out[row(o)])
        {
            *s += v;
            *d = *s / n;
        }
        right += 1;
        o += 1;
    }
    for _ in 0..steady {
        let n = size as f32;
        let (add, sub) = (&input[row(right)], &input[row(left)]);
        for (((s, a), b), d) in sums.iter_mut().zip(add).zip(sub).zip(&mut out[row(o)]) {
            *s += a;
            *s -= b;
            *d = *s / n;
        }
        left += 1;
        right += 1;
        o += 1;
    }
    while o < rows && size > 1 {
        size -= 1;
        let n = size as f32;
        for ((s, v), d) in sums.iter_mut().zip(&input[row(left)]).zip(&mut out[row(o)]) {
            *s -= v;
            *d = *s / n;
        }
        left += 1;
        o += 1;
    }
}

/// The sum of quantised vertical and horizontal gradients, scaled to 0–100.
fn quality(a: &[[f32; 64]; 64]) -> u32 {
    let step = |u: f32, v: f32| (((u - v) * 100.0) / 255.0) as i32;
    let mut sum: i64 = 0;
    for pair in a.windows(2) {
        for (u, v) in pair[0].iter().zip(&pair[1]) {
            sum += i64::from(step(*u, *v).abs());
        }
    }
    for row in a {
        for p in row.windows(2) {
            sum += i64::from(step(p[0], p[1]).abs());
        }
    }
    u32::try_from((sum / 90).min(100)).unwrap_or(100)
}

/// Rows 1–16 of the 64-point DCT-II basis (row `i` is frequency `i + 1`), as the reference
/// builds it: a single-precision scale times a double-precision cosine, rounded to single.
fn dct_matrix() -> &'static [[f32; 64]; 16] {
    static M: std::sync::OnceLock<[[f32; 64]; 16]> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let scale = (2.0f64 / 64.0).sqrt() as f32;
        let mut m = [[0f32; 64]; 16];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let angle =
                    (std::f64::consts::PI / 2.0 / 64.0) * (i + 1) as f64 * (2 * j + 1) as f64;
                *v = (f64::from(scale) * angle.cos()) as f32;
            }
        }
        m
    })
}

/// The 16×16 block `D A Dᵀ` (single-precision sums over k in order, as the reference).
fn dct64_to_16(a: &[[f32; 64]; 64]) -> [[f32; 16]; 16] {
    let d = dct_matrix();
    let mut t = [[0f32; 64]; 16];
    for i in 0..16 {
        for j in 0..64 {
            let mut s = 0f32;
            for k in 0..64 {
                s += d[i][k] * a[k][j];
            }
            t[i][j] = s;
        }
    }
    let mut b = [[0f32; 16]; 16];
    for i in 0..16 {
        for j in 0..16 {
            let mut s = 0f32;
            for k in 0..64 {
                s += t[i][k] * d[j][k];
            }
            b[i][j] = s;
        }
    }
    b
}

/// One bit per coefficient: above the median (the 128th smallest of the 256).
fn bits(dct: &[[f32; 16]; 16]) -> PdqHash {
    let mut sorted: Vec<f32> = dct.iter().flatten().copied().collect();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[127];
    let mut h = PdqHash::default();
    for (k, v) in dct.iter().flatten().enumerate() {
        if *v > median {
            h.set(k);
        }
    }
    h
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_distance_counts_bits() {
        let mut h = PdqHash::default();
        h.set(0);
        h.set(255);
        h.set(17);
        let hex = h.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with('8') && hex.ends_with('1'), "{hex}");
        assert_eq!(PdqHash::from_hex(&hex).unwrap(), h);
        assert_eq!(h.distance(&PdqHash::default()), 3);
        assert!(PdqHash::from_hex("abc").is_err());
        assert_eq!(h.to_hash256().to_hex(), hex);
        assert!(PdqHash::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn tiny_and_flat_images_hash_to_nothing_useful() {
        assert_eq!(hash_rgb(&[0; 4 * 4 * 3], 4, 4).quality, 0);
        let flat = hash_rgb(&[128; 100 * 80 * 3], 100, 80);
        assert_eq!(flat.quality, 0);
    }

    #[test]
    fn the_box_filter_is_a_centred_running_mean() {
        let input: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mut out = vec![0f32; 16];
        box_1d(&input, &mut out, 0, 1, 16, 7);
        // The reference's worked example: window 7 on 0..15.
        let sums = [
            6, 10, 15, 21, 28, 35, 42, 49, 56, 63, 70, 77, 84, 75, 65, 54,
        ];
        let sizes = [4, 5, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 5, 4];
        for k in 0..16 {
            assert_eq!(out[k], sums[k] as f32 / sizes[k] as f32, "{k}");
        }
    }

    #[test]
    fn columns_at_once_are_the_columns_one_by_one() {
        for (rows, cols, full) in [(16, 3, 7), (16, 5, 8), (5, 2, 1), (130, 9, 2), (9, 4, 9)] {
            let input: Vec<f32> = (0..rows * cols)
                .map(|v| (v * 37 % 101) as f32 * 0.7)
                .collect();
            let mut one = vec![0f32; rows * cols];
            for c in 0..cols {
                box_1d(&input, &mut one, c, cols, rows, full);
            }
            let mut all = vec![0f32; rows * cols];
            box_columns(&input, &mut all, rows, cols, full);
            assert_eq!(one, all, "{rows}x{cols} window {full}");
        }
    }

    #[test]
    fn dihedral_variants_are_the_hashes_of_the_transformed_image() {
        // A 96×64 image with structure in both directions.
        let (w, h) = (96usize, 64usize);
        let px = |x: usize, y: usize| -> [u8; 3] {
            let v = ((x * 7 + y * y / 3) % 251) as u8;
            [v, v / 2, 255 - v]
        };
        let image: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| px(x, y)))
            .collect();
        let rotated: Vec<u8> = (0..w)
            .flat_map(|y| (0..h).flat_map(move |x| px(y, h - 1 - x)))
            .collect();
        let flipped: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| px(w - 1 - x, y)))
            .collect();
        let d = dihedral_rgb(&image, w, h);
        assert_eq!(d.hashes[0], hash_rgb(&image, w, h).hash);
        let r = hash_rgb(&rotated, h, w).hash;
        let f = hash_rgb(&flipped, w, h).hash;
        // Some rotation and some flip variant is within a few bits of the real one (the
        // decimation grid does not commute exactly with the transform).
        assert!(
            d.hashes[1..4].iter().any(|v| v.distance(&r) <= 16),
            "rotation"
        );
        assert!(d.hashes[4..].iter().any(|v| v.distance(&f) <= 16), "flip");
    }
}
