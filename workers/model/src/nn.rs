//! Building blocks shared by the architectures: activations, attention, masks, weight
//! loading. Names follow the Hugging Face checkpoints so that `vb.pp(..)` paths read like the
//! Python modules they mirror.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::error::{ModelError, Result};

/// Additive value for masked attention positions: finite in f16, bf16 and f32, and small
/// enough that `exp` of it is exactly 0 in every one of them.
pub(crate) const MASKED: f32 = -65504.0;

/// Activation functions named by `hidden_act` in HF configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (CLIP).
    QuickGelu,
    /// Exact (erf) GELU, `gelu` in HF.
    Gelu,
    /// Tanh approximation, `gelu_new` / `gelu_pytorch_tanh` in HF.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    /// Parse an HF `hidden_act` name.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => return Err(ModelError::Unsupported(format!("activation {other:?}"))),
        })
    }

    /// Apply the activation.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            Activation::Gelu => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

/// Load every tensor of a safetensors file into a `VarBuilder` on `device` as `dtype`.
///
/// A weight the architecture asks for and the file lacks is an error when it is requested;
/// nothing is ever filled with random values.
pub fn load_weights(path: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    if !path.exists() {
        return Err(ModelError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
        ));
    }
    let tensors = candle_core::safetensors::load(path, device)?;
    Ok(VarBuilder::from_tensors(tensors, dtype, device))
}

/// SHA-256 over the tensors of a safetensors file whose names start with `prefix`, in name
/// order: each name (without the prefix), dtype, shape and bytes. Two parts whose towers hash
/// the same have the same weights whatever their files are called.
pub fn weights_hash(path: &Path, prefix: &str) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};

    #[derive(serde::Deserialize)]
    struct Entry {
        dtype: String,
        shape: Vec<usize>,
        data_offsets: [usize; 2],
    }
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let bad = |why: &str| ModelError::config(path, format!("not a safetensors file: {why}"));
    let len = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("short header"))? as usize;
    let header = bytes
        .get(8..8 + len)
        .ok_or_else(|| bad("header past the end"))?;
    let mut entries: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    entries.remove("__metadata__");
    let data = &bytes[8 + len..];
    let mut h = Sha256::new();
    for (name, v) in entries.into_iter().filter(|(k, _)| k.starts_with(prefix)) {
        let e: Entry = serde_json::from_value(v).map_err(|e| bad(&e.to_string()))?;
        let [a, b] = e.data_offsets;
        let t = data.get(a..b).ok_or_else(|| bad("tensor past the end"))?;
        h.update(&name.as_bytes()[prefix.len()..]);
        h.update(e.dtype.as_bytes());
        h.update(format!("{:?}", e.shape).as_bytes());
        h.update(t);
    }
    Ok(h.finalize().into())
}

/// Read and parse a JSON config.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::config(path, e))
}

/// Several linear layers with the same input fused into one matmul (q, k, v projections).
pub(crate) fn fused_linear(
    vb: &VarBuilder<'_>,
    names: &[&str],
    d_in: usize,
    d_out: usize,
) -> Result<Linear> {
    let mut ws = Vec::with_capacity(names.len());
    let mut bs = Vec::with_capacity(names.len());
    for name in names {
        let sub = vb.pp(*name);
        ws.push(sub.get((d_out, d_in), "weight")?);
        bs.push(sub.get(d_out, "bias")?);
    }
    Ok(Linear::new(
        Tensor::cat(&ws, 0)?,
        Some(Tensor::cat(&bs, 0)?),
    ))
}

/// (B, T, H*Dh) -> (B, H, T, Dh), contiguous.
pub(crate) fn split_heads(x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, t, c) = x.dims3()?;
    x.reshape((b, t, heads, c / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// (B, H, T, Dh) -> (B, T, H*Dh).
pub(crate) fn merge_heads(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, t, h * d))
}

