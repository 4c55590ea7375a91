//! Plane geometry of the DB text detector's post-processing, as OpenCV, Shapely and Clipper
//! compute it for PaddleOCR's reference code: convex hull, minimum-area rectangle
//! (`cv2.minAreaRect` + `cv2.boxPoints`), the corner order of `get_mini_boxes` and
//! `order_points_clockwise`, the round-joined polygon offset of Clipper (`unclip`), the mean
//! of a score map inside a filled quadrilateral (`box_score_fast`) and the perspective
//! transform that maps a box to an upright crop.

/// A point.
pub type Pt = [f64; 2];

fn cross(o: Pt, a: Pt, b: Pt) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Convex hull (Andrew's monotone chain), counter-clockwise in a y-up frame, no collinear
/// points.
pub fn convex_hull(points: &[Pt]) -> Vec<Pt> {
    let mut p: Vec<Pt> = points.to_vec();
    p.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let mut lower: Vec<Pt> = Vec::new();
    for &q in &p {
        while lower.len() >= 2 && cross(lower[lower.len() - 2], lower[lower.len() - 1], q) <= 0.0 {
            lower.pop();
        }
        lower.push(q);
    }
    let mut upper: Vec<Pt> = Vec::new();
    for &q in p.iter().rev() {
        while upper.len() >= 2 && cross(upper[upper.len() - 2], upper[upper.len() - 1], q) <= 0.0 {
            upper.pop();
        }
        upper.push(q);
    }
    lower.pop();
    upper.pop();
    lower.extend(upper);
    lower
}

/// The minimum-area enclosing rectangle of `points`: its four corners and its shorter side.
/// Degenerate inputs (one point, a segment) give a rectangle of zero width.
pub fn min_area_rect(points: &[Pt]) -> ([Pt; 4], f64) {
    let hull = convex_hull(points);
    if hull.is_empty() {
        return ([[0.0; 2]; 4], 0.0);
    }
    if hull.len() == 1 {
        return ([hull[0]; 4], 0.0);
    }
    let mut best: Option<(f64, [Pt; 4], f64)> = None;
    let n = hull.len();
    for i in 0..n {
        let (a, b) = (hull[i], hull[(i + 1) % n]);
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = (dx * dx + dy * dy).sqrt();
        if len == 0.0 {
            continue;
        }
        let (ux, uy) = (dx / len, dy / len);
        let (mut lo_u, mut hi_u, mut lo_v, mut hi_v) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in &hull {
            let (rx, ry) = (p[0] - a[0], p[1] - a[1]);
            let u = rx * ux + ry * uy;
            let v = -rx * uy + ry * ux;
            lo_u = lo_u.min(u);
            hi_u = hi_u.max(u);
            lo_v = lo_v.min(v);
            hi_v = hi_v.max(v);
        }
        let area = (hi_u - lo_u) * (hi_v - lo_v);
        if best.as_ref().is_none_or(|b| area < b.0 - 1e-9) {
            let at = |u: f64, v: f64| [a[0] + u * ux - v * uy, a[1] + u * uy + v * ux];
            let corners = [
                at(lo_u, lo_v),
                at(hi_u, lo_v),
                at(hi_u, hi_v),
                at(lo_u, hi_v),
            ];
            best = Some((area, corners, (hi_u - lo_u).min(hi_v - lo_v)));
        }
    }
    best.map_or(([hull[0]; 4], 0.0), |(_, c, s)| (c, s))
}

/// `get_mini_boxes`: the minimum-area rectangle of `points` with its corners in the order
/// PaddleOCR uses (top-left, top-right, bottom-right, bottom-left, by x then y), and its
/// shorter side.
pub fn mini_box(points: &[Pt]) -> ([Pt; 4], f64) {
    let (mut c, side) = min_area_rect(points);
    // OpenCV's box points are float32.
    for p in &mut c {
        *p = [f64::from(p[0] as f32), f64::from(p[1] as f32)];
    }
    c.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (i1, i4) = if c[1][1] > c[0][1] { (0, 1) } else { (1, 0) };
    let (i2, i3) = if c[3][1] > c[2][1] { (2, 3) } else { (3, 2) };
    ([c[i1], c[i2], c[i3], c[i4]], side)
}

/// Area and perimeter of a simple polygon.
pub fn area_and_length(poly: &[Pt]) -> (f64, f64) {
    let n = poly.len();
    let (mut a, mut l) = (0.0, 0.0);
    for i in 0..n {
        let (p, q) = (poly[i], poly[(i + 1) % n]);
        a += p[0] * q[1] - q[0] * p[1];
        l += ((q[0] - p[0]).powi(2) + (q[1] - p[1]).powi(2)).sqrt();
    }
    (a.abs() / 2.0, l)
}

/// Clipper's rounding of a coordinate.
fn round_half_away(x: f64) -> f64 {
    if x < 0.0 {
        (x - 0.5).trunc()
    } else {
        (x + 0.5).trunc()
    }
}

/// `unclip`: the polygon grown by `area × ratio / perimeter` with round joins, as
/// `pyclipper.PyclipperOffset` computes it (input coordinates truncated to integers, arc
/// tolerance 0.25, output points rounded to integers). Returns the offset polygon's points.
pub fn unclip(poly: &[Pt], ratio: f64) -> Vec<Pt> {
    let (area, length) = area_and_length(poly);
    if length == 0.0 {
        return poly.to_vec();
    }
    let delta = area * ratio / length;
    let pts: Vec<Pt> = poly.iter().map(|p| [p[0].trunc(), p[1].trunc()]).collect();
    let n = pts.len();
    // Outward normals: Clipper orients the outer path so that a positive delta grows it.
    let signed: f64 = (0..n)
        .map(|i| {
            let (p, q) = (pts[i], pts[(i + 1) % n]);
            p[0] * q[1] - q[0] * p[1]
        })
        .sum();
    let normal = |a: Pt, b: Pt| -> Pt {
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = (dx * dx + dy * dy).sqrt();
        if len == 0.0 {
            return [0.0, 0.0];
        }
        // Right-hand normal for a positively oriented path points outward in y-down pixels
        // when the signed area is negative; flip otherwise.
        if signed < 0.0 {
            [-dy / len, dx / len]
        } else {
            [dy / len, -dx / len]
        }
    };
    let normals: Vec<Pt> = (0..n).map(|i| normal(pts[i], pts[(i + 1) % n])).collect();
    let arc_tolerance = 0.25f64;
    let mut steps360 = std::f64::consts::PI / (1.0 - arc_tolerance / delta.abs()).acos();
    if steps360 > delta.abs() * std::f64::consts::PI {
        steps360 = delta.abs() * std::f64::consts::PI;
    }
    let (sin, cos) = (
        (2.0 * std::f64::consts::PI / steps360).sin(),
        (2.0 * std::f64::consts::PI / steps360).cos(),
    );
    let steps_per_rad = steps360 / (2.0 * std::f64::consts::PI);
    let mut out = Vec::new();
    for j in 0..n {
        let k = (j + n - 1) % n;
        let (nk, nj) = (normals[k], normals[j]);
        let p = pts[j];
        let sin_a = nk[0] * nj[1] - nj[0] * nk[1];
        let a = sin_a.atan2(nk[0] * nj[0] + nk[1] * nj[1]);
        let steps = (steps_per_rad * a.abs()).round().max(1.0) as usize;
        let (mut x, mut y) = (nk[0], nk[1]);
        // Rotate towards nj, the way the corner turns.
        let s = if a >= 0.0 { sin.abs() } else { -sin.abs() };
        for _ in 0..steps {
            out.push([
                round_half_away(p[0] + x * delta),
                round_half_away(p[1] + y * delta),
            ]);
            let x2 = x;
            x = x * cos - s * y;
            y = x2 * s + y * cos;
        }
        out.push([
            round_half_away(p[0] + nj[0] * delta),
            round_half_away(p[1] + nj[1] * delta),
        ]);
    }
    out
}

/// `order_points_clockwise`: top-left, top-right, bottom-right, bottom-left.
pub fn order_clockwise(pts: [Pt; 4]) -> [Pt; 4] {
    let mut by_x = pts;
    // numpy's argsort (quicksort; stable for 4 items, being an insertion sort there).
    by_x.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let mut left = [by_x[0], by_x[1]];
    let mut right = [by_x[2], by_x[3]];
    left.sort_by(|a, b| a[1].total_cmp(&b[1]));
    right.sort_by(|a, b| a[1].total_cmp(&b[1]));
    [left[0], right[0], right[1], left[1]]
}

/// Mean of `map` (row-major, `w` wide) over the pixels of the quadrilateral `quad` (filled,
/// edges included, as `cv2.fillPoly` + `cv2.mean` in `box_score_fast`).
pub fn mean_in_quad(map: &[f32], w: usize, h: usize, quad: &[Pt; 4]) -> f64 {
    let clampi = |v: f64, hi: usize| (v.max(0.0) as usize).min(hi.saturating_sub(1));
    let xmin = clampi(
        quad.iter().map(|p| p[0]).fold(f64::MAX, f64::min).floor(),
        w,
    );
    let xmax = clampi(quad.iter().map(|p| p[0]).fold(f64::MIN, f64::max).ceil(), w);
    let ymin = clampi(
        quad.iter().map(|p| p[1]).fold(f64::MAX, f64::min).floor(),
        h,
    );
    let ymax = clampi(quad.iter().map(|p| p[1]).fold(f64::MIN, f64::max).ceil(), h);
    // The polygon in the crop's frame, truncated to integers as `astype(np.int32)` does.
    let poly: Vec<Pt> = quad
        .iter()
        .map(|p| [(p[0] - xmin as f64).trunc(), (p[1] - ymin as f64).trunc()])
        .collect();
    let (mut sum, mut count) = (0.0f64, 0usize);
    for y in 0..=(ymax - ymin) {
        let yf = y as f64;
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for i in 0..4 {
            let (a, b) = (poly[i], poly[(i + 1) % 4]);
            let (y0, y1) = (a[1].min(b[1]), a[1].max(b[1]));
            if yf < y0 || yf > y1 {
                continue;
            }
            if a[1] == b[1] {
                lo = lo.min(a[0].min(b[0]));
                hi = hi.max(a[0].max(b[0]));
            } else {
                let x = a[0] + (yf - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        if lo > hi {
            continue;
        }
        let x0 = lo.round().max(0.0) as usize;
        let x1 = (hi.round().max(0.0) as usize).min(xmax - xmin);
        for x in x0..=x1 {
            sum += f64::from(map[(ymin + y) * w + xmin + x]);
            count += 1;
        }
    }
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

/// The 3×3 perspective transform that maps `src[i]` to `dst[i]` (`cv2.getPerspectiveTransform`).
pub fn perspective(src: &[Pt; 4], dst: &[Pt; 4]) -> Option<[f64; 9]> {
    let mut a = [[0.0f64; 9]; 8];
    for i in 0..4 {
        let ([x, y], [u, v]) = (src[i], dst[i]);
        a[i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
        a[i + 4] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
    }
    // Gaussian elimination with partial pivoting on the 8×8 system.
    for col in 0..8 {
        let piv = (col..8).max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        let pivot_row = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (v, p) in row.iter_mut().zip(pivot_row.iter()).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let h: Vec<f64> = (0..8).map(|i| a[i][8] / a[i][i]).collect();
    Some([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0])
}

/// Invert a 3×3 matrix.
pub fn invert3(m: &[f64; 9]) -> Option<[f64; 9]> {
    let det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
        + m[2] * (m[3] * m[7] - m[4] * m[6]);
    if det.abs() < 1e-15 {
        return None;
    }
    let d = 1.0 / det;
    Some([
        (m[4] * m[8] - m[5] * m[7]) * d,
        (m[2] * m[7] - m[1] * m[8]) * d,
        (m[1] * m[5] - m[2] * m[4]) * d,
        (m[5] * m[6] - m[3] * m[8]) * d,
        (m[0] * m[8] - m[2] * m[6]) * d,
        (m[2] * m[3] - m[0] * m[5]) * d,
        (m[3] * m[7] - m[4] * m[6]) * d,
        (m[1] * m[6] - m[0] * m[7]) * d,
        (m[0] * m[4] - m[1] * m[3]) * d,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_area_rect_of_a_tilted_rectangle_is_itself() {
        let c = 0.3f64.cos();
        let s = 0.3f64.sin();
        let rect: Vec<Pt> = [[0.0, 0.0], [40.0, 0.0], [40.0, 10.0], [0.0, 10.0]]
            .iter()
            .map(|p| [p[0] * c - p[1] * s + 5.0, p[0] * s + p[1] * c + 7.0])
            .collect();
        let mut cloud = rect.clone();
        cloud.push([20.0 * c - 5.0 * s + 5.0, 20.0 * s + 5.0 * c + 7.0]);
        let (box4, side) = min_area_rect(&cloud);
        assert!((side - 10.0).abs() < 1e-9, "{side}");
        for p in &rect {
            assert!(box4
                .iter()
                .any(|q| (q[0] - p[0]).abs() < 1e-9 && (q[1] - p[1]).abs() < 1e-9));
        }
    }

    #[test]
    fn unclip_grows_a_box_like_pyclipper() {
        // pyclipper 1.4 on [[0,0],[100,0],[100,30],[0,30]] with 16.0 reaches x 116, y 46.
        let grown = unclip(
            &[[0.0, 0.0], [100.0, 0.0], [100.0, 30.0], [0.0, 30.0]],
            16.0 / (3000.0 / 260.0),
        );
        let xs: Vec<f64> = grown.iter().map(|p| p[0]).collect();
        let ys: Vec<f64> = grown.iter().map(|p| p[1]).collect();
        assert_eq!(xs.iter().copied().fold(f64::MIN, f64::max), 116.0);
        assert_eq!(xs.iter().copied().fold(f64::MAX, f64::min), -16.0);
        assert_eq!(ys.iter().copied().fold(f64::MIN, f64::max), 46.0);
        assert!(
            grown.contains(&[110.0, -12.0]) && grown.contains(&[114.0, -8.0]),
            "{grown:?}"
        );
    }

    #[test]
    fn perspective_maps_corners() {
        let src = [[10.0, 5.0], [50.0, 8.0], [48.0, 30.0], [9.0, 27.0]];
        let dst = [[0.0, 0.0], [40.0, 0.0], [40.0, 22.0], [0.0, 22.0]];
        let m = perspective(&src, &dst).expect("solvable");
        for (s, d) in src.iter().zip(&dst) {
            let w = m[6] * s[0] + m[7] * s[1] + m[8];
            let u = (m[0] * s[0] + m[1] * s[1] + m[2]) / w;
            let v = (m[3] * s[0] + m[4] * s[1] + m[5]) / w;
            assert!((u - d[0]).abs() < 1e-9 && (v - d[1]).abs() < 1e-9);
        }
        let inv = invert3(&m).expect("invertible");
        let w = inv[6] * 40.0 + inv[7] * 22.0 + inv[8];
        assert!(((inv[0] * 40.0 + inv[1] * 22.0 + inv[2]) / w - 48.0).abs() < 1e-9);
    }
}
