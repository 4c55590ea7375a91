//! Tokenisation with the `tokenizers` crate from a model's `tokenizer.json`: special tokens
//! added by the tokenizer's own post-processor, truncation to the model's position limit
//! (specials kept; [`Tokens::truncated`] says it happened, for the pipeline to report), no
//! padding (the models pad batches themselves and mask the padding).

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{ModelError, Result};

/// A text's token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The ids, special tokens included, at most the sequence limit.
    pub ids: Vec<u32>,
    /// Whether the text had more tokens than the limit (the ids hold the first ones).
    pub truncated: bool,
}

/// A tokenizer bound to a model's sequence limit.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
}

impl TextTokenizer {
    /// Load `tokenizer.json`, truncating encodings to `max_len` tokens (specials included).
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(Self { inner, max_len })
    }

    /// Longest encoding produced.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids of `text`, with the special tokens of the tokenizer's template.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_cut(text).map(|t| t.ids)
    }

    /// Token ids of `text` and whether they were cut to the sequence limit.
    pub fn encode_cut(&self, text: &str) -> Result<Tokens> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(Tokens {
            ids: enc.get_ids().to_vec(),
            truncated: !enc.get_overflowing().is_empty(),
        })
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Id of a token of the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
