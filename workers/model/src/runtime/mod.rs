//! The inference API: prepare inputs on any thread (decode, resize, tokenise), then run a
//! batch of prepared items through the bundle on the model thread.
//!
//! Items are routed to sub-batches by what they carry: images go to the vision towers,
//! texts to the text tower, questions to VQA, and a missing modality never pads or blocks
//! the others. Each item gets the outputs its modalities allow plus the list of requested
//! tasks that were skipped, with the reason.
//!
//! Long (~1,170 lines) on purpose: loading (placement of each part on candle or ONNX
//! Runtime) and `infer_batch` (routing by modality, shared vision pass, fusion, tags) read as
//! one flow; a later split would move part loading into its own module.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::backend::onnx::{self, BlipTextDims, OnnxBlip, OnnxClip, OnnxOptions, Precision};
use crate::backend::{
    BackendKind, BlipBackend, CandleBlip, CandleDualEncoder, DualEncoderBackend, EncoderStates,
    PixelBatch,
};
use crate::bundle::{BundleManifest, GenerationSpec, TagSpec};
use crate::error::{ImageError, ModelError, Result};
use crate::generate::GenerationParams;
use crate::models::blip::{BlipCaptioner, BlipConfig, BlipVqa};
use crate::models::clip::{ClipConfig, ClipModel};
use crate::models::fusion::{FusionConfig, FusionHead};
use crate::models::siglip::{SiglipConfig, SiglipModel};
use crate::moderation::{ModerationInput, ModerationModels};
use crate::nn;
use crate::pdq::Pdq;
use crate::preprocess::{self, DecodeOptions, ImageProcessorConfig, Pixels, Preprocessor};
use crate::tags::{dot, HeadDims, TagFeatures, TagInput, TagRule, TagTable};
pub use crate::tags::{Tag, TagSource};
use crate::tokenize::{TextTokenizer, Tokens};
pub use fusionstream_core::moderation::Signals;
pub use fusionstream_core::task::{SkipReason, Skipped, Task, TaskSet};

/// Outputs for one item; fields that do not apply are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InferOutput {
    /// L2-normalised CLIP image embedding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_embedding: Option<Vec<f32>>,
    /// L2-normalised CLIP text embedding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_embedding: Option<Vec<f32>>,
    /// Gated fusion of the two (defined when either is present).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fused_embedding: Option<Vec<f32>>,
    /// Cosine similarity of image and text embeddings, in [-1, 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_score: Option<f32>,
    /// Generated caption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Generated answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Tags at or above the bundle's threshold, best first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    /// What the moderation models measured (the policy decides later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moderation: Option<Signals>,
    /// The image's PDQ hash (task `hash`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdq: Option<Pdq>,
    /// The CLIP image embedding of a `moderate` item, for known-embedding lists (see
    /// [`FusionModel::with_list_embeddings`]); not an output of its own.
    #[serde(skip)]
    pub list_embedding: Option<Vec<f32>>,
    /// Requested tasks that produced nothing, with reasons.
    pub skipped: Vec<Skipped>,
}

/// An image decoded once and preprocessed for every vision model of the bundle.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// One entry per distinct preprocessor of the bundle.
    pixels: Vec<Arc<Pixels>>,
}

impl PreparedImage {
    /// Pixels over every preprocessed copy (what the image costs a batch).
    pub fn pixel_count(&self) -> u64 {
        self.pixels
            .iter()
            .map(|p| (p.height * p.width) as u64)
            .sum()
    }
}

/// An item ready for the model thread: CPU work done.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The image, if the item has a usable one.
    pub image: Option<PreparedImage>,
    /// CLIP token ids of the text.
    pub text: Option<Vec<u32>>,
    /// VQA token ids of the question.
    pub question: Option<Vec<u32>>,
    /// Requested tasks.
    pub tasks: TaskSet,
    /// The moderation models' inputs, when the item asks for `moderate`.
    pub moderation: Option<ModerationInput>,
    /// The image's PDQ hash, computed while preprocessing, when the item asks for `hash`.
    pub pdq: Option<Pdq>,
}

/// How to load a bundle.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where the model runs.
    pub device: Device,
    /// Weight and activation dtype (f32 on CPU; f16/bf16 on GPU).
    pub dtype: DType,
    /// Image limits and JPEG DCT scaling.
    pub decode: DecodeOptions,
    /// Overrides the bundle's generation settings.
    pub generation: Option<GenerationSpec>,
    /// Which library runs the parts.
    pub backend: BackendChoice,
    /// ONNX Runtime settings (library, precision, threads, CUDA device).
    pub onnx: OnnxOptions,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            decode: DecodeOptions::default(),
            generation: None,
            backend: BackendChoice::Candle,
            onnx: OnnxOptions::default(),
        }
    }
}

