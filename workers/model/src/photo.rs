//! The photo packs a worker loads beside the bundle: an `image_classifier` pack whose labels
//! join an item's tags (`[tags] packs`, e.g. `imagenet`: "tabby", "espresso") and an
//! `image_embedding` pack whose vector goes on its embeddings record as `photo_embedding`
//! (e.g. `photo_embedding`: MobileNetV2 features, for near duplicates of real photos).
//!
//! Preparation (any thread, CPU): the image decoded as Pillow decodes it (the packs'
//! references), then each pack's own input ([`PhotoInput`]). The model thread runs one batch
//! per pack over the items that ask for it ([`PhotoPacks::run`]).

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;
use serde::Serialize;

use crate::error::Result;
use crate::packs::classifier::ImageClassifier;
use crate::packs::photo_embedding::PhotoEmbedder;
use crate::preprocess::RgbImage;

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct PhotoOptions {
    /// Folder of installed packs.
    pub packs_dir: PathBuf,
    /// The `image_classifier` pack whose labels become tags (`None`: none).
    pub classifier: Option<String>,
    /// Labels kept per image, most probable first.
    pub top_k: usize,
    /// Least probability of a label kept.
    pub min_score: f32,
    /// The `image_embedding` pack (`None`: no photo embedding).
    pub embedder: Option<String>,
}

/// A tag from a pack: `{label, score, source}` with the pack's name as its source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackTag {
    /// Class name.
    pub label: String,
    /// Its probability.
    pub score: f32,
    /// The pack's name.
    pub source: String,
}

impl PackTag {
    /// The label as the moderation policy reads it.
    pub fn to_image_label(&self) -> fusionstream_core::moderation::ImageLabel {
        fusionstream_core::moderation::ImageLabel {
            label: self.label.clone(),
            score: self.score,
            source: self.source.clone(),
        }
    }
}

/// An item's inputs for the photo packs, prepared on the CPU.
#[derive(Debug, Clone, Default)]
pub struct PhotoInput {
    /// The classifier's input, when the item asks for tags.
    pub classifier: Option<Arc<Vec<f32>>>,
    /// The embedder's input, when the item asks for embeddings.
    pub embedder: Option<Arc<Vec<f32>>>,
}

/// What the photo packs gave an item.
#[derive(Debug, Clone, Default)]
pub struct PhotoOutput {
    /// The classifier's labels (empty when it did not run or kept none).
    pub tags: Option<Vec<PackTag>>,
    /// The unit-length photo embedding.
    pub embedding: Option<Vec<f32>>,
}

/// The loaded photo packs.
#[derive(Debug)]
pub struct PhotoPacks {
    classifier: Option<ImageClassifier>,
    embedder: Option<PhotoEmbedder>,
    top_k: usize,
    min_score: f32,
}

impl PhotoPacks {
    /// Load the packs `opts` names (each checked: manifest, files, checksums), on the CPU.
    pub fn load(opts: &PhotoOptions) -> Result<Self> {
        let dir = |name: &str| opts.packs_dir.join(name);
        let classifier = opts
            .classifier
            .as_deref()
            .map(|p| ImageClassifier::load(&dir(p), &Device::Cpu))
            .transpose()?;
        let embedder = opts
            .embedder
            .as_deref()
            .map(|p| PhotoEmbedder::load(&dir(p), &Device::Cpu))
            .transpose()?;
        Ok(Self {
            classifier,
            embedder,
            top_k: opts.top_k,
            min_score: opts.min_score,
        })
    }

    /// The packs loaded, by name.
    pub fn names(&self) -> Vec<String> {
        let c = self.classifier.as_ref().map(|c| c.name().to_owned());
        let e = self.embedder.as_ref().map(|e| e.name().to_owned());
        c.into_iter().chain(e).collect()
    }

    /// Whether labels become tags.
    pub fn tags(&self) -> bool {
        self.classifier.is_some()
    }

    /// Whether items get a photo embedding.
    pub fn embeds(&self) -> bool {
        self.embedder.is_some()
    }

    /// Width of the photo embedding.
    pub fn embedding_dim(&self) -> Option<usize> {
        self.embedder.as_ref().map(PhotoEmbedder::dim)
    }

    /// The most bytes one item's prepared inputs hold (for the worker's memory bound).
    pub fn max_input_bytes(&self) -> u64 {
        let c = self.classifier.as_ref().map_or(0, |c| c.input_len());
        let e = self.embedder.as_ref().map_or(0, |e| e.input_len());
        4 * (c + e) as u64
    }

    /// The inputs of a decoded image for the packs the item asks for (`tag`: the classifier,
    /// `embed`: the embedder).
    pub fn prepare(&self, img: &RgbImage, tag: bool, embed: bool) -> PhotoInput {
        PhotoInput {
            classifier: self
                .classifier
                .as_ref()
                .filter(|_| tag)
                .map(|c| Arc::new(c.prepare(img))),
            embedder: self
                .embedder
                .as_ref()
                .filter(|_| embed)
                .map(|e| Arc::new(e.prepare(img))),
        }
    }

    /// Run each pack once over the items that have its input; one output per item.
    pub fn run(&self, items: &[Option<&PhotoInput>]) -> Result<Vec<PhotoOutput>> {
        let mut out = vec![PhotoOutput::default(); items.len()];
        if let Some(c) = &self.classifier {
            let (rows, inputs) = gather(items, |p| p.classifier.as_ref());
            if !rows.is_empty() {
                let labels = c.classify(&inputs, self.top_k, self.min_score)?;
                for (i, l) in rows.into_iter().zip(labels) {
                    out[i].tags = Some(
                        l.into_iter()
                            .map(|l| PackTag {
                                label: l.label,
                                score: l.score,
                                source: c.name().to_owned(),
                            })
                            .collect(),
                    );
                }
            }
        }
        if let Some(e) = &self.embedder {
            let (rows, inputs) = gather(items, |p| p.embedder.as_ref());
            if !rows.is_empty() {
                for (i, v) in rows.into_iter().zip(e.embed(&inputs)?) {
                    out[i].embedding = Some(v);
                }
            }
        }
        Ok(out)
    }
}

/// The items (indices) with an input, and those inputs.
fn gather<'a>(
    items: &[Option<&'a PhotoInput>],
    input: impl Fn(&'a PhotoInput) -> Option<&'a Arc<Vec<f32>>>,
) -> (Vec<usize>, Vec<&'a [f32]>) {
    items
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.and_then(&input).map(|v| (i, v.as_slice())))
        .unzip()
}
