//! Building blocks of the mobile convnets (`efficientnet_lite.rs`, `mobilenet_v2.rs`) for
//! inference: a convolution with its batch norm folded in, the depthwise convolution as one
//! direct loop per channel, ReLU6.
//!
//! Folding: `BN(conv(x)) = conv(x)·s + (β − μ·s)` with `s = γ / √(σ² + ε)`, so the weights are
//! scaled per output channel and the shift becomes a bias (computed in f64, stored in f32);
//! what PyTorch computes in two passes is one here, with the same result within f32 rounding.
//! Pointwise (1×1) convolutions are matrix products; the stem's full convolution is candle's.
//! candle runs a grouped convolution as one convolution per group, hundreds of them for a
//! depthwise layer, so the depthwise layer is a custom operation: a direct k×k loop per
//! channel (channels in parallel) with the bias and ReLU6 fused, on the CPU.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;

/// Zero padding around the input of a convolution: (top, bottom, left, right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    /// The same padding on every side (PyTorch's `padding=p`).
    pub(crate) fn symmetric(p: usize) -> Self {
        Self {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }

    /// TensorFlow's `SAME` padding for an input of `h × w`: the output is `⌈h/s⌉ × ⌈w/s⌉` and
    /// the odd pixel of padding goes after (bottom, right).
    pub(crate) fn same(h: usize, w: usize, k: usize, stride: usize) -> Self {
        let total = |n: usize| {
            let out = n.div_ceil(stride);
            ((out - 1) * stride + k).saturating_sub(n)
        };
        let (ph, pw) = (total(h), total(w));
        Self {
            top: ph / 2,
            bottom: ph - ph / 2,
            left: pw / 2,
            right: pw - pw / 2,
        }
    }
}

/// How a convolution's padding is decided.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PadRule {
    /// Fixed, as PyTorch's `padding=`.
    Fixed(Padding),
    /// TensorFlow's `SAME` for the input's size.
    Same,
}

/// Which kernel runs the convolution.
#[derive(Debug, Clone)]
enum Kind {
    /// k×k over every input channel (the stem): candle's convolution.
    Full,
    /// 1×1: a matrix product, weights (out, in).
    Pointwise(Tensor),
    /// One k×k filter per channel.
    Depthwise { weight: Vec<f32>, bias: Vec<f32> },
}

/// A convolution followed by its batch norm (folded), optionally by ReLU6.
#[derive(Debug, Clone)]
pub(crate) struct ConvBn {
    kind: Kind,
    /// (out, in/groups, k, k), folded.
    weight: Tensor,
    /// (out,), folded.
    bias: Tensor,
    k: usize,
    stride: usize,
    pad: PadRule,
    relu6: bool,
}

/// Where a convolution's and its batch norm's weights are, and its shape.
pub(crate) struct ConvSpec<'a> {
    pub conv: &'a str,
    pub bn: &'a str,
    pub eps: f64,
    pub k: usize,
    pub stride: usize,
    pub pad: PadRule,
    pub depthwise: bool,
    pub relu6: bool,
}