/// Which library runs the bundle's parts (`model.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// ONNX Runtime for every part that has graphs of the asked precision when the library
    /// is configured (`model.onnxruntime_library` or `ORT_DYLIB_PATH`), candle otherwise.
    #[default]
    Auto,
    /// candle for every part.
    Candle,
    /// ONNX Runtime for every part but the fusion head; a part without graphs is an error.
    Onnx,
}

impl BackendChoice {
    /// Parse `auto`, `candle` or `onnx`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "candle" => Ok(Self::Candle),
            "onnx" => Ok(Self::Onnx),
            other => Err(ModelError::Unsupported(format!(
                "backend {other:?} (expected auto, candle or onnx)"
            ))),
        }
    }
}

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

/// Where the parts run and with what.
#[derive(Debug, Clone)]
struct Placement {
    device: Device,
    dtype: DType,
    /// `Some` when ONNX Runtime is loaded and asked for (`onnx`) or allowed (`auto`).
    onnx: Option<OnnxOptions>,
    /// `onnx` was asked for explicitly: a part without graphs is an error.
    require_onnx: bool,
}

impl Placement {
    fn new(opts: &RuntimeOptions) -> Result<Self> {
        let onnx = match opts.backend {
            BackendChoice::Candle => None,
            BackendChoice::Auto | BackendChoice::Onnx => match opts.onnx.library_path() {
                Some(lib) => {
                    onnx::load_library(&lib)?;
                    Some(opts.onnx.clone())
                }
                None if opts.backend == BackendChoice::Onnx => {
                    return Err(ModelError::OnnxRuntime(
                        "backend onnx needs the ONNX Runtime library: set \
                         model.onnxruntime_library or ORT_DYLIB_PATH (the onnxruntime wheel's \
                         onnxruntime/capi/libonnxruntime.so.*)"
                            .into(),
                    ))
                }
                None => None,
            },
        };
        if onnx.is_none() && opts.onnx.cuda_device.is_some() && opts.device.is_cpu() {
            return Err(ModelError::Unsupported(
                "CUDA was asked for the ONNX backend, but no part runs on ONNX Runtime".into(),
            ));
        }
        Ok(Self {
            device: opts.device.clone(),
            dtype: opts.dtype,
            onnx,
            require_onnx: opts.backend == BackendChoice::Onnx,
        })
    }

    /// The ONNX options if this part runs on ONNX Runtime.
    fn onnx_for(&self, part: &Path, name: &str) -> Result<Option<&OnnxOptions>> {
        let Some(o) = &self.onnx else {
            return Ok(None);
        };
        if onnx::has_graphs(part, o.precision) {
            Ok(Some(o))
        } else if self.require_onnx {
            Err(ModelError::config(
                part.join("onnx/manifest.json"),
                format!(
                    "the {name} part has no {} ONNX graphs (python -m models.export_onnx \
                     --model {}{})",
                    o.precision,
                    part.display(),
                    match o.precision {
                        Precision::Int8 => " --int8",
                        Precision::F16 => " --fp16",
                        Precision::F32 => "",
                    }
                ),
            ))
        } else {
            Ok(None)
        }
    }

    fn candle_precision(&self) -> String {
        format!("{:?}", self.dtype).to_lowercase()
    }
}

/// A dual encoder part as loaded, before its tokenizer and preprocessor.
struct LoadedEncoder {
    engine: Box<dyn DualEncoderBackend>,
    scorer: Scorer,
    image_size: usize,
    max_len: usize,
    vocab_size: usize,
    projection_dim: usize,
    precision: String,
}

