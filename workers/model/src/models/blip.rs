//! BLIP: vision transformer, BERT-style text model with cross-attention, captioning
//! (`BlipForConditionalGeneration`) and visual question answering (`BlipForQuestionAnswering`),
//! following transformers v5.17 (`models/blip/modeling_blip.py`, `modeling_blip_text.py`).
//!
//! Differences from candle-transformers' BLIP, which only captions and only at batch 1:
//! - batched decoding with a per-layer self-attention KV cache whose rows can be reordered
//!   (beam search), and cross-attention keys/values computed once per image, not per token;
//! - masks built in the model dtype (f16/bf16 work), key-padding masks for padded questions;
//! - `BlipForQuestionAnswering` (question encoder with cross-attention to the image, answer
//!   decoder with cross-attention to the question), absent from candle-transformers;
//! - the tied LM head (`cls.predictions.decoder.*`, not stored by `save_pretrained`) is mapped
//!   to the word embeddings and `cls.predictions.bias`.
//!
//! Long because BLIP is one architecture: vision tower, text layers, decoder and VQA share
//! their building blocks and follow transformers' single modeling file.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use super::bert::{BertDims, BertLayer};
use crate::error::{ModelError, Result};
use crate::generate::StepDecoder;
use crate::nn::{self, Activation, PreNormBlock};

/// `vision_config` of a BLIP `config.json` (defaults: transformers' `BlipVisionConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BlipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for BlipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 384,
            patch_size: 16,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// `text_config` of a BLIP `config.json` (defaults: transformers' `BlipTextConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BlipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub encoder_hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
    pub sep_token_id: u32,
}

impl Default for BlipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30524,
            hidden_size: 768,
            encoder_hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 512,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-12,
            bos_token_id: 30522,
            eos_token_id: 2,
            pad_token_id: 0,
            sep_token_id: 102,
        }
    }
}

/// A BLIP `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BlipConfig {
    pub vision_config: BlipVisionConfig,
    pub text_config: BlipTextConfig,
}

impl BlipTextConfig {
    /// The sizes its BERT layers are built with.
    fn dims(&self) -> BertDims {
        BertDims {
            hidden: self.hidden_size,
            heads: self.num_attention_heads,
            intermediate: self.intermediate_size,
            cross_hidden: self.encoder_hidden_size,
            act: self.hidden_act.clone(),
            eps: self.layer_norm_eps,
        }
    }
}

impl BlipConfig {
    /// Read `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        nn::read_json(path)
    }
}

/// BLIP vision transformer (`vision_model`); returns the post-LayerNorm sequence.
#[derive(Debug, Clone)]
pub struct BlipVisionModel {
    patch_embedding: candle_nn::Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<PreNormBlock>,
    post_layernorm: LayerNorm,
    image_size: usize,
}

impl BlipVisionModel {
    /// Load from `vb` at `vision_model`.
    pub fn new(vb: VarBuilder<'_>, c: &BlipVisionConfig) -> Result<Self> {
        let act = Activation::parse(&c.hidden_act)?;
        let d = c.hidden_size;
        let emb = vb.pp("embeddings");
        let n_pos = (c.image_size / c.patch_size).pow(2) + 1;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp("encoder").pp("layers").pp(i);
                let a = l.pp("self_attn");
                Ok(PreNormBlock {
                    qkv: candle_nn::linear(d, 3 * d, a.pp("qkv"))?,
                    out: candle_nn::linear(d, d, a.pp("projection"))?,
                    ln1: candle_nn::layer_norm(d, c.layer_norm_eps, l.pp("layer_norm1"))?,
                    ln2: candle_nn::layer_norm(d, c.layer_norm_eps, l.pp("layer_norm2"))?,
                    fc1: candle_nn::linear(d, c.intermediate_size, l.pp("mlp").pp("fc1"))?,
                    fc2: candle_nn::linear(c.intermediate_size, d, l.pp("mlp").pp("fc2"))?,
                    act,
                    heads: c.num_attention_heads,
                    scale: ((d / c.num_attention_heads) as f64).powf(-0.5),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embedding: candle_nn::conv2d(
                3,
                d,
                c.patch_size,
                Conv2dConfig {
                    stride: c.patch_size,
                    ..Default::default()
                },
                emb.pp("patch_embedding"),
            )?,
            class_embedding: emb.get((1, 1, d), "class_embedding")?,
            position_embedding: emb.get((1, n_pos, d), "position_embedding")?,
            layers,
            post_layernorm: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("post_layernorm"))?,
            image_size: c.image_size,
        })
    }

    /// Input resolution.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Image token states (B, 1 + patches, D).
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let x = self
            .patch_embedding
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let d = x.dim(2)?;
        let cls = self.class_embedding.expand((b, 1, d))?;
        let x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.position_embedding)?;
        let mut x = x;
        for layer in &self.layers {
            x = layer.forward(&x, None)?;
        }
        Ok(self.post_layernorm.forward(&x)?)
    }
}

