//! The models behind the `moderate` task: the packs a worker loads (an NSFW classifier, a
//! sentence encoder with the policy's phrases embedded once at load) and what they measure
//! for a batch of items. The policy and its decision are pure logic in
//! `fusionstream_core::moderation`; this module only produces [`Signals`].
//!
//! Preparation (any thread, CPU): the image is decoded once for every model of the event by
//! the NSFW pack's decoder (bit-exact with Pillow for JPEG, which open_nsfw is sensitive to;
//! the worker's decoder otherwise) and turned into the classifier's input and the OCR pack's
//! (BGR, longest side at most 2000); texts are tokenized for the sentence encoder. The model
//! thread then runs one NSFW batch, OCR image by image (sizes differ), and one
//! sentence-encoder batch over the events' texts and the texts read in their images.

use std::path::PathBuf;

use candle_core::Device;
use fusionstream_core::moderation::{Signals, Similarity, TextLine, TextSource};
use fusionstream_core::ReasonCode;

use crate::backend::onnx::OnnxOptions;
use crate::error::{ImageError, ModelError, Result};
use crate::packs::nsfw::NsfwClassifier;
use crate::packs::ocr::{OcrInput, OcrReader};
use crate::packs::sentence::SentenceEncoder;
use crate::preprocess::{ImageLimits, RgbImage};

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct ModerationOptions {
    /// Folder of installed packs.
    pub packs_dir: PathBuf,
    /// The NSFW pack (`None`: no NSFW signal).
    pub nsfw_pack: Option<String>,
    /// The sentence-embedding pack (`None`: no similarity signal).
    pub text_pack: Option<String>,
    /// The OCR pack (`None`: no text read in images).
    pub ocr_pack: Option<String>,
    /// Per category, its policy phrases (embedded at load).
    pub phrases: Vec<(String, Vec<String>)>,
    /// ONNX Runtime settings (the NSFW pack runs on it).
    pub onnx: OnnxOptions,
}

/// The default pack folder: `$FUSIONSTREAM_PACKS`, else `$HOME/.cache/fusionstream/packs`.
pub fn default_packs_dir() -> PathBuf {
    std::env::var_os("FUSIONSTREAM_PACKS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/fusionstream/packs")
        })
}

/// One policy phrase and its embedding.
#[derive(Debug)]
struct Phrase {
    category: String,
    text: String,
    embedding: Vec<f32>,
}

/// The loaded moderation models.
#[derive(Debug)]
pub struct ModerationModels {
    nsfw: Option<NsfwClassifier>,
    ocr: Option<OcrReader>,
    encoder: Option<SentenceEncoder>,
    phrases: Vec<Phrase>,
    packs: Vec<String>,
}

/// An item's inputs for the moderation models, prepared on the CPU.
#[derive(Debug, Clone, Default)]
pub struct ModerationInput {
    /// The NSFW classifier's input for the image.
    pub nsfw: Option<Vec<f32>>,
    /// The OCR pack's input for the image.
    pub ocr: Option<OcrInput>,
    /// Token ids of each text to screen by meaning.
    pub texts: Vec<(TextSource, Vec<u32>)>,
    /// Signals that could not be measured, with reason codes.
    pub missing: Vec<(String, String)>,
}

impl ModerationModels {
    /// Load the packs `opts` names (each checked: manifest, files, checksums) and embed the
    /// policy phrases.
    pub fn load(opts: &ModerationOptions) -> Result<Self> {
        let dir = |name: &str| -> PathBuf { opts.packs_dir.join(name) };
        let nsfw = opts
            .nsfw_pack
            .as_deref()
            .map(|p| NsfwClassifier::load(&dir(p), &opts.onnx))
            .transpose()?;
        let ocr = opts
            .ocr_pack
            .as_deref()
            .map(|p| OcrReader::load(&dir(p), &opts.onnx))
            .transpose()?;
        let encoder = opts
            .text_pack
            .as_deref()
            .map(|p| SentenceEncoder::load(&dir(p), &Device::Cpu))
            .transpose()?;
        let mut phrases = Vec::new();
        if let Some(enc) = &encoder {
            for (category, texts) in &opts.phrases {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                for (text, embedding) in texts.iter().zip(enc.embed(&refs)?) {
                    phrases.push(Phrase {
                        category: category.clone(),
                        text: text.clone(),
                        embedding,
                    });
                }
            }
        }
        let packs = [
            opts.nsfw_pack.clone(),
            opts.ocr_pack.clone(),
            opts.text_pack.clone(),
        ]
        .into_iter()
        .flatten()
        .collect();
        Ok(Self {
            nsfw,
            ocr,
            encoder,
            phrases,
            packs,
        })
    }

    /// The packs loaded, by name.
    pub fn packs(&self) -> &[String] {
        &self.packs
    }

    /// What ONNX Runtime allocates beyond the weights for the largest input (the OCR
    /// detector's activations), for the worker's memory bound.
    pub fn max_activation_bytes(&self) -> u64 {
        self.ocr.as_ref().map_or(0, OcrReader::max_activation_bytes)
    }

