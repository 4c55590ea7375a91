//! Loading a bundle: each part on the library its placement gives (`placement.rs`) with its
//! tokenizer and preprocessing slot, the fusion head, the tag table.

use std::path::Path;

use candle_core::{DType, Device};

use super::placement::{Placement, RuntimeOptions};
use super::{BlipPart, ClipPart, FusionModel, Scorer};
use crate::backend::onnx::{BlipTextDims, OnnxBlip, OnnxClip};
use crate::backend::{BlipBackend, CandleBlip, CandleDualEncoder, DualEncoderBackend};
use crate::bundle::{BundleManifest, TagSpec};
use crate::error::{ModelError, Result};
use crate::generate::GenerationParams;
use crate::models::blip::{BlipCaptioner, BlipConfig, BlipVqa};
use crate::models::clip::{ClipConfig, ClipModel};
use crate::models::fusion::{FusionConfig, FusionHead};
use crate::models::siglip::{SiglipConfig, SiglipModel};
use crate::nn;
use crate::preprocess::{ImageProcessorConfig, Preprocessor};
use crate::tags::{HeadDims, TagRule, TagTable};
use crate::tokenize::TextTokenizer;

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

/// Load the CLIP (or SigLIP) part with its tokenizer and preprocessing slot.
fn load_clip(dir: &Path, place: &Placement, pre: &mut Vec<Preprocessor>) -> Result<ClipPart> {
    let LoadedEncoder {
        engine,
        scorer,
        image_size,
        max_len,
        vocab_size,
        projection_dim,
        precision,
    } = load_dual_encoder(dir, place)?;
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_len)?;
    let pcfg = ImageProcessorConfig::from_file(&dir.join("preprocessor_config.json"))?;
    check_image_size(&pcfg, image_size, dir)?;
    Ok(ClipPart {
        engine,
        scorer,
        projection_dim,
        vocab_size,
        max_len,
        tokenizer,
        slot: slot_for(pre, pcfg),
        precision,
    })
}

/// Load a BLIP captioning (`vqa` false) or VQA part on the backend its placement gives.
fn load_blip(
    dir: &Path,
    vqa: bool,
    place: &Placement,
    pre: &mut Vec<Preprocessor>,
) -> Result<BlipPart> {
    let cfg = BlipConfig::from_file(&dir.join("config.json"))?;
    let tokenizer = TextTokenizer::from_file(
        &dir.join("tokenizer.json"),
        cfg.text_config.max_position_embeddings,
    )?;
    let pcfg = ImageProcessorConfig::from_file(&dir.join("preprocessor_config.json"))?;
    check_image_size(&pcfg, cfg.vision_config.image_size, dir)?;
    let slot = slot_for(pre, pcfg);
    let name = if vqa { "vqa" } else { "caption" };
    let t = &cfg.text_config;
    let (engine, precision): (Box<dyn BlipBackend>, String) =
        if let Some(o) = place.onnx_for(dir, name)? {
            let engine = OnnxBlip::load(dir, vqa, BlipTextDims::from(t), o)?;
            (Box::new(engine), o.precision.to_string())
        } else {
            let (device, dtype) = (&place.device, place.dtype);
            let vb = nn::load_weights(&dir.join("model.safetensors"), dtype, device)?;
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
        vision_hash: nn::weights_hash(&dir.join("model.safetensors"), "vision_model.")?,
        vision_hidden: cfg.vision_config.hidden_size,
        precision,
    })
}

/// Load the fusion head (always on candle); its width must be CLIP's projection.
fn load_fusion(dir: &Path, place: &Placement, clip: Option<&ClipPart>) -> Result<FusionHead> {
    let cfg = FusionConfig::from_file(&dir.join("config.json"))?;
    let vb = nn::load_weights(&dir.join("model.safetensors"), place.dtype, &place.device)?;
    let head = FusionHead::new(vb, &cfg)?;
    if clip.is_some_and(|c| c.projection_dim != head.embed_dim()) {
        return Err(ModelError::config(
            dir.join("config.json"),
            "fusion embed_dim differs from the CLIP projection_dim",
        ));
    }
    Ok(head)
}

fn slot_for(preprocessors: &mut Vec<Preprocessor>, cfg: ImageProcessorConfig) -> usize {
    if let Some(i) = preprocessors.iter().position(|p| *p.config() == cfg) {
        return i;
    }
    preprocessors.push(Preprocessor::new(cfg));
    preprocessors.len() - 1
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
        let clip = manifest
            .clip
            .as_ref()
            .map(|p| load_clip(&p.path, &place, &mut preprocessors))
            .transpose()?;
        let caption = manifest
            .caption
            .as_ref()
            .map(|p| load_blip(&p.path, false, &place, &mut preprocessors))
            .transpose()?;
        let vqa = manifest
            .vqa
            .as_ref()
            .map(|p| load_blip(&p.path, true, &place, &mut preprocessors))
            .transpose()?;
        let shared_vision = match (&caption, &vqa) {
            (Some(c), Some(v)) => c.slot == v.slot && c.vision_hash == v.vision_hash,
            _ => false,
        };
        let fusion = match &manifest.fusion {
            Some(part) => Some(load_fusion(&part.path, &place, clip.as_ref())?),
            None => None,
        };
        let eos = caption
            .as_ref()
            .map(|c| c.eos)
            .or(vqa.as_ref().map(|v| v.eos))
            .unwrap_or(0);
        let gen = opts.generation.as_ref().unwrap_or(&manifest.generation);
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
            photo: None,
            list_embeddings: false,
            photo_list_embeddings: false,
            photo_label_moderation: false,
            onnx_library: place.library.clone(),
        };
        if let Some(spec) = model.manifest.tags.clone() {
            model.tags = Some(model.build_tags(&spec)?);
        }
        Ok(model)
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
}
