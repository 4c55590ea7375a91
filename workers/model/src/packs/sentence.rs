//! `sentence_embedding` packs: a BERT sentence encoder as sentence-transformers runs it —
//! all-MiniLM-L6-v2 (`packs/minilm/pack.toml`) on candle: the pack's WordPiece
//! `tokenizer.json` (inputs cut to `max_seq_length` tokens, specials included), `BertModel`,
//! the mean of the token states over the real tokens, L2 normalisation. The text-screening
//! signal of moderation compares these vectors with policy phrases by cosine.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::Pack;
use crate::error::{ModelError, Result};
use crate::models::bert::{mean_pool, BertConfig, BertModel};
use crate::nn;
use crate::tokenize::TextTokenizer;

#[derive(Debug, Deserialize)]
struct Sections {
    model: ModelSection,
}

#[derive(Debug, Deserialize)]
struct ModelSection {
    config: String,
    weights: String,
    tokenizer: String,
    max_seq_length: usize,
    pooling: String,
    normalize: bool,
}

/// A loaded `sentence_embedding` pack.
#[derive(Debug)]
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: TextTokenizer,
    normalize: bool,
    dim: usize,
    name: String,
    device: Device,
}

impl SentenceEncoder {
    /// Open the pack in `dir` (checked: manifest, files, checksums) and load it in f32 on
    /// `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let pack = Pack::open(dir, "sentence_embedding")?;
        let s: Sections = pack.sections()?;
        let manifest = dir.join("pack.toml");
        if s.model.pooling != "mean" {
            return Err(ModelError::config(
                &manifest,
                format!(
                    "pooling {:?} is not supported (only \"mean\")",
                    s.model.pooling
                ),
            ));
        }
        let config = BertConfig::from_file(&pack.file(&s.model.config)?)?;
        if s.model.max_seq_length == 0 || s.model.max_seq_length > config.max_position_embeddings {
            return Err(ModelError::config(
                &manifest,
                format!(
                    "max_seq_length {} must be 1..={} (the model's positions)",
                    s.model.max_seq_length, config.max_position_embeddings
                ),
            ));
        }
        let vb = nn::load_weights(&pack.file(&s.model.weights)?, DType::F32, device)?;
        let model = BertModel::new(vb, &config)?;
        let tokenizer =
            TextTokenizer::from_file(&pack.file(&s.model.tokenizer)?, s.model.max_seq_length)?;
        Ok(Self {
            model,
            tokenizer,
            normalize: s.model.normalize,
            dim: config.hidden_size,
            name: pack.manifest.name,
            device: device.clone(),
        })
    }

    /// The pack's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Width of an embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Token ids of `text`, cut to the pack's limit (CPU work, any thread).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// Embeddings of tokenized texts, one batch (right-padded to the longest).
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let t = lens.iter().copied().max().unwrap_or(0).max(1);
        let mut flat = Vec::with_capacity(ids.len() * t);
        for row in ids {
            flat.extend_from_slice(row);
            flat.resize(flat.len() + t - row.len(), 0);
        }
        let ids_t = Tensor::from_vec(flat, (ids.len(), t), &self.device)?;
        let states = self.model.forward(&ids_t, &lens)?;
        let pooled = mean_pool(&states, &lens)?;
        let pooled = if self.normalize {
            nn::l2_normalize(&pooled)?
        } else {
            pooled
        };
        Ok(pooled.to_dtype(DType::F32)?.to_vec2()?)
    }

    /// Embeddings of `texts`, one batch.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        self.embed_ids(&ids)
    }
}