/// Scaled dot-product attention; `mask` is additive and broadcast to (B, H, Tq, Tk).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    // Softmax in f32 whatever the model dtype, as transformers does.
    let dtype = scores.dtype();
    let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
    probs.matmul(v)
}

/// Additive key-padding mask (B, 1, 1, Tk) from per-row valid lengths (right padding).
pub(crate) fn key_padding_mask(
    lens: &[usize],
    tk: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut data = vec![0f32; lens.len() * tk];
    for (row, &len) in lens.iter().enumerate() {
        for v in &mut data[row * tk + len.min(tk)..(row + 1) * tk] {
            *v = MASKED;
        }
    }
    Tensor::from_vec(data, (lens.len(), 1, 1, tk), device)?.to_dtype(dtype)
}

/// Additive causal + key-padding mask (B, 1, Tq, past + Tq) for queries at positions
/// `past..past + tq` (right padding).
pub(crate) fn causal_mask(
    lens: &[usize],
    past: usize,
    tq: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let tk = past + tq;
    let mut data = vec![0f32; lens.len() * tq * tk];
    for (row, &len) in lens.iter().enumerate() {
        for i in 0..tq {
            let base = (row * tq + i) * tk;
            for j in 0..tk {
                if j > past + i || j >= len {
                    data[base + j] = MASKED;
                }
            }
        }
    }
    Tensor::from_vec(data, (lens.len(), 1, tq, tk), device)?.to_dtype(dtype)
}

/// L2-normalise the rows of a (B, D) tensor.
pub(crate) fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&norm.clamp(1e-12, f64::MAX)?)
}

/// Pre-LayerNorm transformer block of CLIP / BLIP vision / SigLIP.
#[derive(Debug, Clone)]
pub(crate) struct PreNormBlock {
    pub qkv: Linear,
    pub out: Linear,
    pub ln1: candle_nn::LayerNorm,
    pub ln2: candle_nn::LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub act: Activation,
    pub heads: usize,
    pub scale: f64,
}

impl PreNormBlock {
    /// Load a block laid out as CLIP and SigLIP store it: `self_attn.{q,k,v,out}_proj`,
    /// `layer_norm1`, `layer_norm2`, `mlp.fc1`, `mlp.fc2` (q/k/v fused at load).
    pub fn load_separate_qkv(
        vb: VarBuilder<'_>,
        hidden: usize,
        inter: usize,
        heads: usize,
        act: Activation,
        eps: f64,
    ) -> Result<Self> {
        let attn = vb.pp("self_attn");
        Ok(Self {
            qkv: fused_linear(&attn, &["q_proj", "k_proj", "v_proj"], hidden, hidden)?,
            out: candle_nn::linear(hidden, hidden, attn.pp("out_proj"))?,
            ln1: candle_nn::layer_norm(hidden, eps, vb.pp("layer_norm1"))?,
            ln2: candle_nn::layer_norm(hidden, eps, vb.pp("layer_norm2"))?,
            fc1: candle_nn::linear(hidden, inter, vb.pp("mlp").pp("fc1"))?,
            fc2: candle_nn::linear(inter, hidden, vb.pp("mlp").pp("fc2"))?,
            act,
            heads,
            scale: ((hidden / heads) as f64).powf(-0.5),
        })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let h = self.ln1.forward(x)?;
        let qkv = self.qkv.forward(&h)?;
        let c = qkv.dim(D::Minus1)? / 3;
        let q = split_heads(&qkv.narrow(D::Minus1, 0, c)?, self.heads)?;
        let k = split_heads(&qkv.narrow(D::Minus1, c, c)?, self.heads)?;
        let v = split_heads(&qkv.narrow(D::Minus1, 2 * c, c)?, self.heads)?;
        let a = merge_heads(&attention(&q, &k, &v, mask, self.scale)?)?;
        let x = (x + self.out.forward(&a)?)?;
        let h = self.ln2.forward(&x)?;
        let h = self
            .fc2
            .forward(&self.act.forward(&self.fc1.forward(&h)?)?)?;
        x + h
    }
}
