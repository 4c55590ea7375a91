//! Gated fusion head (design notes §2), the Rust twin of `models/fusion.py`:
//!
//! ```text
//! g     = sigmoid(W [e_img; e_txt] + b)          (vector gate: D outputs, scalar gate: 1)
//! fused = normalise(g * e_img + (1 - g) * e_txt)
//! ```
//!
//! With one modality the gate selects it (g = 1 image only, g = 0 text only), so the fused
//! embedding is then the normalised embedding of the modality present.

use std::path::Path;

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::nn;

/// `config.json` of a fusion head.
#[derive(Debug, Clone, Deserialize)]
pub struct FusionConfig {
    /// Must be `fusionstream_gated_fusion`.
    pub model_type: String,
    /// Width of the two embeddings (the CLIP projection dim).
    pub embed_dim: usize,
    /// `vector` (one gate per dimension) or `scalar`.
    #[serde(default = "default_gate")]
    pub gate: String,
}

fn default_gate() -> String {
    "vector".into()
}

impl FusionConfig {
    /// Read and check `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let c: Self = nn::read_json(path)?;
        if c.model_type != "fusionstream_gated_fusion" {
            return Err(ModelError::config(
                path,
                format!("model_type {:?} is not a fusion head", c.model_type),
            ));
        }
        if c.gate != "vector" && c.gate != "scalar" {
            return Err(ModelError::config(
                path,
                format!("gate must be vector or scalar, got {:?}", c.gate),
            ));
        }
        Ok(c)
    }
}

/// The gated fusion head.
#[derive(Debug, Clone)]
pub struct FusionHead {
    gate: Linear,
    embed_dim: usize,
}

impl FusionHead {
    /// Load `gate.weight` / `gate.bias` from `vb`.
    pub fn new(vb: VarBuilder<'_>, c: &FusionConfig) -> Result<Self> {
        let out = if c.gate == "vector" { c.embed_dim } else { 1 };
        Ok(Self {
            gate: candle_nn::linear(2 * c.embed_dim, out, vb.pp("gate"))?,
            embed_dim: c.embed_dim,
        })
    }

    /// Width of the embeddings it fuses.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// Fuse (B, D) image and text embeddings; the masks (B,) are 1.0 where present.
    pub fn forward(
        &self,
        image: &Tensor,
        text: &Tensor,
        image_mask: &Tensor,
        text_mask: &Tensor,
    ) -> Result<Tensor> {
        let im = image_mask.unsqueeze(1)?;
        let tm = text_mask.unsqueeze(1)?;
        let image = image.broadcast_mul(&im)?;
        let text = text.broadcast_mul(&tm)?;
        let g = candle_nn::ops::sigmoid(&self.gate.forward(&Tensor::cat(&[&image, &text], 1)?)?)?;
        let both = (&im * &tm)?;
        let g = g
            .broadcast_mul(&both)?
            .broadcast_add(&(1.0 - &both)?.broadcast_mul(&im)?)?;
        let fused = (g.broadcast_mul(&image)? + (1.0 - &g)?.broadcast_mul(&text)?)?;
        Ok(nn::l2_normalize(&fused)?)
    }
}