/// Load the dual encoder of a part on the backend its placement gives.
fn load_dual_encoder(dir: &Path, place: &Placement) -> Result<LoadedEncoder> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        model_type: String,
    }
    let cfg_path = dir.join("config.json");
    let head: Head = nn::read_json(&cfg_path)?;
    let (device, dtype) = (&place.device, place.dtype);
    match head.model_type.as_str() {
        "siglip" => {
            if place.require_onnx {
                return Err(ModelError::Unsupported(format!(
                    "{}: SigLIP has no ONNX export; use model.backend = \"candle\" or \"auto\"",
                    dir.display()
                )));
            }
            let cfg = SiglipConfig::from_file(&cfg_path)?;
            let vb = nn::load_weights(&dir.join("model.safetensors"), dtype, device)?;
            let m = SiglipModel::new(vb, &cfg)?;
            let scorer = Scorer::Sigmoid(m.logit_scale, m.logit_bias);
            let proj = m.projection_dim();
            Ok(LoadedEncoder {
                engine: Box::new(CandleDualEncoder::Siglip(m, device.clone(), dtype)),
                scorer,
                image_size: cfg.vision_config.image_size,
                max_len: cfg.text_config.max_position_embeddings,
                vocab_size: cfg.text_config.vocab_size,
                projection_dim: proj,
                precision: place.candle_precision(),
            })
        }
        "clip" => {
            let cfg = ClipConfig::from_file(&cfg_path)?;
            let (image, text) = (
                cfg.vision_config.image_size,
                cfg.text_config.max_position_embeddings,
            );
            if let Some(o) = place.onnx_for(dir, "clip")? {
                let scale = read_scalar(&dir.join("model.safetensors"), "logit_scale")?.exp();
                let engine = OnnxClip::load(dir, cfg.text_config.eos_token_id, o)?;
                return Ok(LoadedEncoder {
                    engine: Box::new(engine),
                    scorer: Scorer::Softmax(scale),
                    image_size: image,
                    max_len: text,
                    vocab_size: cfg.text_config.vocab_size,
                    projection_dim: cfg.projection_dim,
                    precision: o.precision.to_string(),
                });
            }
            let vb = nn::load_weights(&dir.join("model.safetensors"), dtype, device)?;
            let m = ClipModel::new(vb, &cfg)?;
            let scorer = Scorer::Softmax(m.logit_scale);
            let proj = m.projection_dim();
            Ok(LoadedEncoder {
                engine: Box::new(CandleDualEncoder::Clip(m, device.clone(), dtype)),
                scorer,
                image_size: image,
                max_len: text,
                vocab_size: cfg.text_config.vocab_size,
                projection_dim: proj,
                precision: place.candle_precision(),
            })
        }
        other => Err(ModelError::config(
            cfg_path,
            format!("model_type {other:?} is not a dual encoder (clip, siglip)"),
        )),
    }
}

/// One scalar tensor of a safetensors file, as f32.
fn read_scalar(path: &Path, name: &str) -> Result<f32> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let t = tensors
        .get(name)
        .ok_or_else(|| ModelError::config(path, format!("no tensor {name}")))?;
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0])
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
    /// Whether `moderate` items also get the CLIP image embedding (for known-embedding
    /// lists), as [`InferOutput::list_embedding`].
    list_embeddings: bool,
}

fn slot_for(preprocessors: &mut Vec<Preprocessor>, cfg: ImageProcessorConfig) -> usize {
    if let Some(i) = preprocessors.iter().position(|p| *p.config() == cfg) {
        return i;
    }
    preprocessors.push(Preprocessor::new(cfg));
    preprocessors.len() - 1
}

