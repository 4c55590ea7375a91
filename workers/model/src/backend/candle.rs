//! The parts' forward passes on candle: [`CandleDualEncoder`] (CLIP, SigLIP) and
//! [`CandleBlip`] (captioning, VQA), over the architectures of [`crate::models`].

use candle_core::{DType, Device, Tensor};

use super::{BackendKind, BlipBackend, DualEncoderBackend, EncoderStates, PixelBatch};
use crate::error::{ModelError, Result};
use crate::generate::{self, GenerationParams};
use crate::models::blip::{BlipCaptioner, BlipVqa};
use crate::models::clip::ClipModel;
use crate::models::siglip::SiglipModel;

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?.to_vec2()?)
}

fn pixels_tensor(px: &PixelBatch, device: &Device, dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_slice(&px.data, (px.n, 3, px.height, px.width), device)?.to_dtype(dtype)?)
}

/// The dual encoder on candle.
#[derive(Debug)]
pub enum CandleDualEncoder {
    /// CLIP.
    Clip(ClipModel, Device, DType),
    /// SigLIP.
    Siglip(SiglipModel, Device, DType),
}

impl DualEncoderBackend for CandleDualEncoder {
    fn kind(&self) -> BackendKind {
        BackendKind::Candle
    }

    fn image_embeddings(&self, px: &PixelBatch) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Clip(m, d, t) => rows(&m.image_embeddings(&pixels_tensor(px, d, *t)?)?),
            Self::Siglip(m, d, t) => rows(&m.image_embeddings(&pixels_tensor(px, d, *t)?)?),
        }
    }

    fn text_embeddings(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Clip(m, d, _) => rows(&m.text_embeddings(ids, d)?),
            Self::Siglip(m, d, _) => rows(&m.text_embeddings(ids, d)?),
        }
    }
}

/// BLIP on candle.
#[derive(Debug)]
pub enum CandleBlip {
    /// Captioning.
    Caption(BlipCaptioner, Device, DType),
    /// Question answering.
    Vqa(BlipVqa, Device, DType),
}

impl BlipBackend for CandleBlip {
    fn kind(&self) -> BackendKind {
        BackendKind::Candle
    }

    fn image_states(&self, px: &PixelBatch) -> Result<EncoderStates> {
        let (vision, d, t) = match self {
            Self::Caption(m, d, t) => (&m.vision, d, t),
            Self::Vqa(m, d, t) => (&m.vision, d, t),
        };
        Ok(EncoderStates::Tensor(
            vision.forward(&pixels_tensor(px, d, *t)?)?,
        ))
    }

    fn generate(
        &self,
        states: &EncoderStates,
        questions: Option<&[Vec<u32>]>,
        params: &GenerationParams,
    ) -> Result<Vec<Vec<u32>>> {
        let (d, t) = match self {
            Self::Caption(_, d, t) | Self::Vqa(_, d, t) => (d, *t),
        };
        let states = match states {
            EncoderStates::Tensor(x) => x.clone(),
            EncoderStates::Host { data, shape } => {
                Tensor::from_slice(data, (shape[0], shape[1], shape[2]), d)?.to_dtype(t)?
            }
        };
        let b = states.dim(0)?;
        match (self, questions) {
            (Self::Caption(m, ..), None) => {
                let cache = m.decoder.start(&states, None)?;
                let prompt = [m.text_config.bos_token_id];
                generate::generate(&m.decoder, cache, &prompt, b, params)
            }
            (Self::Vqa(m, ..), Some(qs)) => {
                let q_states = m.encode_questions(&states, qs, d)?;
                let lens: Vec<usize> = qs.iter().map(Vec::len).collect();
                let cache = m.decoder.start(&q_states, Some(&lens))?;
                let prompt = [m.text_config.bos_token_id];
                generate::generate(&m.decoder, cache, &prompt, b, params)
            }
            (Self::Caption(..), Some(_)) => Err(ModelError::Input(
                "a captioning model takes no questions".into(),
            )),
            (Self::Vqa(..), None) => Err(ModelError::Input("VQA needs questions".into())),
        }
    }
}