/// Keys/values of the cross-attention of every layer, computed once per batch of encoder
/// states, plus the encoder key-padding mask.
#[derive(Debug, Clone)]
pub struct CrossStates {
    kv: Vec<(Tensor, Tensor)>,
    mask: Option<Tensor>,
}

impl CrossStates {
    fn index_rows(&self, rows: &Tensor) -> candle_core::Result<Self> {
        Ok(Self {
            kv: self
                .kv
                .iter()
                .map(|(k, v)| Ok((k.index_select(rows, 0)?, v.index_select(rows, 0)?)))
                .collect::<candle_core::Result<_>>()?,
            mask: self
                .mask
                .as_ref()
                .map(|m| m.index_select(rows, 0))
                .transpose()?,
        })
    }
}

/// BERT-style text model of BLIP (`BlipTextModel`), usable as bidirectional encoder
/// (question encoder) or causal decoder (with `cls` head, `BlipTextLMHeadModel`).
#[derive(Debug, Clone)]
pub struct BlipTextModel {
    word_embeddings: Embedding,
    position_embeddings: Tensor,
    emb_ln: LayerNorm,
    layers: Vec<BertLayer>,
    max_positions: usize,
}

impl BlipTextModel {
    /// Load from `vb` at `text_encoder` or `text_decoder.bert`.
    pub fn new(vb: VarBuilder<'_>, c: &BlipTextConfig) -> Result<Self> {
        let emb = vb.pp("embeddings");
        // transformers builds cross-attention in every layer when `is_decoder` (the default
        // for BLIP's text config, also for the VQA question encoder): follow the weights.
        let cross = vb.contains_tensor("encoder.layer.0.crossattention.self.query.weight");
        Ok(Self {
            word_embeddings: candle_nn::embedding(
                c.vocab_size,
                c.hidden_size,
                emb.pp("word_embeddings"),
            )?,
            position_embeddings: emb
                .pp("position_embeddings")
                .get((c.max_position_embeddings, c.hidden_size), "weight")?,
            emb_ln: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers: (0..c.num_hidden_layers)
                .map(|i| BertLayer::new(vb.pp("encoder").pp("layer").pp(i), &c.dims(), cross))
                .collect::<Result<_>>()?,
            max_positions: c.max_position_embeddings,
        })
    }

    fn embed(&self, ids: &Tensor, past: usize) -> Result<Tensor> {
        let t = ids.dim(1)?;
        if past + t > self.max_positions {
            return Err(ModelError::Input(format!(
                "sequence of {} tokens exceeds the model limit of {}",
                past + t,
                self.max_positions
            )));
        }
        let x = self.word_embeddings.forward(ids)?;
        let x = x.broadcast_add(&self.position_embeddings.narrow(0, past, t)?)?;
        Ok(self.emb_ln.forward(&x)?)
    }