impl FusionModel {
    /// Load a bundle directory (with `bundle.toml`) or a single HF model directory.
    pub fn load(dir: &Path, opts: &RuntimeOptions) -> Result<Self> {
        let manifest = BundleManifest::load(dir)?;
        let (device, dtype) = (opts.device.clone(), opts.dtype);
        if device.is_cpu() && dtype == DType::BF16 {
            return Err(ModelError::Unsupported(
                "bf16 on CPU (candle's CPU matmul has no bf16): use f32 or f16, or a GPU".into(),
            ));
        }
        let place = Placement::new(opts)?;
        let mut preprocessors = Vec::new();

        let clip = match &manifest.clip {
            Some(part) => {
                let LoadedEncoder {
                    engine,
                    scorer,
                    image_size,
                    max_len,
                    vocab_size,
                    projection_dim,
                    precision,
                } = load_dual_encoder(&part.path, &place)?;
                let tokenizer =
                    TextTokenizer::from_file(&part.path.join("tokenizer.json"), max_len)?;
                let pcfg =
                    ImageProcessorConfig::from_file(&part.path.join("preprocessor_config.json"))?;
                check_image_size(&pcfg, image_size, &part.path)?;
                Some(ClipPart {
                    engine,
                    scorer,
                    projection_dim,
                    vocab_size,
                    max_len,
                    tokenizer,
                    slot: slot_for(&mut preprocessors, pcfg),
                    precision,
                })
            }
            None => None,
        };
        let load_blip = |path: &Path, vqa: bool, pre: &mut Vec<Preprocessor>| -> Result<BlipPart> {
            let cfg = BlipConfig::from_file(&path.join("config.json"))?;
            let tokenizer = TextTokenizer::from_file(
                &path.join("tokenizer.json"),
                cfg.text_config.max_position_embeddings,
            )?;
            let pcfg = ImageProcessorConfig::from_file(&path.join("preprocessor_config.json"))?;
            check_image_size(&pcfg, cfg.vision_config.image_size, path)?;
            let slot = slot_for(pre, pcfg);
            let name = if vqa { "vqa" } else { "caption" };
            let t = &cfg.text_config;
            let (engine, precision): (Box<dyn BlipBackend>, String) =
                if let Some(o) = place.onnx_for(path, name)? {
                    let dims = BlipTextDims {
                        layers: t.num_hidden_layers,
                        heads: t.num_attention_heads,
                        hidden: t.hidden_size,
                        bos: t.bos_token_id,
                        pad: t.pad_token_id,
                    };
                    (
                        Box::new(OnnxBlip::load(path, vqa, dims, o)?),
                        o.precision.to_string(),
                    )
                } else {
                    let vb = nn::load_weights(&path.join("model.safetensors"), dtype, &device)?;
                    let engine = if vqa {
                        CandleBlip::Vqa(BlipVqa::new(vb, &cfg)?, device.clone(), dtype)
                    } else {
                        CandleBlip::Caption(BlipCaptioner::new(vb, &cfg)?, device.clone(), dtype)
                    };
                    (Box::new(engine), place.candle_precision())
                };
            Ok(BlipPart {
                engine,
                tokenizer,
                slot,
                eos: t.sep_token_id,
                vision_hash: nn::weights_hash(&path.join("model.safetensors"), "vision_model.")?,
                vision_hidden: cfg.vision_config.hidden_size,
                precision,
            })
        };
        let caption = manifest
            .caption
            .as_ref()
            .map(|p| load_blip(&p.path, false, &mut preprocessors))
            .transpose()?;
        let vqa = manifest
            .vqa
            .as_ref()
            .map(|p| load_blip(&p.path, true, &mut preprocessors))
            .transpose()?;
        let shared_vision = match (&caption, &vqa) {
            (Some(c), Some(v)) => c.slot == v.slot && c.vision_hash == v.vision_hash,
            _ => false,
        };
        let fusion = match &manifest.fusion {
            Some(part) => {
                let cfg = FusionConfig::from_file(&part.path.join("config.json"))?;
                let vb = nn::load_weights(&part.path.join("model.safetensors"), dtype, &device)?;
                Some(FusionHead::new(vb, &cfg)?)
            }
            None => None,
        };
        let gen = opts
            .generation
            .clone()
            .unwrap_or_else(|| manifest.generation.clone());
        let eos = caption
            .as_ref()
            .map(|c| c.eos)
            .or(vqa.as_ref().map(|v| v.eos))
            .unwrap_or(0);
        let mut model = Self {
            generation: GenerationParams {
                max_new_tokens: gen.max_new_tokens,
                num_beams: gen.num_beams.max(1),
                length_penalty: 1.0,
                eos_token_id: eos,
            },
            manifest,
            device,
            dtype,
            decode: opts.decode,
            preprocessors,
            clip,
            caption,
            vqa,
            shared_vision,
            fusion,
            tags: None,
            moderation: None,
            list_embeddings: false,
        };
        if let (Some(spec), Some(fusion)) = (&model.manifest.fusion, &model.fusion) {
            let want = model.clip.as_ref().map(|c| c.projection_dim);
            if want.is_some_and(|d| d != fusion.embed_dim()) {
                return Err(ModelError::config(
                    spec.path.join("config.json"),
                    "fusion embed_dim differs from the CLIP projection_dim",
                ));
            }
        }
        if let Some(spec) = model.manifest.tags.clone() {
            model.tags = Some(model.build_tags(&spec)?);
        }
        Ok(model)
    }

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

    fn build_tags(&self, spec: &TagSpec) -> Result<TagTable> {
        let clip = self
            .clip
            .as_ref()
            .ok_or_else(|| ModelError::Unsupported("tags need CLIP".into()))?;
        if spec.labels.is_empty() {
            return Err(ModelError::Unsupported("tags.labels is empty".into()));
        }
        let rule = match &spec.head {
            Some(head) => TagTable::load_head(
                head,
                &spec.labels,
                HeadDims {
                    embedding: clip.projection_dim,
                    caption_patch: self.caption.as_ref().map_or(0, |c| c.vision_hidden),
                    vocab: clip.vocab_size,
                    positions: clip.max_len,
                },
            )?,
            None => {
                let ids = spec
                    .labels
                    .iter()
                    .map(|l| clip.tokenizer.encode(&spec.template.replace("{}", l)))
                    .collect::<Result<Vec<_>>>()?;
                TagRule::Prompts {
                    embeddings: clip.engine.text_embeddings(&ids)?,
                    threshold: spec.threshold,
                }
            }
        };
        Ok(TagTable {
            labels: spec.labels.clone(),
            rule,
        })
    }