impl ConvBn {
    /// Load `spec.conv` (`.weight`, no bias) and `spec.bn` (`.weight`, `.bias`,
    /// `.running_mean`, `.running_var`) and fold them.
    pub(crate) fn load(vb: &VarBuilder<'_>, spec: &ConvSpec<'_>) -> Result<Self> {
        let w = vb.get_unchecked(&format!("{}.weight", spec.conv))?;
        let (cout, cin_g, kh, kw) = w.dims4()?;
        if kh != spec.k || kw != spec.k {
            return Err(crate::error::ModelError::Input(format!(
                "{}: a {kh}×{kw} kernel where {}×{} was expected",
                spec.conv, spec.k, spec.k
            )));
        }
        let vec1 = |name: &str| -> Result<Vec<f64>> {
            let t = vb.get(cout, &format!("{}.{name}", spec.bn))?;
            Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?)
        };
        let (gamma, beta) = (vec1("weight")?, vec1("bias")?);
        let (mean, var) = (vec1("running_mean")?, vec1("running_var")?);
        let scale: Vec<f64> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + spec.eps).sqrt())
            .collect();
        let bias: Vec<f32> = (0..cout)
            .map(|c| (beta[c] - mean[c] * scale[c]) as f32)
            .collect();
        let per_out = cin_g * kh * kw;
        let raw = w.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let folded: Vec<f32> = raw
            .iter()
            .enumerate()
            .map(|(i, v)| (v * scale[i / per_out]) as f32)
            .collect();
        let device = w.device().clone();
        let weight = Tensor::from_vec(folded.clone(), (cout, cin_g, kh, kw), &device)?;
        let kind = if spec.depthwise {
            Kind::Depthwise {
                weight: folded,
                bias: bias.clone(),
            }
        } else if spec.k == 1 && spec.stride == 1 {
            Kind::Pointwise(weight.reshape((cout, cin_g))?)
        } else {
            Kind::Full
        };
        Ok(Self {
            kind,
            weight,
            bias: Tensor::from_vec(bias, cout, &device)?,
            k: spec.k,
            stride: spec.stride,
            pad: spec.pad,
            relu6: spec.relu6,
        })
    }

    /// Apply to `x` (N, C, H, W), f32, contiguous.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let pad = match self.pad {
            PadRule::Fixed(p) => p,
            PadRule::Same => Padding::same(h, w, self.k, self.stride),
        };
        let y = match &self.kind {
            Kind::Pointwise(wt) => {
                let cout = wt.dim(0)?;
                let y = wt.broadcast_matmul(&x.reshape((n, c, h * w))?)?;
                y.broadcast_add(&self.bias.reshape((cout, 1))?)?
                    .reshape((n, cout, h, w))?
            }
            Kind::Full => {
                let xp = x
                    .pad_with_zeros(2, pad.top, pad.bottom)?
                    .pad_with_zeros(3, pad.left, pad.right)?;
                let y = xp.conv2d(&self.weight, 0, self.stride, 1, 1)?;
                y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)?
            }
            Kind::Depthwise { weight, bias } => {
                let op = Depthwise {
                    weight,
                    bias,
                    k: self.k,
                    stride: self.stride,
                    pad,
                    relu6: self.relu6,
                };
                return Ok(x.contiguous()?.apply_op1_no_bwd(&op)?);
            }
        };
        Ok(if self.relu6 { relu6(&y)? } else { y })
    }
}

/// `min(max(x, 0), 6)`.
pub(crate) fn relu6(x: &Tensor) -> candle_core::Result<Tensor> {
    x.clamp(0f32, 6f32)
}

/// A linear layer (the classifier).
pub(crate) fn linear(vb: &VarBuilder<'_>, name: &str) -> Result<candle_nn::Linear> {
    let w = vb.get_unchecked(&format!("{name}.weight"))?;
    let b = vb.get_unchecked(&format!("{name}.bias"))?;
    Ok(candle_nn::Linear::new(w, Some(b)))
}

/// The depthwise convolution with bias and optional ReLU6, on the CPU.
struct Depthwise<'a> {
    /// (C, k, k).
    weight: &'a [f32],
    bias: &'a [f32],
    k: usize,
    stride: usize,
    pad: Padding,
    relu6: bool,
}

