//! SigLIP dual encoder, following transformers' `SiglipModel`
//! (`transformers/models/siglip/modeling_siglip.py`, v5.17).
//!
//! SigLIP differs from CLIP in ways that matter for serving: the text tower is bidirectional
//! with no padding mask and pools the *last* position, because the model was trained on texts
//! padded to `max_position_embeddings`; so every text is padded to that length here, which
//! also makes batches trivially equal to single items. The vision tower has no class token
//! and pools with a multi-head attention probe. Scores are sigmoids, not a softmax.

use std::path::Path;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Conv2dConfig, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::nn::{self, Activation, PreNormBlock};

/// `text_config` of a SigLIP `config.json` (defaults: transformers' `SiglipTextConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SiglipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    pub projection_size: Option<usize>,
}

impl Default for SiglipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 64,
            hidden_act: "gelu_pytorch_tanh".into(),
            layer_norm_eps: 1e-6,
            pad_token_id: 1,
            projection_size: None,
        }
    }
}

/// `vision_config` of a SigLIP `config.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SiglipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub vision_use_head: Option<bool>,
}

impl Default for SiglipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 16,
            hidden_act: "gelu_pytorch_tanh".into(),
            layer_norm_eps: 1e-6,
            vision_use_head: None,
        }
    }
}

/// A SigLIP `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SiglipConfig {
    pub text_config: SiglipTextConfig,
    pub vision_config: SiglipVisionConfig,
}

impl SiglipConfig {
    /// Read `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        nn::read_json(path)
    }
}

fn blocks(
    vb: VarBuilder<'_>,
    n: usize,
    hidden: usize,
    inter: usize,
    heads: usize,
    act: &str,
    eps: f64,
) -> Result<Vec<PreNormBlock>> {
    let act = Activation::parse(act)?;
    (0..n)
        .map(|i| {
            PreNormBlock::load_separate_qkv(
                vb.pp("encoder").pp("layers").pp(i),
                hidden,
                inter,
                heads,
                act,
                eps,
            )
        })
        .collect()
}

/// Multi-head attention pooling with a learned probe (`head` of the vision tower).
#[derive(Debug, Clone)]
struct AttentionPool {
    probe: Tensor,
    in_proj: Linear,
    out_proj: Linear,
    layernorm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
    heads: usize,
}

impl AttentionPool {
    fn new(vb: VarBuilder<'_>, c: &SiglipVisionConfig) -> Result<Self> {
        let d = c.hidden_size;
        let a = vb.pp("attention");
        Ok(Self {
            probe: vb.get((1, 1, d), "probe")?,
            in_proj: Linear::new(
                a.get((3 * d, d), "in_proj_weight")?,
                Some(a.get(3 * d, "in_proj_bias")?),
            ),
            out_proj: candle_nn::linear(d, d, a.pp("out_proj"))?,
            layernorm: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("layernorm"))?,
            fc1: candle_nn::linear(d, c.intermediate_size, vb.pp("mlp").pp("fc1"))?,
            fc2: candle_nn::linear(c.intermediate_size, d, vb.pp("mlp").pp("fc2"))?,
            act: Activation::parse(&c.hidden_act)?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, _, d) = x.dims3()?;
        let w = self.in_proj.weight();
        let bias = self
            .in_proj
            .bias()
            .ok_or_else(|| candle_core::Error::Msg("in_proj bias".into()))?;
        let proj = |i: usize, t: &Tensor| -> candle_core::Result<Tensor> {
            let lin = Linear::new(w.narrow(0, i * d, d)?, Some(bias.narrow(0, i * d, d)?));
            nn::split_heads(&lin.forward(t)?, self.heads)
        };
        let probe = self.probe.expand((b, 1, d))?.contiguous()?;
        let q = proj(0, &probe)?;
        let k = proj(1, x)?;
        let v = proj(2, x)?;
        let scale = ((d / self.heads) as f64).powf(-0.5);
        let h = self
            .out_proj
            .forward(&nn::merge_heads(&nn::attention(&q, &k, &v, None, scale)?)?)?;
        let m = self.fc2.forward(
            &self
                .act
                .forward(&self.fc1.forward(&self.layernorm.forward(&h)?)?)?,
        )?;
        (h + m)?.squeeze(1)
    }
}

/// `SiglipModel`: both towers; embeddings come L2-normalised.
#[derive(Debug, Clone)]
pub struct SiglipModel {
    token_embedding: Embedding,
    text_positions: Tensor,
    text_layers: Vec<PreNormBlock>,
    final_layer_norm: LayerNorm,
    text_head: Linear,
    pad_token_id: u32,
    text_len: usize,
    patch_embedding: candle_nn::Conv2d,
    vision_positions: Tensor,
    vision_layers: Vec<PreNormBlock>,
    post_layernorm: LayerNorm,
    pool: AttentionPool,
    /// `exp(logit_scale)`.
    pub logit_scale: f32,
    /// `logit_bias`.
    pub logit_bias: f32,
    dim: usize,
    image_size: usize,
}