    /// Bytes of one image's preprocessed pixels, over every vision preprocessor of the
    /// bundle (f32, three channels, at each model's input size): what a prepared image
    /// holds while it waits for the model.
    pub fn prepared_image_bytes(&self) -> u64 {
        self.preprocessors
            .iter()
            .map(|p| {
                // Every vision model takes a square input (checked at load).
                let s = match p.config().crop {
                    Some((h, w)) => h.max(w),
                    None => {
                        let (h, w) = p.config().resized_size(1, 1);
                        h.max(w)
                    }
                };
                12 * u64::from(s) * u64::from(s)
            })
            .sum()
    }

    /// Decode an image once and preprocess it for every vision model of the bundle.
    pub fn prepare_image(&self, bytes: &[u8]) -> Result<PreparedImage, ImageError> {
        // The largest size any vision model needs after its resize, per axis.
        let need = |h: u32, w: u32| {
            self.preprocessors
                .iter()
                .map(|p| p.config().resized_size(h, w))
                .fold((1, 1), |a, b| (a.0.max(b.0), a.1.max(b.1)))
        };
        let rgb = preprocess::decode_for(bytes, &self.decode, Some(&need))?;
        self.prepare_decoded(&rgb)
    }

    /// Preprocess an image decoded elsewhere (the moderation packs' decoder, shared by every
    /// model of the event) for every vision model of the bundle.
    pub fn prepare_decoded(&self, rgb: &preprocess::RgbImage) -> Result<PreparedImage, ImageError> {
        let pixels = self
            .preprocessors
            .iter()
            .map(|p| p.apply(rgb).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreparedImage { pixels })
    }

    /// CLIP token ids of a text (`None` when the bundle has no text encoder).
    pub fn prepare_text(&self, text: &str) -> Result<Option<Vec<u32>>> {
        Ok(self.tokenize_text(text)?.map(|t| t.ids))
    }

    /// CLIP tokens of a text, saying whether it was cut to the model's positions.
    pub fn tokenize_text(&self, text: &str) -> Result<Option<Tokens>> {
        self.clip
            .as_ref()
            .map(|c| c.tokenizer.encode_cut(text))
            .transpose()
    }

    /// VQA token ids of a question (`None` when the bundle has no VQA model).
    pub fn prepare_question(&self, question: &str) -> Result<Option<Vec<u32>>> {
        Ok(self.tokenize_question(question)?.map(|t| t.ids))
    }

    /// VQA tokens of a question, saying whether it was cut to the model's positions.
    pub fn tokenize_question(&self, question: &str) -> Result<Option<Tokens>> {
        self.vqa
            .as_ref()
            .map(|v| v.tokenizer.encode_cut(question))
            .transpose()
    }

