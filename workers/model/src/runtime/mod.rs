//! The inference API: prepare inputs on any thread (decode, resize, tokenise), then run a
//! batch of prepared items through the bundle on the model thread.
//!
//! Items are routed to sub-batches by what they carry: images go to the vision towers,
//! texts to the text tower, questions to VQA, and a missing modality never pads or blocks
//! the others. Each item gets the outputs its modalities allow plus the list of requested
//! tasks that were skipped, with the reason.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`FusionModel`] and its parts, what a loaded bundle tells about itself, the warm-up |
//! | `placement.rs` | how a bundle is loaded ([`RuntimeOptions`]) and where each part runs ([`BackendChoice`]) |
//! | `load.rs` | [`FusionModel::load`]: each part, the fusion head, the tag table |
//! | `prepare.rs` | the CPU side: [`FusionModel::prepare_image`], `prepare_text`, `prepare_question`, [`FusionModel::prepare`] |
//! | `infer.rs` | the model thread's side: [`FusionModel::infer_batch`] (embed, fuse, describe, moderate, gather) |

use std::sync::Arc;

use candle_core::{DType, Device};
use serde::Serialize;

use crate::backend::{BackendKind, BlipBackend, DualEncoderBackend, InferOutput};
use crate::bundle::BundleManifest;
use crate::error::{ModelError, Result};
use crate::generate::GenerationParams;
use crate::models::fusion::FusionHead;
use crate::moderation::ModerationModels;
use crate::photo::PhotoPacks;
use crate::preprocess::{DecodeOptions, Preprocessor};
use crate::tags::{dot, TagTable};
use crate::tokenize::TextTokenizer;

pub use crate::tags::{Tag, TagSource};
pub use fusionstream_core::moderation::Signals;
pub use fusionstream_core::task::{SkipReason, Skipped, Task, TaskSet};
pub use placement::{BackendChoice, RuntimeOptions};

mod infer;
mod load;
mod placement;
mod prepare;

/// Which backend and precision run one part of a loaded bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartBackend {
    /// `clip`, `caption`, `vqa` or `fusion`.
    pub part: &'static str,
    /// The library.
    pub backend: BackendKind,
    /// `f32`/`f16`/`bf16` (candle) or `f32`/`int8`/`f16` (ONNX graphs).
    pub precision: String,
}

/// How label probabilities are scored from embeddings: CLIP's softmax over labels with its
/// temperature, SigLIP's independent sigmoids with scale and bias.
#[derive(Debug, Clone, Copy)]
enum Scorer {
    Softmax(f32),
    Sigmoid(f32, f32),
}

impl Scorer {
    fn label_probs(&self, e: &[f32], labels: &[Vec<f32>]) -> Vec<f32> {
        match *self {
            Scorer::Softmax(scale) => {
                let logits: Vec<f32> = labels.iter().map(|l| scale * dot(e, l)).collect();
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                exps.into_iter().map(|x| x / sum).collect()
            }
            Scorer::Sigmoid(scale, bias) => labels
                .iter()
                .map(|l| 1.0 / (1.0 + (-(scale * dot(e, l) + bias)).exp()))
                .collect(),
        }
    }
}

#[derive(Debug)]
struct ClipPart {
    engine: Box<dyn DualEncoderBackend>,
    scorer: Scorer,
    projection_dim: usize,
    /// The text encoder's vocabulary and positions.
    vocab_size: usize,
    max_len: usize,
    tokenizer: TextTokenizer,
    slot: usize,
    precision: String,
}

/// A BLIP captioning or VQA part.
#[derive(Debug)]
struct BlipPart {
    engine: Box<dyn BlipBackend>,
    tokenizer: TextTokenizer,
    slot: usize,
    eos: u32,
    /// SHA-256 of the vision tower's weights: equal hashes share one forward pass.
    vision_hash: [u8; 32],
    /// Width of the vision tower's states.
    vision_hidden: usize,
    precision: String,
}

/// A loaded bundle: the fusion model.
#[derive(Debug)]
pub struct FusionModel {
    manifest: BundleManifest,
    device: Device,
    dtype: DType,
    decode: DecodeOptions,
    preprocessors: Vec<Preprocessor>,
    clip: Option<ClipPart>,
    caption: Option<BlipPart>,
    vqa: Option<BlipPart>,
    /// The caption and VQA parts have the same vision tower (weights and preprocessing):
    /// an image needing both runs it once.
    shared_vision: bool,
    fusion: Option<FusionHead>,
    tags: Option<TagTable>,
    generation: GenerationParams,
    /// The packs behind the `moderate` task, when the worker serves it.
    moderation: Option<Arc<ModerationModels>>,
    /// The photo packs (ImageNet tags, photo embeddings), when the worker loads them.
    photo: Option<Arc<PhotoPacks>>,
    /// Whether `moderate` items also get the CLIP image embedding (for known-embedding
    /// lists), as [`InferOutput::list_embedding`].
    list_embeddings: bool,
    /// Whether `moderate` items also get the photo embedding (for known lists of photo
    /// embeddings), as [`InferOutput::list_photo_embedding`].
    photo_list_embeddings: bool,
    /// Whether `moderate` items also get the classifier pack's labels (a policy category
    /// names labels), as their signals' `image_labels`.
    photo_label_moderation: bool,
    /// The ONNX Runtime library the bundle's parts run on, and where it was found.
    onnx_library: Option<(std::path::PathBuf, crate::backend::onnx::LibrarySource)>,
}