    /// The most bytes one item's prepared inputs hold (for the worker's memory bound).
    pub fn max_input_bytes(&self) -> u64 {
        let nsfw = self.nsfw.as_ref().map_or(0, |n| n.input_len() as u64 * 4);
        let ocr = self.ocr.as_ref().map_or(0, OcrReader::max_prepared_bytes);
        nsfw + ocr
    }

    /// Decode untrusted image bytes the way the NSFW pack needs them (or with the worker's
    /// decoder when there is none), once for every model of the event.
    pub fn decode(
        &self,
        bytes: &[u8],
        limits: &ImageLimits,
    ) -> std::result::Result<RgbImage, ImageError> {
        match &self.nsfw {
            Some(n) => n.decode(bytes, limits).map_err(|e| match e {
                ModelError::Image(e) => e,
                other => ImageError::Corrupt(other.to_string()),
            }),
            None => crate::preprocess::decode(bytes, limits),
        }
    }

    /// The inputs of an item: `image` decoded (or the reason code it is unusable, `None`
    /// when absent), the event's text and the text read in its image.
    pub fn prepare(
        &self,
        image: Option<std::result::Result<&RgbImage, ReasonCode>>,
        event_text: Option<&str>,
    ) -> Result<ModerationInput> {
        let mut input = ModerationInput::default();
        if let Some(n) = &self.nsfw {
            match image {
                Some(Ok(img)) => input.nsfw = Some(n.prepare(img)?),
                Some(Err(code)) => input.missing.push(("nsfw".into(), code.as_str().into())),
                None => input.missing.push(("nsfw".into(), "image_absent".into())),
            }
        }
        if let Some(o) = &self.ocr {
            match image {
                Some(Ok(img)) => input.ocr = Some(o.prepare(img)?),
                Some(Err(code)) => input
                    .missing
                    .push(("image_text".into(), code.as_str().into())),
                None => input
                    .missing
                    .push(("image_text".into(), "image_absent".into())),
            }
        }
        if let Some(enc) = &self.encoder {
            if !self.phrases.is_empty() {
                match event_text {
                    Some(t) => input.texts.push((TextSource::EventText, enc.tokenize(t)?)),
                    None => input
                        .missing
                        .push(("text_similarity".into(), "text_absent".into())),
                }
            }
        }
        Ok(input)
    }

    /// Signals of a batch of items (the model thread): one NSFW batch, one encoder batch.
    pub fn signals(&self, items: &[&ModerationInput]) -> Result<Vec<Signals>> {
        let mut out: Vec<Signals> = items
            .iter()
            .map(|i| Signals {
                missing: i
                    .missing
                    .iter()
                    .map(|(s, r)| fusionstream_core::moderation::Missing {
                        signal: s.clone(),
                        reason: r.clone(),
                    })
                    .collect(),
                ..Signals::default()
            })
            .collect();
        if let Some(n) = &self.nsfw {
            let rows: Vec<usize> = (0..items.len())
                .filter(|&i| items[i].nsfw.is_some())
                .collect();
            let inputs: Vec<&[f32]> = rows
                .iter()
                .filter_map(|&i| items[i].nsfw.as_deref())
                .collect();
            for (&i, s) in rows.iter().zip(n.scores(&inputs)?) {
                out[i].nsfw = Some(s);
            }
        }
        // Text in the images, one image at a time (their sizes differ).
        if let Some(o) = &self.ocr {
            for (i, item) in items.iter().enumerate() {
                if let Some(input) = &item.ocr {
                    let lines = o.run(input)?;
                    if !lines.is_empty() {
                        let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
                        out[i].image_text = Some(text.join("\n"));
                    }
                    out[i].image_text_lines = lines
                        .into_iter()
                        .map(|l| TextLine {
                            text: l.text,
                            score: l.score,
                            bbox: l.bbox,
                        })
                        .collect();
                }
            }
        }
        if let Some(enc) = &self.encoder {
            let mut at = Vec::new();
            let mut ids = Vec::new();
            for (i, item) in items.iter().enumerate() {
                for (source, t) in &item.texts {
                    at.push((i, *source));
                    ids.push(t.clone());
                }
                if let (Some(text), false) = (&out[i].image_text, self.phrases.is_empty()) {
                    at.push((i, TextSource::ImageText));
                    ids.push(enc.tokenize(text)?);
                }
            }
            for ((i, source), e) in at.into_iter().zip(enc.embed_ids(&ids)?) {
                out[i].similarity.extend(self.best_per_category(&e, source));
            }
        }
        Ok(out)
    }

    /// The best phrase of each category for one embedded text.
    fn best_per_category(&self, e: &[f32], source: TextSource) -> Vec<Similarity> {
        let mut best: Vec<Similarity> = Vec::new();
        for p in &self.phrases {
            let score: f32 = e.iter().zip(&p.embedding).map(|(a, b)| a * b).sum();
            match best.iter_mut().find(|b| b.category == p.category) {
                Some(b) if b.score >= score => {}
                Some(b) => {
                    b.score = score;
                    b.phrase.clone_from(&p.text);
                }
                None => best.push(Similarity {
                    source,
                    category: p.category.clone(),
                    score,
                    phrase: p.text.clone(),
                }),
            }
        }
        best
    }
}