    /// How images are decoded (limits, DCT scaling).
    pub fn decode_options(&self) -> &DecodeOptions {
        &self.decode
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

    /// Prepare a whole item; an unusable image is an error here (the pipeline degrades
    /// instead by preparing without it).
    pub fn prepare(
        &self,
        image: Option<&[u8]>,
        text: Option<&str>,
        question: Option<&str>,
        tasks: TaskSet,
    ) -> Result<Prepared> {
        let text_ids = match text {
            Some(t) => self.prepare_text(t)?,
            None => None,
        };
        let question_ids = match question {
            Some(q) => self.prepare_question(q)?,
            None => None,
        };
        let moderate = self.moderation.is_some() && tasks.contains(Task::Moderate);
        let (image, moderation, pdq) = if moderate || tasks.contains(Task::Hash) {
            // One decode, as Pillow decodes (the packs' and PDQ's reference pixels), for
            // every model.
            let limits = &self.decode.limits;
            let rgb = image
                .map(|b| match (&self.moderation, moderate) {
                    (Some(m), true) => m.decode(b, limits),
                    _ => crate::preprocess::decode_like_pillow(b, limits),
                })
                .transpose()?;
            let moderation = match (&self.moderation, moderate) {
                (Some(m), true) => Some(m.prepare(rgb.as_ref().map(Ok), text)?),
                _ => None,
            };
            (
                rgb.as_ref().map(|r| self.prepare_decoded(r)).transpose()?,
                moderation,
                rgb.as_ref()
                    .filter(|_| tasks.contains(Task::Hash))
                    .map(crate::pdq::hash_image),
            )
        } else {
            (
                image.map(|b| self.prepare_image(b)).transpose()?,
                None,
                None,
            )
        };
        Ok(Prepared {
            image,
            text: text_ids,
            question: question_ids,
            tasks,
            moderation,
            pdq,
        })
    }

    fn stack(&self, items: &[&Prepared], slot: usize) -> Result<PixelBatch> {
        let mut data = Vec::new();
        let (mut h, mut w) = (0, 0);
        for it in items {
            let img = it
                .image
                .as_ref()
                .ok_or_else(|| ModelError::Input("item has no image".into()))?;
            let px = &img.pixels[slot];
            h = px.height;
            w = px.width;
            data.extend_from_slice(&px.data);
        }
        Ok(PixelBatch {
            data,
            n: items.len(),
            height: h,
            width: w,
        })
    }

    /// Generate for every row of `states` (VQA: with its question) and decode the new tokens.
    fn generate_texts(
        &self,
        part: &BlipPart,
        states: &EncoderStates,
        questions: Option<&[Vec<u32>]>,
    ) -> Result<Vec<String>> {
        let params = GenerationParams {
            eos_token_id: part.eos,
            ..self.generation.clone()
        };
        let seqs = part.engine.generate(states, questions, &params)?;
        // Every sequence starts with the one-token prompt (BOS).
        seqs.iter()
            .map(|s| part.tokenizer.decode(s.get(1..).unwrap_or(&[])))
            .collect()
    }

    /// Run a batch. The output has one entry per item, in order.
    pub fn infer_batch(&self, items: &[Prepared]) -> Result<Vec<InferOutput>> {
        let n = items.len();
        let mut out = vec![InferOutput::default(); n];
        let wants = |it: &Prepared, ts: &[Task]| ts.iter().any(|t| it.tasks.contains(*t));
        let encoder_tasks = [Task::Embed, Task::Match];
        let wants_list_embedding =
            |it: &Prepared| self.list_embeddings && it.tasks.contains(Task::Moderate);
        // What the tag rule reads: an item with an image is tagged from it, a text-only item
        // from its text.
        let tag_reads = |it: &Prepared, source: TagSource, features: TagFeatures| {
            let from = if it.image.is_some() {
                TagSource::Image
            } else {
                TagSource::Text
            };
            it.tasks.contains(Task::Tag)
                && from == source
                && self
                    .tags
                    .as_ref()
                    .is_some_and(|t| t.features(source) == features)
        };

        // CLIP image and text embeddings: two independent sub-batches.
        let mut img_emb: Vec<Option<Vec<f32>>> = vec![None; n];
        let mut txt_emb: Vec<Option<Vec<f32>>> = vec![None; n];
        if let Some(clip) = &self.clip {
            let rows: Vec<usize> = (0..n)
                .filter(|&i| {
                    items[i].image.is_some()
                        && (wants(&items[i], &encoder_tasks)
                            || wants_list_embedding(&items[i])
                            || tag_reads(&items[i], TagSource::Image, TagFeatures::Embedding))
                })
                .collect();
            if !rows.is_empty() {
                let batch: Vec<&Prepared> = rows.iter().map(|&i| &items[i]).collect();
                let px = self.stack(&batch, clip.slot)?;
                for (i, e) in rows.iter().zip(clip.engine.image_embeddings(&px)?) {
                    img_emb[*i] = Some(e);
                }
            }
            let rows: Vec<usize> = (0..n)
                .filter(|&i| {
                    items[i].text.is_some()
                        && (wants(&items[i], &encoder_tasks)
                            || tag_reads(&items[i], TagSource::Text, TagFeatures::Embedding))
                })
                .collect();
            if !rows.is_empty() {
                let ids: Vec<Vec<u32>> =
                    rows.iter().filter_map(|&i| items[i].text.clone()).collect();
                for (i, e) in rows.iter().zip(clip.engine.text_embeddings(&ids)?) {
                    txt_emb[*i] = Some(e);
                }
            }
        }

        // Fusion: one sub-batch over every item that has either embedding.
        let mut fused: Vec<Option<Vec<f32>>> = vec![None; n];
        if let Some(head) = &self.fusion {
            let rows: Vec<usize> = (0..n)
                .filter(|&i| {
                    items[i].tasks.contains(Task::Embed)
                        && (img_emb[i].is_some() || txt_emb[i].is_some())
                })
                .collect();
            if !rows.is_empty() {
                let d = head.embed_dim();
                let (mut im, mut tx, mut imm, mut txm) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for &i in &rows {
                    let zeros = vec![0f32; d];
                    im.extend_from_slice(img_emb[i].as_deref().unwrap_or(&zeros));
                    tx.extend_from_slice(txt_emb[i].as_deref().unwrap_or(&zeros));
                    imm.push(if img_emb[i].is_some() { 1f32 } else { 0.0 });
                    txm.push(if txt_emb[i].is_some() { 1f32 } else { 0.0 });
                }
                let r = rows.len();
                let t = |v: Vec<f32>, shape: &[usize]| -> Result<Tensor> {
                    Ok(Tensor::from_vec(v, shape, &self.device)?.to_dtype(self.dtype)?)
                };
                let f = head.forward(
                    &t(im, &[r, d])?,
                    &t(tx, &[r, d])?,
                    &t(imm, &[r])?,
                    &t(txm, &[r])?,
                )?;
                for (i, e) in rows.iter().zip(f.to_dtype(DType::F32)?.to_vec2::<f32>()?) {
                    fused[*i] = Some(e);
                }
            }
        }

        // Captions and answers: one sub-batch of images each; when both parts have the same
        // vision tower, one pass over the images either needs. The captioner's vision pass
        // also serves the image tags of a head on its patch states.
        let cap_rows: Vec<usize> = match &self.caption {
            Some(_) => (0..n)
                .filter(|&i| items[i].image.is_some() && items[i].tasks.contains(Task::Caption))
                .collect(),
            None => Vec::new(),
        };
        let patch_tag_rows: Vec<usize> = match &self.caption {
            Some(_) => (0..n)
                .filter(|&i| tag_reads(&items[i], TagSource::Image, TagFeatures::CaptionPatches))
                .collect(),
            None => Vec::new(),
        };
        let mut cap_vision_rows: Vec<usize> =
            cap_rows.iter().chain(&patch_tag_rows).copied().collect();
        cap_vision_rows.sort_unstable();
        cap_vision_rows.dedup();
        let vqa_rows: Vec<usize> = match &self.vqa {
            Some(_) => (0..n)
                .filter(|&i| {
                    items[i].image.is_some()
                        && items[i].question.is_some()
                        && items[i].tasks.contains(Task::Answer)
                })
                .collect(),
            None => Vec::new(),
        };
        let (cap_states, vqa_states) = self.vision_states(items, &cap_vision_rows, &vqa_rows)?;
        // The patch-tagged items' states on the host, (rows of cap_vision_rows, S, D).
        let patch_states = match (&cap_states, patch_tag_rows.is_empty()) {
            (Some(states), false) => Some(states.to_host()?),
            _ => None,
        };
        let mut captions: Vec<Option<String>> = vec![None; n];
        if let (Some(cap), Some(states), false) = (&self.caption, &cap_states, cap_rows.is_empty())
        {
            let picked;
            let states = if cap_rows.len() == cap_vision_rows.len() {
                states
            } else {
                picked = rows_of(states, &cap_vision_rows, &cap_rows)?;
                &picked
            };
            let texts = self.generate_texts(cap, states, None)?;
            for (i, t) in cap_rows.iter().zip(texts) {
                captions[*i] = Some(t);
            }
        }
        let mut answers: Vec<Option<String>> = vec![None; n];
        if let (Some(vqa), Some(states)) = (&self.vqa, vqa_states) {
            let qs: Vec<Vec<u32>> = vqa_rows
                .iter()
                .filter_map(|&i| items[i].question.clone())
                .collect();
            let texts = self.generate_texts(vqa, &states, Some(&qs))?;
            for (i, t) in vqa_rows.iter().zip(texts) {
                answers[*i] = Some(t);
            }
        }

        // Moderation: the packs' own batches over the items that ask for it.
        let mut moderation: Vec<Option<Signals>> = vec![None; n];
        if let Some(m) = &self.moderation {
            let rows: Vec<usize> = (0..n)
                .filter(|&i| items[i].tasks.contains(Task::Moderate))
                .filter(|&i| items[i].moderation.is_some())
                .collect();
            let inputs: Vec<&ModerationInput> = rows
                .iter()
                .filter_map(|&i| items[i].moderation.as_ref())
                .collect();
            if !inputs.is_empty() {
                for (&i, s) in rows.iter().zip(m.signals(&inputs)?) {
                    moderation[i] = Some(s);
                }
            }
        }

        for (i, (item, o)) in items.iter().zip(out.iter_mut()).enumerate() {
            let has_img = item.image.is_some();
            let has_txt = item.text.is_some();
            let mut skip = |task, reason| o.skipped.push(Skipped { task, reason });
            let has_q = item.question.is_some();
            for task in item.tasks.iter() {
                let model_present = match task {
                    Task::Embed | Task::Match => self.clip.is_some(),
                    Task::Caption => self.caption.is_some(),
                    Task::Answer => self.vqa.is_some(),
                    Task::Tag => self.tags.is_some(),
                    Task::Moderate => self.moderation.is_some(),
                    Task::Hash => true,
                };
                if !model_present {
                    skip(task, SkipReason::ModelAbsent);
                } else if let Some(reason) = task.missing_input(has_img, has_txt, has_q) {
                    skip(task, reason);
                }
            }
            if item.tasks.contains(Task::Hash) {
                o.pdq = item.pdq;
            }
            if item.tasks.contains(Task::Match) {
                if let (Some(a), Some(b)) = (&img_emb[i], &txt_emb[i]) {
                    o.match_score = Some(dot(a, b));
                }
            }
            if item.tasks.contains(Task::Tag) {
                if let (Some(table), Some(clip)) = (&self.tags, &self.clip) {
                    let scorer = clip.scorer;
                    let source = if has_img {
                        TagSource::Image
                    } else {
                        TagSource::Text
                    };
                    let input = match (source, table.features(source)) {
                        (TagSource::Image, TagFeatures::CaptionPatches) => {
                            // This item's patch states, the CLS state left out.
                            patch_states.as_ref().and_then(|(data, [_, s, d])| {
                                let at = cap_vision_rows.binary_search(&i).ok()?;
                                Some(TagInput::Rows {
                                    data: &data[at * s * d + d..(at + 1) * s * d],
                                    dim: *d,
                                })
                            })
                        }
                        (TagSource::Text, TagFeatures::Tokens) => {
                            item.text.as_deref().map(TagInput::Tokens)
                        }
                        (TagSource::Image, _) => img_emb[i].as_deref().map(TagInput::Embedding),
                        (TagSource::Text, _) => txt_emb[i].as_deref().map(TagInput::Embedding),
                    };
                    if let Some(input) = input {
                        o.tags =
                            table.tags(input, source, |e, labels| scorer.label_probs(e, labels));
                    }
                }
            }
            if wants_list_embedding(item) {
                o.list_embedding = img_emb[i].clone();
            }
            if item.tasks.contains(Task::Embed) {
                o.image_embedding = img_emb[i].take();
                o.text_embedding = txt_emb[i].take();
                o.fused_embedding = fused[i].take();
                if self.fusion.is_none()
                    && (o.image_embedding.is_some() || o.text_embedding.is_some())
                {
                    o.skipped.push(Skipped {
                        task: Task::Embed,
                        reason: SkipReason::ModelAbsent,
                    });
                }
            }
            o.caption = captions[i].take();
            o.answer = answers[i].take();
            o.moderation = moderation[i].take();
        }
        Ok(out)
    }

    /// Vision states of the caption rows and of the VQA rows (`None` where there are none).
    fn vision_states(
        &self,
        items: &[Prepared],
        cap_rows: &[usize],
        vqa_rows: &[usize],
    ) -> Result<(Option<EncoderStates>, Option<EncoderStates>)> {
        let run = |part: &BlipPart, rows: &[usize]| -> Result<Option<EncoderStates>> {
            if rows.is_empty() {
                return Ok(None);
            }
            let batch: Vec<&Prepared> = rows.iter().map(|&i| &items[i]).collect();
            Ok(Some(
                part.engine.image_states(&self.stack(&batch, part.slot)?)?,
            ))
        };
        match (&self.caption, &self.vqa) {
            (Some(cap), Some(_))
                if self.shared_vision && !cap_rows.is_empty() && !vqa_rows.is_empty() =>
            {
                let mut union: Vec<usize> = cap_rows.iter().chain(vqa_rows).copied().collect();
                union.sort_unstable();
                union.dedup();
                let Some(all) = run(cap, &union)? else {
                    return Ok((None, None));
                };
                Ok((
                    Some(rows_of(&all, &union, cap_rows)?),
                    Some(rows_of(&all, &union, vqa_rows)?),
                ))
            }
            (cap, vqa) => Ok((
                cap.as_ref()
                    .map(|c| run(c, cap_rows))
                    .transpose()?
                    .flatten(),
                vqa.as_ref()
                    .map(|v| run(v, vqa_rows))
                    .transpose()?
                    .flatten(),
            )),
        }
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

/// The states of `rows` (item indices) out of `states`, whose rows are the items of `union`
/// (sorted; `rows` a subset of it).
fn rows_of(states: &EncoderStates, union: &[usize], rows: &[usize]) -> Result<EncoderStates> {
    let at: Vec<usize> = rows
        .iter()
        .filter_map(|r| union.binary_search(r).ok())
        .collect();
    states.select(&at)
}

fn check_image_size(p: &ImageProcessorConfig, size: usize, dir: &Path) -> Result<()> {
    let (h, w) = p.output_size(size as u32, size as u32);
    if (h as usize, w as usize) != (size, size) {
        return Err(ModelError::config(
            dir.join("preprocessor_config.json"),
            format!("produces {h}x{w} pixels but the model expects {size}x{size}"),
        ));
    }
    Ok(())
}