impl SiglipModel {
    /// Load from the root of a `SiglipModel` checkpoint. Long: one load per weight of the
    /// Hugging Face module (both towers, the pooling head, the logit scalars), in its order.
    pub fn new(vb: VarBuilder<'_>, c: &SiglipConfig) -> Result<Self> {
        let (t, v) = (&c.text_config, &c.vision_config);
        if v.vision_use_head == Some(false) {
            return Err(ModelError::Unsupported(
                "SigLIP without a vision head".into(),
            ));
        }
        let tv = vb.pp("text_model");
        let vv = vb.pp("vision_model");
        let proj = t.projection_size.unwrap_or(t.hidden_size);
        if proj != v.hidden_size {
            return Err(ModelError::Unsupported(
                "SigLIP text projection differs from the vision width".into(),
            ));
        }
        let n_patches = (v.image_size / v.patch_size).pow(2);
        let scalar = |name: &str| -> Result<f32> {
            Ok(vb
                .get(1, name)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?[0])
        };
        Ok(Self {
            token_embedding: candle_nn::embedding(
                t.vocab_size,
                t.hidden_size,
                tv.pp("embeddings").pp("token_embedding"),
            )?,
            text_positions: tv
                .pp("embeddings")
                .pp("position_embedding")
                .get((t.max_position_embeddings, t.hidden_size), "weight")?,
            text_layers: blocks(
                tv.clone(),
                t.num_hidden_layers,
                t.hidden_size,
                t.intermediate_size,
                t.num_attention_heads,
                &t.hidden_act,
                t.layer_norm_eps,
            )?,
            final_layer_norm: candle_nn::layer_norm(
                t.hidden_size,
                t.layer_norm_eps,
                tv.pp("final_layer_norm"),
            )?,
            text_head: candle_nn::linear(t.hidden_size, proj, tv.pp("head"))?,
            pad_token_id: t.pad_token_id,
            text_len: t.max_position_embeddings,
            patch_embedding: candle_nn::conv2d(
                v.num_channels,
                v.hidden_size,
                v.patch_size,
                Conv2dConfig {
                    stride: v.patch_size,
                    ..Default::default()
                },
                vv.pp("embeddings").pp("patch_embedding"),
            )?,
            vision_positions: vv
                .pp("embeddings")
                .pp("position_embedding")
                .get((n_patches, v.hidden_size), "weight")?,
            vision_layers: blocks(
                vv.clone(),
                v.num_hidden_layers,
                v.hidden_size,
                v.intermediate_size,
                v.num_attention_heads,
                &v.hidden_act,
                v.layer_norm_eps,
            )?,
            post_layernorm: candle_nn::layer_norm(
                v.hidden_size,
                v.layer_norm_eps,
                vv.pp("post_layernorm"),
            )?,
            pool: AttentionPool::new(vv.pp("head"), v)?,
            logit_scale: scalar("logit_scale")?.exp(),
            logit_bias: scalar("logit_bias")?,
            dim: proj,
            image_size: v.image_size,
        })
    }

    /// Width of the embeddings.
    pub fn projection_dim(&self) -> usize {
        self.dim
    }

    /// Input resolution.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Texts are padded to this length (the model's training length).
    pub fn text_len(&self) -> usize {
        self.text_len
    }

    /// L2-normalised image embeddings (B, P).
    pub fn image_embeddings(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = self
            .patch_embedding
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let mut x = x.broadcast_add(&self.vision_positions)?;
        for layer in &self.vision_layers {
            x = layer.forward(&x, None)?;
        }
        let x = self.post_layernorm.forward(&x)?;
        Ok(nn::l2_normalize(&self.pool.forward(&x)?)?)
    }

    /// L2-normalised text embeddings (B, P); every text is padded (or truncated) to the
    /// model's length, as SigLIP's processor does with `padding="max_length"`.
    pub fn text_embeddings(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let (b, t) = (ids.len(), self.text_len);
        if b == 0 {
            return Err(ModelError::Input("empty text batch".into()));
        }
        let mut flat = vec![self.pad_token_id; b * t];
        for (row, seq) in ids.iter().enumerate() {
            let n = seq.len().min(t);
            flat[row * t..row * t + n].copy_from_slice(&seq[..n]);
        }
        let x = self
            .token_embedding
            .forward(&Tensor::from_vec(flat, (b, t), device)?)?;
        let mut x = x.broadcast_add(&self.text_positions)?;
        for layer in &self.text_layers {
            x = layer.forward(&x, None)?;
        }
        let x = self.final_layer_norm.forward(&x)?;
        let last = x.narrow(1, t - 1, 1)?.squeeze(1)?;
        Ok(nn::l2_normalize(&self.text_head.forward(&last)?)?)
    }
}
