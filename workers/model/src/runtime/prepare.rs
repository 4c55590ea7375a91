//! The CPU side, on any thread: an image decoded once and preprocessed for every vision model
//! of the bundle, texts and questions tokenised, a whole item [`Prepared`] with its moderation
//! and photo packs' inputs and PDQ hash.

use std::sync::Arc;

use super::FusionModel;
use crate::backend::{Prepared, PreparedImage};
use crate::error::{ImageError, Result};
use crate::preprocess::{self, DecodeOptions};
use crate::tokenize::Tokens;
use fusionstream_core::task::{Task, TaskSet};

impl FusionModel {
    /// Bytes of one image's preprocessed pixels, over every vision preprocessor of the
    /// bundle (f32, three channels, at each model's input size): what a prepared image
    /// holds while it waits for the model.
    pub fn prepared_image_bytes(&self) -> u64 {
        self.preprocessors
            .iter()
            .map(|p| {
                // Every vision model takes a square input (checked at load).
                let s = match p.config().crop {
                    Some((h, w)) => h.max(w),
                    None => {
                        let (h, w) = p.config().resized_size(1, 1);
                        h.max(w)
                    }
                };
                12 * u64::from(s) * u64::from(s)
            })
            .sum()
    }

    /// Decode an image once and preprocess it for every vision model of the bundle.
    pub fn prepare_image(&self, bytes: &[u8]) -> Result<PreparedImage, ImageError> {
        // The largest size any vision model needs after its resize, per axis.
        let need = |h: u32, w: u32| {
            self.preprocessors
                .iter()
                .map(|p| p.config().resized_size(h, w))
                .fold((1, 1), |a, b| (a.0.max(b.0), a.1.max(b.1)))
        };
        let rgb = preprocess::decode_for(bytes, &self.decode, Some(&need))?;
        self.prepare_decoded(&rgb)
    }

    /// Preprocess an image decoded elsewhere (the moderation packs' decoder, shared by every
    /// model of the event) for every vision model of the bundle.
    pub fn prepare_decoded(&self, rgb: &preprocess::RgbImage) -> Result<PreparedImage, ImageError> {
        let pixels = self
            .preprocessors
            .iter()
            .map(|p| p.apply(rgb).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreparedImage { pixels })
    }

    /// CLIP token ids of a text (`None` when the bundle has no text encoder).
    pub fn prepare_text(&self, text: &str) -> Result<Option<Vec<u32>>> {
        Ok(self.tokenize_text(text)?.map(|t| t.ids))
    }

    /// CLIP tokens of a text, saying whether it was cut to the model's positions.
    pub fn tokenize_text(&self, text: &str) -> Result<Option<Tokens>> {
        self.clip
            .as_ref()
            .map(|c| c.tokenizer.encode_cut(text))
            .transpose()
    }

    /// VQA token ids of a question (`None` when the bundle has no VQA model).
    pub fn prepare_question(&self, question: &str) -> Result<Option<Vec<u32>>> {
        Ok(self.tokenize_question(question)?.map(|t| t.ids))
    }

    /// VQA tokens of a question, saying whether it was cut to the model's positions.
    pub fn tokenize_question(&self, question: &str) -> Result<Option<Tokens>> {
        self.vqa
            .as_ref()
            .map(|v| v.tokenizer.encode_cut(question))
            .transpose()
    }

    /// How images are decoded (limits, DCT scaling).
    pub fn decode_options(&self) -> &DecodeOptions {
        &self.decode
    }

    /// Prepare a whole item; an unusable image is an error here (the pipeline degrades
    /// instead by preparing without it).
    pub fn prepare(
        &self,
        image: Option<&[u8]>,
        text: Option<&str>,
        question: Option<&str>,
        tasks: TaskSet,
    ) -> Result<Prepared> {
        let text_ids = match text {
            Some(t) => self.prepare_text(t)?,
            None => None,
        };
        let question_ids = match question {
            Some(q) => self.prepare_question(q)?,
            None => None,
        };
        let moderate = self.moderation.is_some() && tasks.contains(Task::Moderate);
        let photo = self.photo_work(tasks);
        let (image, moderation, pdq, photo) =
            if moderate || photo.is_some() || tasks.contains(Task::Hash) {
                // One decode, as Pillow decodes (the packs' and PDQ's reference pixels), for
                // every model.
                let limits = &self.decode.limits;
                let rgb = image
                    .map(|b| match (&self.moderation, moderate) {
                        (Some(m), true) => m.decode(b, limits),
                        _ => crate::preprocess::decode_like_pillow(b, limits),
                    })
                    .transpose()?;
                let moderation = match (&self.moderation, moderate) {
                    (Some(m), true) => Some(m.prepare(rgb.as_ref().map(Ok), text)?),
                    _ => None,
                };
                let photo = match (photo, &rgb) {
                    (Some((p, tag, embed)), Some(r)) => Some(p.prepare(r, tag, embed)),
                    _ => None,
                };
                (
                    rgb.as_ref().map(|r| self.prepare_decoded(r)).transpose()?,
                    moderation,
                    rgb.as_ref()
                        .filter(|_| tasks.contains(Task::Hash))
                        .map(crate::pdq::hash_image),
                    photo,
                )
            } else {
                (
                    image.map(|b| self.prepare_image(b)).transpose()?,
                    None,
                    None,
                    None,
                )
            };
        Ok(Prepared {
            image,
            text: text_ids,
            question: question_ids,
            tasks,
            moderation,
            pdq,
            photo,
        })
    }
}
