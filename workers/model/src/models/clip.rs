//! CLIP dual encoder, following transformers' `CLIPModel`
//! (`transformers/models/clip/modeling_clip.py`, v5.17).
//!
//! Differences from candle-transformers' CLIP, each a bug there for serving:
//! - the text transformer takes a padding mask, so a batch of texts of different lengths gives
//!   the same embeddings as one text at a time;
//! - the pooled text state is taken at the first EOS token (or at the highest id for legacy
//!   configs whose `eos_token_id` is 2, exactly as transformers does), gathered in one op;
//! - the config is parsed from HF `config.json` with transformers' defaults;
//! - q/k/v projections are fused into one matmul.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Conv2dConfig, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::nn::{self, Activation, PreNormBlock};

/// `text_config` of a CLIP `config.json` (defaults: transformers' `CLIPTextConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
            pad_token_id: 1,
        }
    }
}

/// `vision_config` of a CLIP `config.json` (defaults: transformers' `CLIPVisionConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// A CLIP `config.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipConfig {
    pub text_config: ClipTextConfig,
    pub vision_config: ClipVisionConfig,
    pub projection_dim: usize,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            text_config: ClipTextConfig::default(),
            vision_config: ClipVisionConfig::default(),
            projection_dim: 512,
        }
    }
}

impl ClipConfig {
    /// Read `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        nn::read_json(path)
    }
}

/// CLIP text tower (`text_model`).
#[derive(Debug, Clone)]
pub struct ClipTextTransformer {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<PreNormBlock>,
    final_layer_norm: LayerNorm,
    eos_token_id: u32,
    max_positions: usize,
}

impl ClipTextTransformer {
    /// Load from `vb` at `text_model`.
    pub fn new(vb: VarBuilder<'_>, c: &ClipTextConfig) -> Result<Self> {
        let act = Activation::parse(&c.hidden_act)?;
        let emb = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                PreNormBlock::load_separate_qkv(
                    vb.pp("encoder").pp("layers").pp(i),
                    c.hidden_size,
                    c.intermediate_size,
                    c.num_attention_heads,
                    act,
                    c.layer_norm_eps,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: candle_nn::embedding(
                c.vocab_size,
                c.hidden_size,
                emb.pp("token_embedding"),
            )?,
            position_embedding: emb
                .pp("position_embedding")
                .get((c.max_position_embeddings, c.hidden_size), "weight")?,
            layers,
            final_layer_norm: candle_nn::layer_norm(
                c.hidden_size,
                c.layer_norm_eps,
                vb.pp("final_layer_norm"),
            )?,
            eos_token_id: c.eos_token_id,
            max_positions: c.max_position_embeddings,
        })
    }

    /// Longest sequence the position table allows.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Pooled (pre-projection) states for a batch of token sequences of any lengths.
    pub fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let b = ids.len();
        let t = ids.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 || t == 0 {
            return Err(ModelError::Input("empty text batch".into()));
        }
        if t > self.max_positions {
            return Err(ModelError::Input(format!(
                "text of {t} tokens exceeds the model limit of {}",
                self.max_positions
            )));
        }
        let mut flat = vec![0u32; b * t];
        let mut pool = Vec::with_capacity(b);
        for (row, seq) in ids.iter().enumerate() {
            flat[row * t..row * t + seq.len()].copy_from_slice(seq);
            let pos = if self.eos_token_id == 2 {
                // Legacy configs: transformers takes argmax of the ids (first max).
                let max = seq.iter().copied().max().unwrap_or(0);
                seq.iter().position(|&x| x == max).unwrap_or(0)
            } else {
                seq.iter()
                    .position(|&x| x == self.eos_token_id)
                    .unwrap_or(0)
            };
            pool.push((row * t + pos) as u32);
        }
        let ids_t = Tensor::from_vec(flat, (b, t), device)?;
        let x = self.token_embedding.forward(&ids_t)?;
        let x = x.broadcast_add(&self.position_embedding.narrow(0, 0, t)?)?;
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mask = nn::causal_mask(&lens, 0, t, x.dtype(), device)?;
        let mut x = x;
        for layer in &self.layers {
            x = layer.forward(&x, Some(&mask))?;
        }
        let x = self.final_layer_norm.forward(&x)?;
        let hidden = x.dim(2)?;
        let pool = Tensor::from_vec(pool, b, device)?;
        Ok(x.reshape((b * t, hidden))?.index_select(&pool, 0)?)
    }
}

