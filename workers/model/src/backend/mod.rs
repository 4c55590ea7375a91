//! The backend seams, at two levels:
//!
//! - [`Backend`]: the model as the worker's engine sees it, a synchronous batch-in /
//!   batch-out trait. The engine runs one on its model thread (with the failure isolation
//!   around each call): forward passes never run on async runtime threads.
//!   [`FusionModel`] is the production backend; tests drive the engine with their own (one
//!   that fails, panics or runs out of memory on cue).
//! - What the runtime asks of a bundle part, whichever library runs it.
//!   [`FusionModel`] keeps the API, the modality routing, the fusion head, the tags and the
//!   generation loop; a part's forward passes go through one of two traits, implemented by
//!   candle ([`CandleDualEncoder`], [`CandleBlip`]) and by ONNX Runtime ([`onnx`]), chosen
//!   per part at load ([`BackendKind`]).
//!
//! - [`DualEncoderBackend`]: CLIP / SigLIP image and text embeddings (L2-normalised rows).
//! - [`BlipBackend`]: BLIP vision states, then generation from them (captions), or from the
//!   questions encoded against them (VQA). Generation is [`crate::generate`]'s greedy and beam
//!   search over the backend's [`crate::generate::StepDecoder`].
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the traits, what crosses them ([`Prepared`], [`InferOutput`], [`PixelBatch`], [`EncoderStates`]) |
//! | `candle.rs` | the parts on candle |
//! | `onnx/` | the parts on ONNX Runtime: sessions and graphs (`mod.rs`), CLIP (`clip.rs`), BLIP and its decoder steps (`blip.rs`) |

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::generate::GenerationParams;
use crate::moderation::ModerationInput;
use crate::pdq::Pdq;
use crate::preprocess::Pixels;
use crate::runtime::{FusionModel, Signals, Skipped, Tag, TaskSet};

mod candle;
pub mod onnx;

pub use candle::{CandleBlip, CandleDualEncoder};

/// Outputs for one item; fields that do not apply are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InferOutput {
    /// L2-normalised CLIP image embedding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_embedding: Option<Vec<f32>>,
    /// L2-normalised CLIP text embedding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_embedding: Option<Vec<f32>>,
    /// Gated fusion of the two (defined when either is present).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fused_embedding: Option<Vec<f32>>,
    /// Cosine similarity of image and text embeddings, in [-1, 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_score: Option<f32>,
    /// Generated caption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Generated answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Tags at or above the bundle's threshold, best first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    /// What the moderation models measured (the policy decides later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moderation: Option<Signals>,
    /// The image's PDQ hash (task `hash`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdq: Option<Pdq>,
    /// Labels of the `image_classifier` pack (task `tag`, with `[tags] packs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_tags: Option<Vec<crate::photo::PackTag>>,
    /// The `image_embedding` pack's unit-length vector (task `embed`, with
    /// `[embeddings] photo_pack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photo_embedding: Option<Vec<f32>>,
    /// The CLIP image embedding of a `moderate` item, for known-embedding lists (see
    /// [`FusionModel::with_list_embeddings`]); not an output of its own.
    #[serde(skip)]
    pub list_embedding: Option<Vec<f32>>,
    /// The photo embedding of a `moderate` item, for known lists of photo embeddings; not
    /// an output of its own.
    #[serde(skip)]
    pub list_photo_embedding: Option<Vec<f32>>,
    /// Requested tasks that produced nothing, with reasons.
    pub skipped: Vec<Skipped>,
}

/// An image decoded once and preprocessed for every vision model of the bundle.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// One entry per distinct preprocessor of the bundle.
    pub(crate) pixels: Vec<Arc<Pixels>>,
}

impl PreparedImage {
    /// Pixels over every preprocessed copy (what the image costs a batch).
    pub fn pixel_count(&self) -> u64 {
        self.pixels
            .iter()
            .map(|p| (p.height * p.width) as u64)
            .sum()
    }
}

/// An item ready for the model thread: CPU work done.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The image, if the item has a usable one.
    pub image: Option<PreparedImage>,
    /// CLIP token ids of the text.
    pub text: Option<Vec<u32>>,
    /// VQA token ids of the question.
    pub question: Option<Vec<u32>>,
    /// Requested tasks.
    pub tasks: TaskSet,
    /// The moderation models' inputs, when the item asks for `moderate`.
    pub moderation: Option<ModerationInput>,
    /// The image's PDQ hash, computed while preprocessing, when the item asks for `hash`.
    pub pdq: Option<Pdq>,
    /// The photo packs' inputs, when the item has an image and asks for `tag` or `embed`.
    pub photo: Option<crate::photo::PhotoInput>,
}

/// Anything that runs a batch of prepared items.
pub trait Backend: std::fmt::Debug + Send + Sync + 'static {
    /// Run one batch; one output per item, in order.
    fn infer_batch(&self, items: &[Prepared]) -> Result<Vec<InferOutput>>;
}

impl Backend for FusionModel {
    fn infer_batch(&self, items: &[Prepared]) -> Result<Vec<InferOutput>> {
        FusionModel::infer_batch(self, items)
    }
}

impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn infer_batch(&self, items: &[Prepared]) -> Result<Vec<InferOutput>> {
        (**self).infer_batch(items)
    }
}

/// Which library runs a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// candle (CPU, or CUDA with the `cuda` feature).
    Candle,
    /// ONNX Runtime through `ort`, on the exported graphs of the part.
    Onnx,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Candle => "candle",
            BackendKind::Onnx => "onnx",
        })
    }
}

/// A batch of images for a vision tower: `n` × 3 × `height` × `width` f32, row-major.
#[derive(Debug, Clone)]
pub struct PixelBatch {
    /// The values.
    pub data: Vec<f32>,
    /// Images.
    pub n: usize,
    /// Height of every image.
    pub height: usize,
    /// Width of every image.
    pub width: usize,
}

