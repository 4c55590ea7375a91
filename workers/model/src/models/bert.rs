//! BERT: the post-LayerNorm encoder layer that BLIP's text model shares (with an optional
//! cross-attention), and `BertModel` itself as sentence-transformers runs it — the text
//! encoder of the `minilm` pack (all-MiniLM-L6-v2), following transformers v5.17
//! (`models/bert/modeling_bert.py`): word + absolute position + token-type embeddings,
//! LayerNorm, then the layers, no pooler (sentence-transformers pools the token states).

use std::path::Path;

use candle_core::{Module, Tensor, D};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::nn::{self, Activation};

/// The sizes a BERT layer is built with.
#[derive(Debug, Clone)]
pub(crate) struct BertDims {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    /// Width of the states a cross-attention reads (BLIP: the vision tower's).
    pub cross_hidden: usize,
    pub act: String,
    pub eps: f64,
}

/// One attention sub-layer (post-LayerNorm): self-attention, or cross-attention to encoder
/// states.
#[derive(Debug, Clone)]
pub(crate) struct BertAttention {
    query: Linear,
    /// Keys and values fused: one matmul. For cross-attention they read encoder states.
    kv: Linear,
    dense: Linear,
    ln: LayerNorm,
    heads: usize,
    scale: f64,
}

impl BertAttention {
    fn new(vb: VarBuilder<'_>, c: &BertDims, kv_in: usize) -> Result<Self> {
        let d = c.hidden;
        let s = vb.pp("self");
        Ok(Self {
            query: candle_nn::linear(d, d, s.pp("query"))?,
            kv: nn::fused_linear(&s, &["key", "value"], kv_in, d)?,
            dense: candle_nn::linear(d, d, vb.pp("output").pp("dense"))?,
            ln: candle_nn::layer_norm(d, c.eps, vb.pp("output").pp("LayerNorm"))?,
            heads: c.heads,
            scale: 1.0 / ((d / c.heads) as f64).sqrt(),
        })
    }

    /// Keys and values (B, H, T, Dh) of `states`.
    pub fn keys_values(&self, states: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let kv = self.kv.forward(states)?;
        let d = kv.dim(D::Minus1)? / 2;
        Ok((
            nn::split_heads(&kv.narrow(D::Minus1, 0, d)?, self.heads)?,
            nn::split_heads(&kv.narrow(D::Minus1, d, d)?, self.heads)?,
        ))
    }

    /// Attend from `x` to `k`/`v` (additive `mask`), project, add `x`, LayerNorm.
    pub fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let q = nn::split_heads(&self.query.forward(x)?, self.heads)?;
        let ctx = nn::merge_heads(&nn::attention(&q, k, v, mask, self.scale)?)?;
        self.ln.forward(&(self.dense.forward(&ctx)? + x)?)
    }
}

/// A BERT layer: self-attention, optional cross-attention, feed-forward.
#[derive(Debug, Clone)]
pub(crate) struct BertLayer {
    pub attention: BertAttention,
    pub crossattention: Option<BertAttention>,
    intermediate: Linear,
    output: Linear,
    output_ln: LayerNorm,
    act: Activation,
}

impl BertLayer {
    /// Load `encoder.layer.<i>` from `vb`, with a cross-attention when `cross`.
    pub fn new(vb: VarBuilder<'_>, c: &BertDims, cross: bool) -> Result<Self> {
        let d = c.hidden;
        Ok(Self {
            attention: BertAttention::new(vb.pp("attention"), c, d)?,
            crossattention: if cross {
                Some(BertAttention::new(
                    vb.pp("crossattention"),
                    c,
                    c.cross_hidden,
                )?)
            } else {
                None
            },
            intermediate: candle_nn::linear(d, c.intermediate, vb.pp("intermediate").pp("dense"))?,
            output: candle_nn::linear(c.intermediate, d, vb.pp("output").pp("dense"))?,
            output_ln: candle_nn::layer_norm(d, c.eps, vb.pp("output").pp("LayerNorm"))?,
            act: Activation::parse(&c.act)?,
        })
    }

