//! The raster operations of PaddleOCR's reference pipeline, as OpenCV does them on 8-bit
//! BGR images: bilinear resize (`cv2.resize`, `INTER_LINEAR`, OpenCV's fixed-point
//! coefficients), perspective warp with bicubic interpolation and replicated borders
//! (`cv2.warpPerspective`, `INTER_CUBIC`, `BORDER_REPLICATE`), rotations, black letterbox
//! padding, the 2×2 dilation of the text mask and its 8-connected regions.

/// An 8-bit, 3-channel image, row-major (BGR in this module's use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Img {
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
    /// `h × w × 3` bytes.
    pub data: Vec<u8>,
}

impl Img {
    /// A pixel (clamped to the image: replicated borders).
    fn at(&self, x: isize, y: isize) -> [u8; 3] {
        let x = x.clamp(0, self.w as isize - 1) as usize;
        let y = y.clamp(0, self.h as isize - 1) as usize;
        let i = (y * self.w + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// OpenCV's `INTER_RESIZE_COEF_BITS`.
const COEF_SCALE: f32 = 2048.0;

/// Per destination index: the first source index and the two fixed-point weights, as
/// OpenCV's `resize` computes them for `INTER_LINEAR`.
fn linear_taps(src: usize, dst: usize) -> Vec<(usize, [i32; 2])> {
    let scale = (src as f64 / dst as f64) as f32;
    (0..dst)
        .map(|d| {
            let f = (d as f32 + 0.5) * scale - 0.5;
            let mut s = f.floor() as isize;
            let mut frac = f - s as f32;
            if s < 0 {
                frac = 0.0;
                s = 0;
            }
            if s as usize + 1 >= src {
                frac = 0.0;
                s = (src - 1) as isize;
            }
            let a1 = (frac * COEF_SCALE).round() as i32;
            let a0 = (COEF_SCALE as i32) - a1;
            (s as usize, [a0, a1])
        })
        .collect()
}

/// `cv2.resize(img, (w, h))` with bilinear interpolation.
pub fn resize_linear(img: &Img, w: usize, h: usize) -> Img {
    let (xs, ys) = (linear_taps(img.w, w), linear_taps(img.h, h));
    let row = |y: usize| -> Vec<i32> {
        let mut out = Vec::with_capacity(w * 3);
        let base = y * img.w * 3;
        for &(sx, [a0, a1]) in &xs {
            let sx1 = (sx + 1).min(img.w - 1);
            for c in 0..3 {
                let p0 = i32::from(img.data[base + sx * 3 + c]);
                let p1 = i32::from(img.data[base + sx1 * 3 + c]);
                out.push(p0 * a0 + p1 * a1);
            }
        }
        out
    };
    let mut data = Vec::with_capacity(w * h * 3);
    for &(sy, [b0, b1]) in &ys {
        let r0 = row(sy);
        let r1 = row((sy + 1).min(img.h - 1));
        for (v0, v1) in r0.iter().zip(&r1) {
            let v =
                (i64::from(*v0) * i64::from(b0) + i64::from(*v1) * i64::from(b1) + (1 << 21)) >> 22;
            data.push(v.clamp(0, 255) as u8);
        }
    }
    Img { w, h, data }
}

/// OpenCV's bicubic kernel (A = −0.75) at fraction `x`.
fn cubic(x: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    [c0, c1, c2, 1.0 - c0 - c1 - c2]
}

/// `cv2.warpPerspective(img, M, (w, h), flags=INTER_CUBIC, borderMode=BORDER_REPLICATE)`,
/// given `inv`, the map from destination to source pixels. Source positions are quantised to
/// 1/32 pixel as OpenCV's remap tables are.
pub fn warp_perspective_cubic(img: &Img, inv: &[f64; 9], w: usize, h: usize) -> Img {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f64, y as f64);
            let wz = inv[6] * xf + inv[7] * yf + inv[8];
            let wz = if wz == 0.0 { 0.0 } else { 32.0 / wz };
            let sx = ((inv[0] * xf + inv[1] * yf + inv[2]) * wz).round() as i64;
            let sy = ((inv[3] * xf + inv[4] * yf + inv[5]) * wz).round() as i64;
            let (ix, iy) = (sx >> 5, sy >> 5);
            let (kx, ky) = (
                cubic((sx & 31) as f64 / 32.0),
                cubic((sy & 31) as f64 / 32.0),
            );
            let mut acc = [0.0f64; 3];
            for (j, wy) in ky.iter().enumerate() {
                for (i, wx) in kx.iter().enumerate() {
                    let p = img.at(ix as isize + i as isize - 1, iy as isize + j as isize - 1);
                    for c in 0..3 {
                        acc[c] += wy * wx * f64::from(p[c]);
                    }
                }
            }
            for v in acc {
                data.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    Img { w, h, data }
}

/// `np.rot90(img)`: a quarter turn counter-clockwise.
pub fn rot90_ccw(img: &Img) -> Img {
    let (w, h) = (img.h, img.w);
    let mut data = Vec::with_capacity(img.data.len());
    for y in 0..h {
        for x in 0..w {
            // out[y][x] = in[x][W_in - 1 - y]
            let i = (x * img.w + (img.w - 1 - y)) * 3;
            data.extend_from_slice(&img.data[i..i + 3]);
        }
    }
    Img { w, h, data }
}

/// `cv2.rotate(img, ROTATE_180)`.
pub fn rotate180(img: &Img) -> Img {
    let mut data = Vec::with_capacity(img.data.len());
    for px in img.data.chunks_exact(3).rev() {
        data.extend_from_slice(px);
    }
    Img {
        w: img.w,
        h: img.h,
        data,
    }
}

/// Black rows above and below (`cv2.copyMakeBorder` with `BORDER_CONSTANT`, value 0).
pub fn pad_vertical(img: &Img, pad: usize) -> Img {
    let mut data = vec![0u8; pad * img.w * 3];
    data.extend_from_slice(&img.data);
    data.resize(data.len() + pad * img.w * 3, 0);
    Img {
        w: img.w,
        h: img.h + 2 * pad,
        data,
    }
}

/// `cv2.dilate(mask, ones((2, 2)))`: a pixel is set when it or its left, upper or
/// upper-left neighbour is.
pub fn dilate2x2(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let at = |dx: usize, dy: usize| x >= dx && y >= dy && mask[(y - dy) * w + (x - dx)];
            out[y * w + x] = at(0, 0) || at(1, 0) || at(0, 1) || at(1, 1);
        }
    }
    out
}

/// The 8-connected regions of `mask` in raster order of their first pixel, each as the
/// pixels on its border (the points `cv2.findContours` traces; their convex hull is the
/// region's). At most `max` regions.
pub fn regions(mask: &[bool], w: usize, h: usize, max: usize) -> Vec<Vec<[f64; 2]>> {
    let mut label = vec![u32::MAX; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !mask[start] || label[start] != u32::MAX {
            continue;
        }
        if out.len() >= max {
            break;
        }
        let id = out.len() as u32;
        let mut border = Vec::new();
        label[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = ((i % w) as isize, (i / w) as isize);
            let mut inner = true;
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    if dx == 0 && dy == 0 {
                        continue;
                    }
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                        inner = false;
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if !mask[j] {
                        inner = false;
                        continue;
                    }
                    if label[j] == u32::MAX {
                        label[j] = id;
                        stack.push(j);
                    }
                }
            }
            if !inner {
                border.push([x as f64, y as f64]);
            }
        }
        out.push(border);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: usize, h: usize, f: impl Fn(usize, usize) -> u8) -> Img {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let v = f(x, y);
                data.extend_from_slice(&[v, v / 2, 255 - v]);
            }
        }
        Img { w, h, data }
    }

    #[test]
    fn resize_to_the_same_size_is_the_identity_and_halving_averages() {
        let a = img(7, 5, |x, y| (x * 30 + y * 7) as u8);
        assert_eq!(resize_linear(&a, 7, 5), a);
        let b = img(4, 2, |x, _| if x % 2 == 0 { 0 } else { 200 });
        let half = resize_linear(&b, 2, 1);
        assert_eq!(half.data[0], 100);
    }

    #[test]
    fn rotations_compose() {
        let a = img(5, 3, |x, y| (x * 40 + y) as u8);
        let four = rot90_ccw(&rot90_ccw(&rot90_ccw(&rot90_ccw(&a))));
        assert_eq!(four, a);
        assert_eq!(rot90_ccw(&rot90_ccw(&a)), rotate180(&a));
    }

    #[test]
    fn regions_are_eight_connected() {
        // Two diagonal pixels touch; a third pixel stands apart.
        let (w, h) = (5, 4);
        let mut m = vec![false; w * h];
        m[0] = true;
        m[w + 1] = true;
        m[3 * w + 4] = true;
        let r = regions(&m, w, h, 10);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].len(), 2);
        assert_eq!(regions(&m, w, h, 1).len(), 1);
        let d = dilate2x2(&m, w, h);
        assert!(d[1] && d[w] && d[w + 2] && !d[2 * w]);
    }
}
