//! The `[preprocessing]` of the image packs that run on candle (`image_classifier`,
//! `image_embedding`): an optional centre crop of the shorter side, a resize with Pillow's
//! own arithmetic, then `(v / divide − mean) / std` per channel in f32, CHW — the steps of the
//! packs' references (torchvision's `ToTensor` + `Normalize`, TensorFlow's `(v − 127) / 128`),
//! so that the input tensor is the reference's bit for bit.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::preprocess::{pil, RgbImage};

/// The manifest's `[preprocessing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    /// Centre crop before the resize, `[numerator, denominator]` of the shorter side: a square
    /// of `⌊min(h, w) · n / d⌋` pixels, offset `⌊(h − side + 1) / 2⌋` (TensorFlow's
    /// `_decode_and_center_crop`, `[224, 256]` for a 224 model). Absent: no crop.
    #[serde(default)]
    pub centre_crop: Option<[u32; 2]>,
    /// Resize target `[width, height]` (aspect ratio not kept).
    pub resize: [u32; 2],
    /// Pillow's filter: `"bilinear"` or `"bicubic"`.
    pub filter: String,
    /// Divisor of the 0–255 values before the normalisation (255 for `ToTensor`, 1 for none).
    pub divide: f32,
    /// Per-channel mean (R, G, B), subtracted after the division.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B).
    pub std: [f32; 3],
}

impl ImageInput {
    /// Check the settings (the pack's manifest `path` named in errors).
    pub(crate) fn validate(&self, path: &std::path::Path) -> Result<()> {
        self.pil_filter(path)?;
        let [w, h] = self.resize;
        if w == 0 || h == 0 || self.divide <= 0.0 || self.std.iter().any(|s| *s <= 0.0) {
            return Err(ModelError::config(
                path,
                "resize, divide and std must be positive",
            ));
        }
        if let Some([n, d]) = self.centre_crop {
            if n == 0 || n > d {
                return Err(ModelError::config(
                    path,
                    "centre_crop must be n/d with 0 < n <= d",
                ));
            }
        }
        Ok(())
    }

    fn pil_filter(&self, path: &std::path::Path) -> Result<pil::Filter> {
        match self.filter.as_str() {
            "bilinear" => Ok(pil::Filter::Bilinear),
            "bicubic" => Ok(pil::Filter::Bicubic),
            other => Err(ModelError::config(
                path,
                format!("filter {other:?} (bilinear or bicubic)"),
            )),
        }
    }

    /// Values per prepared image (3 × height × width).
    pub fn len(&self) -> usize {
        3 * self.resize[0] as usize * self.resize[1] as usize
    }

    /// Always false: an input has three channels of a non-empty size.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The model input of a decoded image: CHW f32.
    pub fn prepare(&self, img: &RgbImage) -> Vec<f32> {
        let filter = self
            .pil_filter(std::path::Path::new("pack.toml"))
            .unwrap_or(pil::Filter::Bilinear);
        let cropped;
        let src = match self.centre_crop {
            Some([n, d]) => {
                let (h, w) = (img.height as u64, img.width as u64);
                let side = (h.min(w) * u64::from(n) / u64::from(d)).max(1);
                let top = (h - side).div_ceil(2).min(h - side);
                let left = (w - side).div_ceil(2).min(w - side);
                let side = side as usize;
                cropped = pil::crop(img, left as usize, top as usize, side, side);
                &cropped
            }
            None => img,
        };
        let [w, h] = self.resize;
        let (w, h) = (w as usize, h as usize);
        let resized = pil::resize(src, w, h, filter);
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 / self.divide - self.mean[c]) / self.std[c];
            }
        }
        let plane = w * h;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in resized.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = lut[c][px[c] as usize];
            }
        }
        out
    }

    /// Prepared images as one (N, 3, H, W) batch.
    pub(crate) fn batch<T: AsRef<[f32]>>(&self, prepared: &[T], device: &Device) -> Result<Tensor> {
        let n = self.len();
        let mut flat = Vec::with_capacity(prepared.len() * n);
        for p in prepared {
            let p = p.as_ref();
            if p.len() != n {
                return Err(ModelError::Input(format!(
                    "{} values for an image pack input of {n}",
                    p.len()
                )));
            }
            flat.extend_from_slice(p);
        }
        let [w, h] = self.resize;
        Ok(Tensor::from_vec(
            flat,
            (prepared.len(), 3, h as usize, w as usize),
            device,
        )?)
    }
}