    /// The feed-forward sub-layer (post-LayerNorm).
    pub fn feed_forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self
            .output
            .forward(&self.act.forward(&self.intermediate.forward(x)?)?)?;
        self.output_ln.forward(&(h + x)?)
    }
}

/// A BERT `config.json` (defaults: transformers' `BertConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub position_embedding_type: String,
}

impl Default for BertConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            position_embedding_type: "absolute".into(),
        }
    }
}

impl BertConfig {
    /// Read `config.json`; only absolute position embeddings are supported.
    pub fn from_file(path: &Path) -> Result<Self> {
        let c: Self = nn::read_json(path)?;
        if c.position_embedding_type != "absolute" {
            return Err(ModelError::config(
                path,
                format!(
                    "position_embedding_type {:?} is not supported (only \"absolute\")",
                    c.position_embedding_type
                ),
            ));
        }
        Ok(c)
    }
}

/// `BertModel` without its pooler: token states of right-padded batches.
#[derive(Debug, Clone)]
pub struct BertModel {
    word_embeddings: Embedding,
    position_embeddings: Tensor,
    /// Row 0 of the token-type embeddings: a single segment, as sentence-transformers feeds.
    token_type: Tensor,
    emb_ln: LayerNorm,
    layers: Vec<BertLayer>,
    max_positions: usize,
}

impl BertModel {
    /// Load from `vb` (the `BertModel` names: `embeddings.*`, `encoder.layer.*`).
    pub fn new(vb: VarBuilder<'_>, c: &BertConfig) -> Result<Self> {
        let emb = vb.pp("embeddings");
        let dims = BertDims {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            intermediate: c.intermediate_size,
            cross_hidden: c.hidden_size,
            act: c.hidden_act.clone(),
            eps: c.layer_norm_eps,
        };
        Ok(Self {
            word_embeddings: candle_nn::embedding(
                c.vocab_size,
                c.hidden_size,
                emb.pp("word_embeddings"),
            )?,
            position_embeddings: emb
                .pp("position_embeddings")
                .get((c.max_position_embeddings, c.hidden_size), "weight")?,
            token_type: emb
                .pp("token_type_embeddings")
                .get((c.type_vocab_size, c.hidden_size), "weight")?
                .narrow(0, 0, 1)?,
            emb_ln: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers: (0..c.num_hidden_layers)
                .map(|i| BertLayer::new(vb.pp("encoder").pp("layer").pp(i), &dims, false))
                .collect::<Result<_>>()?,
            max_positions: c.max_position_embeddings,
        })
    }

    /// Longest sequence the position embeddings cover.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Token states (B, T, D) of right-padded `ids` (B, T) with valid lengths `lens`.
    pub fn forward(&self, ids: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let t = ids.dim(1)?;
        if t > self.max_positions {
            return Err(ModelError::Input(format!(
                "sequence of {t} tokens exceeds the model limit of {}",
                self.max_positions
            )));
        }
        let x = self.word_embeddings.forward(ids)?;
        let x = x
            .broadcast_add(&self.position_embeddings.narrow(0, 0, t)?)?
            .broadcast_add(&self.token_type)?;
        let mut x = self.emb_ln.forward(&x)?;
        let mask = nn::key_padding_mask(lens, t, x.dtype(), x.device())?;
        for layer in &self.layers {
            let (k, v) = layer.attention.keys_values(&x)?;
            x = layer.attention.attend(&x, &k, &v, Some(&mask))?;
            x = layer.feed_forward(&x)?;
        }
        Ok(x)
    }
}

/// Mean of the token states over the valid positions of each row (sentence-transformers'
/// `Pooling` with `pooling_mode_mean_tokens`): (B, T, D) → (B, D).
pub fn mean_pool(states: &Tensor, lens: &[usize]) -> Result<Tensor> {
    let (b, t, _) = states.dims3()?;
    let mut w = vec![0f32; b * t];
    for (row, &len) in lens.iter().enumerate() {
        let len = len.min(t).max(1);
        for v in &mut w[row * t..row * t + len] {
            *v = 1.0 / len as f32;
        }
    }
    let w = Tensor::from_vec(w, (b, 1, t), states.device())?.to_dtype(states.dtype())?;
    Ok(w.matmul(states)?.squeeze(1)?)
}