/// CLIP vision tower (`vision_model`).
#[derive(Debug, Clone)]
pub struct ClipVisionTransformer {
    patch_embedding: candle_nn::Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<PreNormBlock>,
    post_layernorm: LayerNorm,
    image_size: usize,
}

impl ClipVisionTransformer {
    /// Load from `vb` at `vision_model`.
    pub fn new(vb: VarBuilder<'_>, c: &ClipVisionConfig) -> Result<Self> {
        let act = Activation::parse(&c.hidden_act)?;
        let emb = vb.pp("embeddings");
        let n_pos = (c.image_size / c.patch_size).pow(2) + 1;
        let conv = Conv2dConfig {
            stride: c.patch_size,
            ..Default::default()
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                PreNormBlock::load_separate_qkv(
                    vb.pp("encoder").pp("layers").pp(i),
                    c.hidden_size,
                    c.intermediate_size,
                    c.num_attention_heads,
                    act,
                    c.layer_norm_eps,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embedding: candle_nn::conv2d_no_bias(
                c.num_channels,
                c.hidden_size,
                c.patch_size,
                conv,
                emb.pp("patch_embedding"),
            )?,
            class_embedding: emb.get(c.hidden_size, "class_embedding")?,
            position_embedding: emb
                .pp("position_embedding")
                .get((n_pos, c.hidden_size), "weight")?,
            pre_layrnorm: candle_nn::layer_norm(
                c.hidden_size,
                c.layer_norm_eps,
                vb.pp("pre_layrnorm"),
            )?,
            layers,
            post_layernorm: candle_nn::layer_norm(
                c.hidden_size,
                c.layer_norm_eps,
                vb.pp("post_layernorm"),
            )?,
            image_size: c.image_size,
        })
    }

    /// Input resolution.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Pooled (pre-projection) states for pixels (B, 3, S, S).
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let x = self
            .patch_embedding
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let d = x.dim(2)?;
        let cls = self.class_embedding.reshape((1, 1, d))?.expand((b, 1, d))?;
        let x = Tensor::cat(&[&cls.to_dtype(x.dtype())?, &x], 1)?;
        let x = x.broadcast_add(&self.position_embedding)?;
        let mut x = self.pre_layrnorm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x, None)?;
        }
        Ok(self.post_layernorm.forward(&x.i((.., 0, ..))?)?)
    }
}

/// `CLIPModel`: both towers and their projections.
#[derive(Debug, Clone)]
pub struct ClipModel {
    /// Text tower.
    pub text: ClipTextTransformer,
    /// Vision tower.
    pub vision: ClipVisionTransformer,
    visual_projection: Linear,
    text_projection: Linear,
    /// `exp(logit_scale)`, the temperature of the match logits.
    pub logit_scale: f32,
}

impl ClipModel {
    /// Load from the root of a `CLIPModel` checkpoint.
    pub fn new(vb: VarBuilder<'_>, c: &ClipConfig) -> Result<Self> {
        let logit_scale = vb
            .get((), "logit_scale")?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?
            .exp();
        Ok(Self {
            text: ClipTextTransformer::new(vb.pp("text_model"), &c.text_config)?,
            vision: ClipVisionTransformer::new(vb.pp("vision_model"), &c.vision_config)?,
            visual_projection: candle_nn::linear_no_bias(
                c.vision_config.hidden_size,
                c.projection_dim,
                vb.pp("visual_projection"),
            )?,
            text_projection: candle_nn::linear_no_bias(
                c.text_config.hidden_size,
                c.projection_dim,
                vb.pp("text_projection"),
            )?,
            logit_scale,
        })
    }

    /// Width of the embeddings.
    pub fn projection_dim(&self) -> usize {
        self.visual_projection.weight().dim(0).unwrap_or(0)
    }

    /// L2-normalised image embeddings (B, P).
    pub fn image_embeddings(&self, pixels: &Tensor) -> Result<Tensor> {
        let pooled = self.vision.forward(pixels)?;
        Ok(nn::l2_normalize(&self.visual_projection.forward(&pooled)?)?)
    }

    /// L2-normalised text embeddings (B, P).
    pub fn text_embeddings(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let pooled = self.text.forward(ids, device)?;
        Ok(nn::l2_normalize(&self.text_projection.forward(&pooled)?)?)
    }
}