impl FusionModel {
    /// Which backend and precision run each part.
    pub fn backends(&self) -> Vec<PartBackend> {
        let mut out = Vec::new();
        if let Some(c) = &self.clip {
            out.push(PartBackend {
                part: "clip",
                backend: c.engine.kind(),
                precision: c.precision.clone(),
            });
        }
        for (name, p) in [("caption", &self.caption), ("vqa", &self.vqa)] {
            if let Some(p) = p {
                out.push(PartBackend {
                    part: name,
                    backend: p.engine.kind(),
                    precision: p.precision.clone(),
                });
            }
        }
        if self.fusion.is_some() {
            out.push(PartBackend {
                part: "fusion",
                backend: BackendKind::Candle,
                precision: format!("{:?}", self.dtype).to_lowercase(),
            });
        }
        out
    }

    /// One line: `clip onnx/int8, caption onnx/int8, vqa onnx/int8, fusion candle/f32`.
    pub fn backend_summary(&self) -> String {
        let mut s: Vec<String> = self
            .backends()
            .iter()
            .map(|b| format!("{} {}/{}", b.part, b.backend, b.precision))
            .collect();
        if self.shared_vision {
            s.push("caption+vqa vision shared".into());
        }
        s.join(", ")
    }

    /// Whether the caption and VQA parts share one vision tower pass per image.
    pub fn shares_vision(&self) -> bool {
        self.shared_vision
    }

    /// The manifest the bundle was loaded from.
    pub fn manifest(&self) -> &BundleManifest {
        &self.manifest
    }

    /// Device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Generation settings in force.
    pub fn generation(&self) -> &GenerationParams {
        &self.generation
    }

    /// Change generation settings (e.g. beam width from the CLI).
    pub fn set_generation(&mut self, max_new_tokens: usize, num_beams: usize) {
        self.generation.max_new_tokens = max_new_tokens;
        self.generation.num_beams = num_beams.max(1);
    }

    /// Serve the `moderate` task with these models.
    pub fn with_moderation(mut self, models: Arc<ModerationModels>) -> Self {
        self.moderation = Some(models);
        self
    }

    /// Give `moderate` items the CLIP image embedding too (the worker matches it against
    /// lists of known embeddings), whether or not they ask for `embed`.
    pub fn with_list_embeddings(mut self, on: bool) -> Self {
        self.list_embeddings = on;
        self
    }

    /// The moderation models, when the worker serves `moderate`.
    pub fn moderation(&self) -> Option<&Arc<ModerationModels>> {
        self.moderation.as_ref()
    }

    /// Load the photo packs' outputs with the bundle's: ImageNet labels among an item's tags,
    /// the photo embedding on its embeddings record.
    pub fn with_photo_packs(mut self, packs: Arc<PhotoPacks>) -> Self {
        self.photo = Some(packs);
        self
    }

    /// The photo packs, when the worker loads them.
    pub fn photo_packs(&self) -> Option<&Arc<PhotoPacks>> {
        self.photo.as_ref()
    }

    /// Give `moderate` items the photo embedding too (the worker matches it against lists of
    /// known photo embeddings), whether or not they ask for `embed`.
    pub fn with_photo_list_embeddings(mut self, on: bool) -> Self {
        self.photo_list_embeddings = on;
        self
    }

    /// Give `moderate` items the classifier pack's labels as signals (the policy has a
    /// category of labels), whether or not they ask for `tag`.
    pub fn with_photo_label_moderation(mut self, on: bool) -> Self {
        self.photo_label_moderation = on;
        self
    }

    /// What the photo packs do for an item asking for `tasks`: the packs, whether it gets
    /// labels, whether it gets the photo embedding; `None` when they do nothing for it.
    pub fn photo_work(&self, tasks: TaskSet) -> Option<(&PhotoPacks, bool, bool)> {
        let p = self.photo.as_deref()?;
        let moderate = tasks.contains(Task::Moderate);
        let tag =
            p.tags() && (tasks.contains(Task::Tag) || (self.photo_label_moderation && moderate));
        let embed =
            p.embeds() && (tasks.contains(Task::Embed) || (self.photo_list_embeddings && moderate));
        (tag || embed).then_some((p, tag, embed))
    }

    /// The ONNX Runtime library the bundle runs on (`None`: candle alone), and where the
    /// lookup found it (configuration, environment, cache).
    pub fn onnx_library(
        &self,
    ) -> Option<&(std::path::PathBuf, crate::backend::onnx::LibrarySource)> {
        self.onnx_library.as_ref()
    }

    /// Run one synthetic item (a generated image, a text, a question, every task) through
    /// every part of the bundle and return its output. On a GPU the first use of each kernel
    /// compiles it (tens of seconds for candle's PTX): a worker calls this before it reports
    /// ready, so the first real batch does not pay for it.
    pub fn warm_up(&self) -> Result<InferOutput> {
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        });
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| ModelError::Input(format!("warm-up image: {e}")))?;
        // Every task the model serves: the bundle's, and `moderate` with its packs attached.
        let mut tasks = TaskSet::unnamed();
        if self.moderation.is_some() {
            tasks.insert(Task::Moderate);
        }
        let item = self.prepare(Some(&png), Some("warm up"), Some("what is this ?"), tasks)?;
        let mut out = self.infer_batch(std::slice::from_ref(&item))?;
        out.pop()
            .ok_or_else(|| ModelError::Input("warm-up batch returned nothing".into()))
    }
}
