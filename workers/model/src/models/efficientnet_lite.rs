//! EfficientNet-Lite (Tan & Le 2019; the Lite variants of TensorFlow's
//! `efficientnet/lite/efficientnet_lite_builder.py`): EfficientNet without squeeze-excitation,
//! ReLU6 instead of swish, stem and head not scaled. The weights are laid out as the
//! `efficientnet_lite_pytorch` package names them (`_conv_stem`, `_bn0`, `_blocks.N.
//! {_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`, `_conv_head`, `_bn1`, `_fc`),
//! with TensorFlow's `SAME` padding, as that package's `Conv2dStaticSamePadding` does.

use candle_core::{Module as _, Tensor};
use candle_nn::VarBuilder;

use super::convnet::{linear, ConvBn, ConvSpec, PadRule};
use crate::error::{ModelError, Result};

/// Batch-norm epsilon of the TensorFlow models.
const BN_EPS: f64 = 1e-3;

/// One stage of blocks: `r{repeats}_k{kernel}_s{stride}_e{expand}_i{in}_o{out}`.
struct Stage {
    repeats: usize,
    kernel: usize,
    stride: usize,
    expand: usize,
    input: usize,
    output: usize,
}

/// The Lite block arguments (the same for lite0–lite4 before scaling).
const STAGES: [Stage; 7] = [
    stage(1, 3, 1, 1, 32, 16),
    stage(2, 3, 2, 6, 16, 24),
    stage(2, 5, 2, 6, 24, 40),
    stage(3, 3, 2, 6, 40, 80),
    stage(3, 5, 1, 6, 80, 112),
    stage(4, 5, 2, 6, 112, 192),
    stage(1, 3, 1, 6, 192, 320),
];

const fn stage(
    repeats: usize,
    kernel: usize,
    stride: usize,
    expand: usize,
    input: usize,
    output: usize,
) -> Stage {
    Stage {
        repeats,
        kernel,
        stride,
        expand,
        input,
        output,
    }
}

/// Width and depth multipliers of a variant (`efficientnet_params`).
pub fn variant(name: &str) -> Result<(f64, f64)> {
    Ok(match name {
        "efficientnet-lite0" => (1.0, 1.0),
        "efficientnet-lite1" => (1.0, 1.1),
        "efficientnet-lite2" => (1.1, 1.2),
        "efficientnet-lite3" => (1.2, 1.4),
        "efficientnet-lite4" => (1.4, 1.8),
        other => {
            return Err(ModelError::Unsupported(format!(
                "architecture {other:?} (efficientnet-lite0 … lite4)"
            )))
        }
    })
}

/// Channels scaled by the width multiplier, rounded to a multiple of 8 (`round_filters`).
fn round_filters(filters: usize, width: f64) -> usize {
    let f = filters as f64 * width;
    let mut new = ((f + 4.0) as usize / 8 * 8).max(8);
    if (new as f64) < 0.9 * f {
        new += 8;
    }
    new
}

/// An inverted-residual block (MBConv without squeeze-excitation).
struct Block {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = match &self.expand {
            Some(e) => e.forward(x)?,
            None => x.clone(),
        };
        h = self.depthwise.forward(&h)?;
        h = self.project.forward(&h)?;
        Ok(if self.residual { (h + x)? } else { h })
    }
}

/// EfficientNet-Lite with its ImageNet classifier.
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    fc: candle_nn::Linear,
}

impl std::fmt::Debug for EfficientNetLite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EfficientNetLite")
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

fn conv<'a>(conv: &'a str, bn: &'a str, k: usize, stride: usize, relu6: bool) -> ConvSpec<'a> {
    ConvSpec {
        conv,
        bn,
        eps: BN_EPS,
        k,
        stride,
        pad: PadRule::Same,
        depthwise: false,
        relu6,
    }
}

impl EfficientNetLite {
    /// Load variant `name` (e.g. `efficientnet-lite0`) from `vb`.
    pub fn load(vb: &VarBuilder<'_>, name: &str) -> Result<Self> {
        let (width, depth) = variant(name)?;
        let stem = ConvBn::load(vb, &conv("_conv_stem", "_bn0", 3, 2, true))?;
        let mut blocks = Vec::new();
        let last = STAGES.len() - 1;
        for (i, s) in STAGES.iter().enumerate() {
            // Stem and head are not scaled: the first stage keeps 32 inputs, the first and
            // last stages their repeats.
            let mut input = if i == 0 {
                32
            } else {
                round_filters(s.input, width)
            };
            let output = round_filters(s.output, width);
            let repeats = if i == 0 || i == last {
                s.repeats
            } else {
                (depth * s.repeats as f64).ceil() as usize
            };
            for r in 0..repeats {
                let stride = if r == 0 { s.stride } else { 1 };
                let p = format!("_blocks.{}", blocks.len());
                let expand = (s.expand != 1)
                    .then(|| {
                        let (c, b) = (format!("{p}._expand_conv"), format!("{p}._bn0"));
                        ConvBn::load(vb, &conv(&c, &b, 1, 1, true))
                    })
                    .transpose()?;
                let (c, b) = (format!("{p}._depthwise_conv"), format!("{p}._bn1"));
                let mut dw = conv(&c, &b, s.kernel, stride, true);
                dw.depthwise = true;
                let depthwise = ConvBn::load(vb, &dw)?;
                let (c, b) = (format!("{p}._project_conv"), format!("{p}._bn2"));
                let project = ConvBn::load(vb, &conv(&c, &b, 1, 1, false))?;
                blocks.push(Block {
                    expand,
                    depthwise,
                    project,
                    residual: stride == 1 && input == output,
                });
                input = output;
            }
        }
        let head = ConvBn::load(vb, &conv("_conv_head", "_bn1", 1, 1, true))?;
        let fc = linear(vb, "_fc")?;
        Ok(Self {
            stem,
            blocks,
            head,
            fc,
        })
    }

    /// Number of classes of the classifier.
    pub fn classes(&self) -> usize {
        self.fc.weight().dim(0).unwrap_or(0)
    }

    /// The pooled features (N, 1280) of images (N, 3, H, W).
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.stem.forward(x)?;
        for b in &self.blocks {
            h = b.forward(&h)?;
        }
        h = self.head.forward(&h)?;
        Ok(h.flatten_from(2)?.mean(2)?)
    }

    /// ImageNet logits (N, 1000) of images (N, 3, H, W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.fc.forward(&self.features(x)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_as_the_reference() {
        // lite0/lite1: unchanged; lite2 (1.1): 16 → 16, 24 → 24, 40 → 48, 112 → 120, 320 → 352.
        for f in [16, 24, 40, 80, 112, 192, 320] {
            assert_eq!(round_filters(f, 1.0), f);
        }
        let lite2: Vec<usize> = [16, 24, 40, 80, 112, 192, 320]
            .iter()
            .map(|&f| round_filters(f, 1.1))
            .collect();
        assert_eq!(lite2, [16, 24, 48, 88, 120, 208, 352]);
    }
}
