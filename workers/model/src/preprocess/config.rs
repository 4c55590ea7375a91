//! `preprocessor_config.json`: the Hugging Face image processor settings.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::nn;

/// `size` / `crop_size` as HF writes them: a number or a dict.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Int(u32),
    Dict {
        shortest_edge: Option<u32>,
        height: Option<u32>,
        width: Option<u32>,
    },
}

/// Target of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    /// Scale so the shorter side has this length, keeping the aspect ratio (CLIP).
    ShortestEdge(u32),
    /// Exactly this height and width (BLIP).
    Exact {
        /// Output height.
        height: u32,
        /// Output width.
        width: u32,
    },
}

/// Resampling filter (PIL numbering, as HF stores `resample`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// PIL `NEAREST` (0).
    Nearest,
    /// PIL `BILINEAR` (2).
    Bilinear,
    /// PIL `BICUBIC` (3): Catmull-Rom with PIL's antialiasing support.
    Bicubic,
    /// PIL `LANCZOS` (1).
    Lanczos,
}

#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(default = "yes")]
    do_resize: bool,
    size: Option<RawSize>,
    #[serde(default = "bicubic")]
    resample: u32,
    #[serde(default)]
    do_center_crop: bool,
    crop_size: Option<RawSize>,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "inv255")]
    rescale_factor: f64,
    #[serde(default = "yes")]
    do_normalize: bool,
    image_mean: Option<Vec<f32>>,
    image_std: Option<Vec<f32>>,
    #[serde(default)]
    image_processor_type: String,
}

fn yes() -> bool {
    true
}
fn bicubic() -> u32 {
    3
}
fn inv255() -> f64 {
    1.0 / 255.0
}

/// Parsed and validated image processor settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    /// Resize target, `None` when `do_resize` is false.
    pub resize: Option<ResizeTarget>,
    /// Resampling filter of the resize.
    pub resample: Resample,
    /// Centre crop (height, width), if any.
    pub crop: Option<(u32, u32)>,
    /// Multiplier applied to 0..255 values (`None`: no rescale).
    pub rescale: Option<f64>,
    /// Per-channel (mean, std) normalisation.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

impl ImageProcessorConfig {
    /// Read `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw: Raw = nn::read_json(path)?;
        Self::from_raw(raw).map_err(|reason| ModelError::config(path, reason))
    }

    /// Parse from JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: Raw = serde_json::from_str(text).map_err(|e| ModelError::config("<json>", e))?;
        Self::from_raw(raw).map_err(|reason| ModelError::config("<json>", reason))
    }

    fn from_raw(raw: Raw) -> std::result::Result<Self, String> {
        // CLIP-like processors read a bare number as the shortest edge, others as a square.
        let keeps_aspect = raw.image_processor_type.starts_with("CLIP")
            || raw.image_processor_type.starts_with("Chinese");
        let resize = if raw.do_resize {
            Some(match raw.size {
                Some(RawSize::Int(s)) if keeps_aspect => ResizeTarget::ShortestEdge(s),
                Some(RawSize::Int(s)) => ResizeTarget::Exact {
                    height: s,
                    width: s,
                },
                Some(RawSize::Dict {
                    shortest_edge: Some(s),
                    ..
                }) => ResizeTarget::ShortestEdge(s),
                Some(RawSize::Dict {
                    height: Some(height),
                    width: Some(width),
                    ..
                }) => ResizeTarget::Exact { height, width },
                Some(RawSize::Dict { .. }) => {
                    return Err("size needs shortest_edge or height and width".into())
                }
                None => return Err("do_resize is set but size is missing".into()),
            })
        } else {
            None
        };
        let resample = match raw.resample {
            0 => Resample::Nearest,
            1 => Resample::Lanczos,
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            other => return Err(format!("unsupported resample {other}")),
        };
        let crop = if raw.do_center_crop {
            Some(match raw.crop_size {
                Some(RawSize::Int(s)) => (s, s),
                Some(RawSize::Dict {
                    height: Some(h),
                    width: Some(w),
                    ..
                }) => (h, w),
                _ => {
                    return Err(
                        "do_center_crop is set but crop_size has no height and width".into(),
                    )
                }
            })
        } else {
            None
        };
        let three = |v: Option<Vec<f32>>, default: [f32; 3], name: &str| match v {
            None => Ok(default),
            Some(v) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
            Some(v) if v.len() == 1 => Ok([v[0]; 3]),
            Some(v) => Err(format!("{name} needs 3 values, got {}", v.len())),
        };
        let normalize = if raw.do_normalize {
            let mean = three(raw.image_mean, CLIP_MEAN, "image_mean")?;
            let std = three(raw.image_std, CLIP_STD, "image_std")?;
            if std.iter().any(|&s| s <= 0.0) {
                return Err("image_std must be positive".into());
            }
            Some((mean, std))
        } else {
            None
        };
        Ok(Self {
            resize,
            resample,
            crop,
            rescale: raw.do_rescale.then_some(raw.rescale_factor),
            normalize,
        })
    }

    /// Output (height, width) for an input of (height, width), as transformers computes it.
    pub fn output_size(&self, height: u32, width: u32) -> (u32, u32) {
        let resized = self.resized_size(height, width);
        self.crop.unwrap_or(resized)
    }

    /// Size after the resize step (before the crop).
    pub fn resized_size(&self, height: u32, width: u32) -> (u32, u32) {
        match self.resize {
            None => (height, width),
            Some(ResizeTarget::Exact { height, width }) => (height, width),
            Some(ResizeTarget::ShortestEdge(s)) => {
                // transformers' get_resize_output_image_size(default_to_square=False):
                // the long side is int(s * long / short), truncated.
                let (short, long) = if height <= width {
                    (height, width)
                } else {
                    (width, height)
                };
                let new_long = ((s as u64 * long as u64) / short.max(1) as u64) as u32;
                if height <= width {
                    (s, new_long)
                } else {
                    (new_long, s)
                }
            }
        }
    }
}