    /// Cross-attention keys/values of every layer for `encoder_states` (B, S, De);
    /// `encoder_lens` masks padded encoder positions (None: all valid).
    pub fn cross_states(
        &self,
        encoder_states: &Tensor,
        encoder_lens: Option<&[usize]>,
    ) -> Result<CrossStates> {
        let mut kv = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let cross = layer.crossattention.as_ref().ok_or_else(|| {
                ModelError::Unsupported("text model has no cross-attention".into())
            })?;
            kv.push(cross.keys_values(encoder_states)?);
        }
        let mask = match encoder_lens {
            Some(lens) => Some(nn::key_padding_mask(
                lens,
                encoder_states.dim(1)?,
                encoder_states.dtype(),
                encoder_states.device(),
            )?),
            None => None,
        };
        Ok(CrossStates { kv, mask })
    }

    /// Bidirectional encoder pass over right-padded `ids` (B, T) with valid lengths `lens`,
    /// cross-attending to `cross` (the VQA question encoder).
    pub fn encode(&self, ids: &Tensor, lens: &[usize], cross: &CrossStates) -> Result<Tensor> {
        let t = ids.dim(1)?;
        let mut x = self.embed(ids, 0)?;
        let mask = nn::key_padding_mask(lens, t, x.dtype(), x.device())?;
        for (layer, (ck, cv)) in self.layers.iter().zip(&cross.kv) {
            let (k, v) = layer.attention.keys_values(&x)?;
            x = layer.attention.attend(&x, &k, &v, Some(&mask))?;
            if let Some(ca) = &layer.crossattention {
                x = ca.attend(&x, ck, cv, cross.mask.as_ref())?;
            }
            x = layer.feed_forward(&x)?;
        }
        Ok(x)
    }

    /// Causal decoder pass over `ids` (B, t) continuing `cache`; returns hidden states (B, t, D).
    fn decode(&self, ids: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let past = cache.len;
        let mut x = self.embed(ids, past)?;
        let mask = if t > 1 {
            Some(nn::causal_mask(
                &vec![past + t; b],
                past,
                t,
                x.dtype(),
                x.device(),
            )?)
        } else {
            None
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let (k, v) = layer.attention.keys_values(&x)?;
            let (k, v) = match cache.self_kv.get(i) {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                None => (k, v),
            };
            x = layer.attention.attend(&x, &k, &v, mask.as_ref())?;
            if i < cache.self_kv.len() {
                cache.self_kv[i] = (k, v);
            } else {
                cache.self_kv.push((k, v));
            }
            if let Some(ca) = &layer.crossattention {
                let (ck, cv) = &cache.cross.kv[i];
                x = ca.attend(&x, ck, cv, cache.cross.mask.as_ref())?;
            }
            x = layer.feed_forward(&x)?;
        }
        cache.len += t;
        Ok(x)
    }
}

/// Decoding state of a batch: self-attention KV cache and the cross-attention states.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    self_kv: Vec<(Tensor, Tensor)>,
    cross: CrossStates,
    len: usize,
    device: Device,
}

impl DecoderCache {
    fn device(&self) -> &Device {
        &self.device
    }
}

/// `BlipTextLMHeadModel`: causal text decoder with its LM head.
#[derive(Debug, Clone)]
pub struct BlipTextDecoder {
    bert: BlipTextModel,
    transform: Linear,
    transform_ln: LayerNorm,
    act: Activation,
    decoder: Linear,
}

impl BlipTextDecoder {
    /// Load from `vb` at `text_decoder`.
    pub fn new(vb: VarBuilder<'_>, c: &BlipTextConfig) -> Result<Self> {
        let bert = BlipTextModel::new(vb.pp("bert"), c)?;
        let pred = vb.pp("cls").pp("predictions");
        let d = c.hidden_size;
        // Tied weights: `save_pretrained` stores neither of these when tied.
        let dec = pred.pp("decoder");
        let weight = if dec.contains_tensor("weight") {
            dec.get((c.vocab_size, d), "weight")?
        } else {
            bert.word_embeddings.embeddings().clone()
        };
        let bias = if dec.contains_tensor("bias") {
            dec.get(c.vocab_size, "bias")?
        } else {
            pred.get(c.vocab_size, "bias")?
        };
        Ok(Self {
            transform: candle_nn::linear(d, d, pred.pp("transform").pp("dense"))?,
            transform_ln: candle_nn::layer_norm(
                d,
                c.layer_norm_eps,
                pred.pp("transform").pp("LayerNorm"),
            )?,
            act: Activation::parse(&c.hidden_act)?,
            decoder: Linear::new(weight, Some(bias)),
            bert,
        })
    }

    /// Start decoding a batch whose rows attend to `encoder_states` (B, S, De).
    pub fn start(
        &self,
        encoder_states: &Tensor,
        encoder_lens: Option<&[usize]>,
    ) -> Result<DecoderCache> {
        Ok(DecoderCache {
            self_kv: Vec::new(),
            cross: self.bert.cross_states(encoder_states, encoder_lens)?,
            len: 0,
            device: encoder_states.device().clone(),
        })
    }

    fn head(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        let h = self
            .transform_ln
            .forward(&self.act.forward(&self.transform.forward(h)?)?)?;
        self.decoder.forward(&h)
    }

    /// Logits (B, t, V) for every position of `ids`, continuing `cache` (teacher forcing).
    pub fn forward(&self, ids: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        let h = self.bert.decode(ids, cache)?;
        Ok(self.head(&h)?)
    }
}