impl Depthwise<'_> {
    /// One channel plane: `src` (h × w) into `out` (ho × wo) with filter `wk` (k × k). Tap
    /// by tap over whole output rows, each tap's valid columns computed once, so that the
    /// inner loop is a bounds-check-free multiply-add along a row (vectorised for stride 1).
    fn plane(&self, src: &[f32], h: usize, w: usize, wk: &[f32], bias: f32, out: &mut [f32]) {
        let (k, s, p) = (self.k, self.stride, self.pad);
        let wo = (w + p.left + p.right - k) / s + 1;
        // The output columns whose input column ox·s + kx − left is inside the row.
        let cols = |kx: usize| -> (usize, usize) {
            let first = p.left.saturating_sub(kx).div_ceil(s);
            let last = (w + p.left).checked_sub(kx + 1).map_or(0, |v| v / s + 1);
            (first.min(wo), last.min(wo))
        };
        let ranges: Vec<(usize, usize)> = (0..k).map(cols).collect();
        for (oy, row) in out.chunks_exact_mut(wo).enumerate() {
            row.fill(bias);
            for ky in 0..k {
                let Some(iy) = (oy * s + ky).checked_sub(p.top).filter(|&iy| iy < h) else {
                    continue;
                };
                let line = &src[iy * w..(iy + 1) * w];
                for (kx, &(first, last)) in ranges.iter().enumerate() {
                    if first >= last {
                        continue;
                    }
                    let t = wk[ky * k + kx];
                    let start = first * s + kx - p.left;
                    let dst = &mut row[first..last];
                    if s == 1 {
                        for (o, x) in dst.iter_mut().zip(&line[start..start + (last - first)]) {
                            *o += x * t;
                        }
                    } else {
                        for (o, x) in dst.iter_mut().zip(line[start..].iter().step_by(s)) {
                            *o += x * t;
                        }
                    }
                }
            }
            if self.relu6 {
                row.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0));
            }
        }
    }
}

impl CustomOp1 for Depthwise<'_> {
    fn name(&self) -> &'static str {
        "depthwise-conv"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("depthwise-conv: f32 input only")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("depthwise-conv: contiguous input only")
        };
        let x = &data[start..end];
        let (n, c, h, w) = layout.shape().dims4()?;
        let (k, s, p) = (self.k, self.stride, self.pad);
        if self.weight.len() != c * k * k || h + p.top + p.bottom < k || w + p.left + p.right < k {
            candle_core::bail!("depthwise-conv: {c} channels of {h}×{w} do not fit the filters")
        }
        let ho = (h + p.top + p.bottom - k) / s + 1;
        let wo = (w + p.left + p.right - k) / s + 1;
        let mut out = vec![0f32; n * c * ho * wo];
        out.par_chunks_mut(ho * wo)
            .enumerate()
            .for_each(|(plane, o)| {
                let ch = plane % c;
                let src = &x[plane * h * w..(plane + 1) * h * w];
                let wk = &self.weight[ch * k * k..(ch + 1) * k * k];
                self.plane(src, h, w, wk, self.bias[ch], o);
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 224 → 112 with a 3×3 stride-2 kernel: one pixel of padding, after.
        assert_eq!(
            Padding::same(224, 224, 3, 2),
            Padding {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1
            }
        );
        // 5×5 stride 2 on 56: three pixels, one before and two after.
        let p = Padding::same(56, 56, 5, 2);
        assert_eq!((p.top, p.bottom), (1, 2));
        // Stride 1 keeps the size: k − 1 split evenly.
        assert_eq!(Padding::same(14, 14, 5, 1), Padding::symmetric(2));
    }

    #[test]
    fn depthwise_equals_grouped_convolution() {
        // The direct loop against candle's grouped convolution on random data, both paddings.
        let dev = Device::Cpu;
        let (n, c, h, w) = (2, 5, 9, 7);
        let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev).unwrap();
        for (k, s) in [(3, 1), (3, 2), (5, 2), (5, 1)] {
            let wt = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev).unwrap();
            let weight = wt.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let bias = vec![0.25f32; c];
            for pad in [Padding::symmetric(k / 2), Padding::same(h, w, k, s)] {
                let op = Depthwise {
                    weight: &weight,
                    bias: &bias,
                    k,
                    stride: s,
                    pad,
                    relu6: false,
                };
                let got = x.apply_op1_no_bwd(&op).unwrap();
                let xp = x
                    .pad_with_zeros(2, pad.top, pad.bottom)
                    .unwrap()
                    .pad_with_zeros(3, pad.left, pad.right)
                    .unwrap();
                let want = (xp.conv2d(&wt, 0, s, 1, c).unwrap() + 0.25).unwrap();
                assert_eq!(got.dims(), want.dims());
                let diff = (got - want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff < 1e-5, "k={k} s={s} {pad:?}: {diff}");
            }
        }
    }
}