/// Encoder states of a batch (B, S, D), where the backend keeps them.
#[derive(Debug, Clone)]
pub enum EncoderStates {
    /// A candle tensor (on the model's device, in its dtype).
    Tensor(Tensor),
    /// Host memory, f32, row-major.
    Host {
        /// The values.
        data: Vec<f32>,
        /// (B, S, D).
        shape: [usize; 3],
    },
}

impl EncoderStates {
    /// Rows (B).
    pub fn rows(&self) -> usize {
        match self {
            EncoderStates::Tensor(t) => t.dims().first().copied().unwrap_or(0),
            EncoderStates::Host { shape, .. } => shape[0],
        }
    }

    /// The states as f32 on the host, row-major, and their (B, S, D) shape: borrowed when
    /// they already are, copied from a tensor.
    pub fn to_host(&self) -> Result<(Cow<'_, [f32]>, [usize; 3])> {
        match self {
            EncoderStates::Tensor(t) => {
                let (b, s, d) = t.dims3()?;
                let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                Ok((Cow::Owned(data), [b, s, d]))
            }
            EncoderStates::Host { data, shape } => Ok((Cow::Borrowed(data), *shape)),
        }
    }

    /// The states of some rows, in the order given.
    pub fn select(&self, rows: &[usize]) -> Result<Self> {
        Ok(match self {
            EncoderStates::Tensor(t) => {
                let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
                let idx = Tensor::from_vec(idx, rows.len(), t.device())?;
                EncoderStates::Tensor(t.index_select(&idx, 0)?)
            }
            EncoderStates::Host { data, shape } => {
                let per = shape[1] * shape[2];
                let mut out = Vec::with_capacity(rows.len() * per);
                for &r in rows {
                    if r >= shape[0] {
                        return Err(ModelError::Input(format!("row {r} of {}", shape[0])));
                    }
                    out.extend_from_slice(&data[r * per..(r + 1) * per]);
                }
                EncoderStates::Host {
                    data: out,
                    shape: [rows.len(), shape[1], shape[2]],
                }
            }
        })
    }
}

/// CLIP / SigLIP embeddings.
pub trait DualEncoderBackend: fmt::Debug + Send + Sync {
    /// Which library runs it.
    fn kind(&self) -> BackendKind;
    /// L2-normalised image embeddings, one row per image.
    fn image_embeddings(&self, px: &PixelBatch) -> Result<Vec<Vec<f32>>>;
    /// L2-normalised text embeddings, one row per token sequence (unpadded, any lengths).
    fn text_embeddings(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
}

/// BLIP captioning or VQA.
pub trait BlipBackend: fmt::Debug + Send + Sync {
    /// Which library runs it.
    fn kind(&self) -> BackendKind;
    /// Vision tower states (after the post-LayerNorm), one row per image.
    fn image_states(&self, px: &PixelBatch) -> Result<EncoderStates>;
    /// Generate from the decoder's BOS: a caption of each row of `states`, or (VQA, with
    /// `questions`, one per row) an answer to each question about its image. Returns the
    /// token ids of each row, prompt included.
    fn generate(
        &self,
        states: &EncoderStates,
        questions: Option<&[Vec<u32>]>,
        params: &GenerationParams,
    ) -> Result<Vec<Vec<u32>>>;
}

/// Right-pad token sequences (`pad`) into a row-major (B, T) i64 batch and its 0/1 mask.
pub(crate) fn pad_ids(seqs: &[Vec<u32>], pad: u32) -> Result<(Vec<i64>, Vec<i64>, usize)> {
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    if seqs.is_empty() || t == 0 {
        return Err(ModelError::Input("empty token batch".into()));
    }
    let mut ids = vec![i64::from(pad); seqs.len() * t];
    let mut mask = vec![0i64; seqs.len() * t];
    for (row, s) in seqs.iter().enumerate() {
        for (j, &x) in s.iter().enumerate() {
            ids[row * t + j] = i64::from(x);
            mask[row * t + j] = 1;
        }
    }
    Ok((ids, mask, t))
}

/// L2-normalise each row in place (a zero row stays zero).
pub(crate) fn l2_normalize_rows(rows: &mut [Vec<f32>]) {
    for r in rows {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|x| *x /= n);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn host_states_select_rows_in_order() {
        let s = EncoderStates::Host {
            data: (0..12).map(|x| x as f32).collect(),
            shape: [3, 2, 2],
        };
        let EncoderStates::Host { data, shape } = s.select(&[2, 0]).unwrap() else {
            panic!("host states stay on the host")
        };
        assert_eq!(shape, [2, 2, 2]);
        assert_eq!(data, vec![8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0]);
        assert!(s.select(&[3]).is_err());
    }

    #[test]
    fn states_reach_the_host_as_f32_rows_from_either_side() {
        let data: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let host = EncoderStates::Host {
            data: data.clone(),
            shape: [3, 2, 2],
        };
        let t = Tensor::from_vec(data.clone(), (3, 2, 2), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F16))
            .unwrap();
        for s in [host, EncoderStates::Tensor(t)] {
            let (got, shape) = s.to_host().unwrap();
            assert_eq!((got.as_ref(), shape), (data.as_slice(), [3, 2, 2]));
        }
    }

    #[test]
    fn padding_and_masks() {
        let (ids, mask, t) = pad_ids(&[vec![5, 6, 7], vec![8]], 0).unwrap();
        assert_eq!(t, 3);
        assert_eq!(ids, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(mask, vec![1, 1, 1, 1, 0, 0]);
        assert!(pad_ids(&[], 0).is_err());
    }
}