impl StepDecoder for BlipTextDecoder {
    type State = DecoderCache;
    type Logits = Tensor;

    fn step(&self, ids: &[u32], t: usize, state: &mut DecoderCache) -> Result<Tensor> {
        let rows = ids.len() / t.max(1);
        let ids = Tensor::from_slice(ids, (rows, t), state.device())?;
        let h = self.bert.decode(&ids, state)?;
        let t = h.dim(1)?;
        Ok(self
            .head(&h.narrow(1, t - 1, 1)?.squeeze(1)?)?
            .to_dtype(DType::F32)?)
    }

    fn select_rows(&self, state: &mut DecoderCache, rows: &[u32]) -> Result<()> {
        let rows = Tensor::from_slice(rows, rows.len(), state.device())?;
        for (k, v) in state.self_kv.iter_mut() {
            *k = k.index_select(&rows, 0)?;
            *v = v.index_select(&rows, 0)?;
        }
        state.cross = state.cross.index_rows(&rows)?;
        Ok(())
    }
}

/// `BlipForConditionalGeneration`: captions.
#[derive(Debug, Clone)]
pub struct BlipCaptioner {
    /// Vision tower.
    pub vision: BlipVisionModel,
    /// Caption decoder.
    pub decoder: BlipTextDecoder,
    /// Text config (token ids).
    pub text_config: BlipTextConfig,
}

impl BlipCaptioner {
    /// Load from the root of a `BlipForConditionalGeneration` checkpoint.
    pub fn new(vb: VarBuilder<'_>, c: &BlipConfig) -> Result<Self> {
        Ok(Self {
            vision: BlipVisionModel::new(vb.pp("vision_model"), &c.vision_config)?,
            decoder: BlipTextDecoder::new(vb.pp("text_decoder"), &c.text_config)?,
            text_config: c.text_config.clone(),
        })
    }
}

/// `BlipForQuestionAnswering`: answers.
#[derive(Debug, Clone)]
pub struct BlipVqa {
    /// Vision tower.
    pub vision: BlipVisionModel,
    /// Question encoder (cross-attends to the image).
    pub text_encoder: BlipTextModel,
    /// Answer decoder (cross-attends to the question).
    pub decoder: BlipTextDecoder,
    /// Text config (token ids).
    pub text_config: BlipTextConfig,
}

impl BlipVqa {
    /// Load from the root of a `BlipForQuestionAnswering` checkpoint.
    pub fn new(vb: VarBuilder<'_>, c: &BlipConfig) -> Result<Self> {
        if c.vision_config.hidden_size != c.text_config.encoder_hidden_size
            || c.text_config.hidden_size != c.text_config.encoder_hidden_size
        {
            return Err(ModelError::Unsupported(
                "BLIP VQA needs equal vision, text and encoder hidden sizes".into(),
            ));
        }
        Ok(Self {
            vision: BlipVisionModel::new(vb.pp("vision_model"), &c.vision_config)?,
            text_encoder: BlipTextModel::new(vb.pp("text_encoder"), &c.text_config)?,
            decoder: BlipTextDecoder::new(vb.pp("text_decoder"), &c.text_config)?,
            text_config: c.text_config.clone(),
        })
    }

    /// Encode right-padded questions against image states; returns (B, T, D).
    pub fn encode_questions(
        &self,
        image_states: &Tensor,
        questions: &[Vec<u32>],
        device: &Device,
    ) -> Result<Tensor> {
        let (ids, lens) = pad_batch(questions, self.text_config.pad_token_id, device)?;
        let cross = self.text_encoder.cross_states(image_states, None)?;
        self.text_encoder.encode(&ids, &lens, &cross)
    }
}

/// Right-pad token sequences into (B, T) and return the valid lengths.
pub(crate) fn pad_batch(
    seqs: &[Vec<u32>],
    pad: u32,
    device: &Device,
) -> Result<(Tensor, Vec<usize>)> {
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    if seqs.is_empty() || t == 0 {
        return Err(ModelError::Input("empty token batch".into()));
    }
    let mut flat = vec![pad; seqs.len() * t];
    for (row, s) in seqs.iter().enumerate() {
        flat[row * t..row * t + s.len()].copy_from_slice(s);
    }
    let lens = seqs.iter().map(Vec::len).collect();
    Ok((Tensor::from_vec(flat, (seqs.len(), t), device)?, lens))
}
