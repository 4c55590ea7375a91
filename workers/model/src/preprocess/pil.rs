//! Pillow's own resampling arithmetic (`libImaging/Resample.c`), for the model packs whose
//! references preprocess with Pillow: the same filters, coefficients, fixed point and pass
//! order, so that a pack's input tensor is the reference's bit for bit.

use super::RgbImage;

/// `img.crop((left, top, left + width, top + height))` of an image that contains the box.
pub(crate) fn crop(
    img: &RgbImage,
    left: usize,
    top: usize,
    width: usize,
    height: usize,
) -> RgbImage {
    let w = img.width as usize;
    let mut data = Vec::with_capacity(width * height * 3);
    for y in top..top + height {
        let row = (y * w + left) * 3;
        data.extend_from_slice(&img.data[row..row + width * 3]);
    }
    RgbImage {
        width: width as u32,
        height: height as u32,
        data,
    }
}

/// Fixed-point precision of PIL's 8-bit resampling (`Resample.c`: 32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

/// PIL's resampling filters (`Resample.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `Image.BILINEAR`: the triangle, support 1.
    Bilinear,
    /// `Image.BICUBIC`: the cubic convolution with a = −0.5, support 2.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// PIL's resampling coefficients for one axis (`precompute_coeffs` then
/// `normalize_coeffs_8bpc`): for each output position, the first input index and the
/// fixed-point weights.
fn pil_coeffs(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| filter.weight((x as f64 - center + 0.5) * ss))
                .collect();
            let sum: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if sum != 0.0 { v / sum } else { v };
                    let f = v * f64::from(1u32 << PRECISION_BITS);
                    (if v < 0.0 { -0.5 + f } else { 0.5 + f }) as i32
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS) * 256 {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// `Image.resize((width, height), filter)` exactly as Pillow computes it: one pass
/// per axis, each rounding to 8 bits, in PIL's fixed point, in Pillow's order: horizontal
/// first, unless the height shrinks by more than twice as many pixels as the width
/// (`ImagingResampleInner` in Pillow 13's `Resample.c`; the other order differs by one level
/// on hundreds of pixels). The worker's general resize (`preprocess`)
/// stays within 1-2 levels of PIL; the packs' models are compared with their references
/// through Pillow's own arithmetic (open_nsfw's score moves by up to 2e-3 with ±1 level of
/// noise before its JPEG round trip).
pub(crate) fn resize(img: &RgbImage, width: usize, height: usize, filter: Filter) -> Vec<u8> {
    let (iw, ih) = (img.width as usize, img.height as usize);
    let shrink_h = ih as i64 - height as i64;
    let shrink_w = iw as i64 - width as i64;
    let vertical_first = shrink_h > 0 && shrink_h > 2 * shrink_w;
    if !vertical_first {
        let tmp = resample_axis(&img.data, iw, ih, width, true, filter);
        resample_axis(&tmp, width, ih, height, false, filter)
    } else {
        let tmp = resample_axis(&img.data, iw, ih, height, false, filter);
        resample_axis(&tmp, iw, height, width, true, filter)
    }
}

/// One PIL resampling pass of a `w`×`h` RGB image to `out` columns (`horizontal`) or rows;
/// the identity when the size does not change (Pillow skips the pass).
fn resample_axis(
    src: &[u8],
    w: usize,
    h: usize,
    out: usize,
    horizontal: bool,
    filter: Filter,
) -> Vec<u8> {
    let (len, others) = if horizontal { (w, h) } else { (h, w) };
    if len == out {
        return src.to_vec();
    }
    let coeffs = pil_coeffs(len, out, filter);
    let (ow, oh) = if horizontal { (out, h) } else { (w, out) };
    let mut dst = vec![0u8; ow * oh * 3];
    // Index of (along, across) in the source and the destination.
    let at = |along: usize, across: usize, width: usize| {
        if horizontal {
            (across * width + along) * 3
        } else {
            (along * width + across) * 3
        }
    };
    for across in 0..others {
        for (o, (first, k)) in coeffs.iter().enumerate() {
            for c in 0..3 {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (i, weight) in k.iter().enumerate() {
                    ss += i64::from(src[at(first + i, across, w) + c]) * i64::from(*weight);
                }
                dst[at(o, across, ow) + c] = clip8(ss);
            }
        }
    }
    dst
}
