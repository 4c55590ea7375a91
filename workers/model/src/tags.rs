//! Tags: which of the bundle's labels an image or a text shows.
//!
//! Two rules, chosen by `bundle.toml`'s `[tags]`:
//!
//! - **Calibrated heads** (`head = "tags/head.safetensors"`): per source (an image; a
//!   text-only item's text), a linear score per label on that source's features and a
//!   logistic, `score = sigmoid(s_label + b_label)`; a label is a tag when its score reaches
//!   that label's threshold (`[tags.image] threshold = [...]`, `[tags.text]`). Every label is
//!   its own yes/no decision, so a scene with a red cross and a blue circle can get all four
//!   tags. What `s_label` reads is the source's `source` ([`TagFeatures`]):
//!   - `embedding`: `w_label · e`, the dual encoder's embedding (tensors `{source}.weight`
//!     (L, P), `{source}.bias` (L));
//!   - `caption_patches` (images): `max_p w_label · h_p` over the captioner's vision states,
//!     one per patch (the CLS state left out): a label is in the scene when some patch shows
//!     it (`image.weight` (L, D), `image.bias`);
//!   - `tokens` (texts): `max_i token[id_i] + position[i]`, tables of the linear head on the
//!     text encoder's input embeddings (`text.token` (V, L), `text.position` (P, L),
//!     `text.bias`): no model runs for it.
//!
//!   `models/tags.py` fits the heads and the thresholds on generated splits.
//! - **Zero-shot prompts** (no head): the label prompts' embeddings scored against the
//!   embedding by the dual encoder's own rule (CLIP's softmax over labels, SigLIP's sigmoid),
//!   one `threshold` for every label: what a real CLIP or SigLIP checkpoint gives unchanged.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

pub use crate::bundle::TagFeatures;
use crate::bundle::TagHeadSpec;
use crate::error::{ModelError, Result};

/// Which modality a tag was scored from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagSource {
    /// From the image.
    Image,
    /// From the text (text-only items).
    Text,
}

/// A tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    /// Label from the bundle.
    pub label: String,
    /// The label's score: its calibrated probability (a bundle with a tag head), or the
    /// zero-shot probability (softmax over the labels for CLIP, a sigmoid per label for SigLIP).
    pub score: f32,
    /// Modality it was scored from.
    pub source: TagSource,
}

/// What one item gives a tag rule: the features its source's head reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TagInput<'a> {
    /// An embedding.
    Embedding(&'a [f32]),
    /// Rows of `dim` values (the patch states of one image), row-major.
    Rows { data: &'a [f32], dim: usize },
    /// Token ids.
    Tokens(&'a [u32]),
}

/// How a head turns its input into one raw score per label.
#[derive(Debug, Clone)]
enum Scoring {
    /// (L, D): `w_label · e`.
    Linear(Vec<Vec<f32>>),
    /// (L, D): `max_rows w_label · row`.
    MaxRows(Vec<Vec<f32>>),
    /// `max_i token[id_i][label] + position[i][label]`: (V, L) and (P, L).
    Tables {
        token: Vec<Vec<f32>>,
        position: Vec<Vec<f32>>,
    },
}

/// One source's head: its scoring, a bias and a threshold per label.
#[derive(Debug, Clone)]
pub(crate) struct LabelHead {
    scoring: Scoring,
    bias: Vec<f32>,
    threshold: Vec<f32>,
}

impl LabelHead {
    /// The head's features.
    fn features(&self) -> TagFeatures {
        match self.scoring {
            Scoring::Linear(_) => TagFeatures::Embedding,
            Scoring::MaxRows(_) => TagFeatures::CaptionPatches,
            Scoring::Tables { .. } => TagFeatures::Tokens,
        }
    }

    /// One probability per label; `None` when the input is not what the head reads. An
    /// input with no rows or tokens scores nothing: every label gets sigmoid(-inf) = 0.
    fn scores(&self, input: TagInput<'_>) -> Option<Vec<f32>> {
        let raw: Vec<f32> = match (&self.scoring, input) {
            (Scoring::Linear(w), TagInput::Embedding(e)) => w.iter().map(|w| dot(w, e)).collect(),
            (Scoring::MaxRows(w), TagInput::Rows { data, dim }) if dim > 0 => w
                .iter()
                .map(|w| {
                    data.chunks_exact(dim)
                        .map(|row| dot(w, row))
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect(),
            (Scoring::Tables { token, position }, TagInput::Tokens(ids)) => (0..self.bias.len())
                .map(|l| {
                    ids.iter()
                        .zip(position)
                        .filter_map(|(&id, pos)| Some(token.get(id as usize)?[l] + pos[l]))
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect(),
            _ => return None,
        };
        Some(
            raw.iter()
                .zip(&self.bias)
                .map(|(s, b)| sigmoid(s + b))
                .collect(),
        )
    }
}

/// The widths a head file is checked against at load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadDims {
    /// The dual encoder's embedding width.
    pub embedding: usize,
    /// The captioner's vision width (0: no captioner).
    pub caption_patch: usize,
    /// The text encoder's vocabulary.
    pub vocab: usize,
    /// Positions of the text encoder.
    pub positions: usize,
}

/// How the table decides.
#[derive(Debug, Clone)]
pub(crate) enum TagRule {
    /// Zero-shot: (L, P) normalised label-prompt embeddings and one threshold on the
    /// probabilities the dual encoder's scorer gives.
    Prompts {
        embeddings: Vec<Vec<f32>>,
        threshold: f32,
    },
    /// A calibrated head per source.
    Head { image: LabelHead, text: LabelHead },
}

/// The labels and the rule, built once at load.
#[derive(Debug, Clone)]
pub(crate) struct TagTable {
    pub(crate) labels: Vec<String>,
    pub(crate) rule: TagRule,
}

impl TagTable {
    /// Load a head file (the tensors of each source's features, see the module docs),
    /// checked against the labels and the widths of the parts it reads.
    pub(crate) fn load_head(
        spec: &TagHeadSpec,
        labels: &[String],
        dims: HeadDims,
    ) -> Result<TagRule> {
        let path = spec.path.as_path();
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| ModelError::config(path, e))?;
        let n = labels.len();
        let shaped = |name: &str, rows: usize, cols: usize, what: &str| -> Result<Vec<Vec<f32>>> {
            let m = matrix(&tensors, name, path)?;
            if m.len() != rows || m.iter().any(|r| r.len() != cols) {
                return Err(ModelError::config(
                    path,
                    format!("{name} must be ({rows}, {cols}): {what}"),
                ));
            }
            Ok(m)
        };
        let part = |source: &str, features: TagFeatures, threshold: &[f32]| -> Result<LabelHead> {
            let weight = |d: usize, of: &str| {
                shaped(
                    &format!("{source}.weight"),
                    n,
                    d,
                    &format!("one row per label, {of}"),
                )
            };
            let scoring = match features {
                TagFeatures::Embedding => {
                    Scoring::Linear(weight(dims.embedding, "the embedding's width")?)
                }
                TagFeatures::CaptionPatches => {
                    Scoring::MaxRows(weight(dims.caption_patch, "the captioner's vision width")?)
                }
                TagFeatures::Tokens => Scoring::Tables {
                    token: shaped(
                        &format!("{source}.token"),
                        dims.vocab,
                        n,
                        "a row per token of the text encoder's vocabulary, a column per label",
                    )?,
                    position: shaped(
                        &format!("{source}.position"),
                        dims.positions,
                        n,
                        "a row per position of the text encoder, a column per label",
                    )?,
                },
            };
            let bias = vector(&tensors, &format!("{source}.bias"), path)?;
            if bias.len() != n || threshold.len() != n {
                return Err(ModelError::config(
                    path,
                    format!("{source}: {n} labels need {n} biases and {n} thresholds"),
                ));
            }
            Ok(LabelHead {
                scoring,
                bias,
                threshold: threshold.to_vec(),
            })
        };
        Ok(TagRule::Head {
            image: part("image", spec.image.source, &spec.image.threshold)?,
            text: part("text", spec.text.source, &spec.text.threshold)?,
        })
    }

    /// What the rule reads from an item of this source.
    pub(crate) fn features(&self, source: TagSource) -> TagFeatures {
        match &self.rule {
            TagRule::Prompts { .. } => TagFeatures::Embedding,
            TagRule::Head { image, text } => match source {
                TagSource::Image => image.features(),
                TagSource::Text => text.features(),
            },
        }
    }

    /// The tags of one item's input, best first (`None` when the input is not the features
    /// the rule reads for that source: [`TagTable::features`]). `zero_shot` scores the prompt
    /// embeddings (the dual encoder's rule); a head does not use it.
    pub(crate) fn tags(
        &self,
        input: TagInput<'_>,
        source: TagSource,
        zero_shot: impl FnOnce(&[f32], &[Vec<f32>]) -> Vec<f32>,
    ) -> Option<Vec<Tag>> {
        let (scores, thresholds) = match &self.rule {
            TagRule::Prompts {
                embeddings,
                threshold,
            } => match input {
                TagInput::Embedding(e) => (zero_shot(e, embeddings), Thresholds::One(*threshold)),
                _ => return None,
            },
            TagRule::Head { image, text } => {
                let head = match source {
                    TagSource::Image => image,
                    TagSource::Text => text,
                };
                (head.scores(input)?, Thresholds::PerLabel(&head.threshold))
            }
        };
        let mut tags: Vec<Tag> = self
            .labels
            .iter()
            .zip(scores)
            .enumerate()
            .filter(|(i, (_, score))| *score >= thresholds.of(*i))
            .map(|(_, (label, score))| Tag {
                label: label.clone(),
                score,
                source,
            })
            .collect();
        tags.sort_by(|a, b| b.score.total_cmp(&a.score));
        Some(tags)
    }
}

/// The threshold a label's score must reach.
enum Thresholds<'a> {
    One(f32),
    PerLabel(&'a [f32]),
}

impl Thresholds<'_> {
    fn of(&self, label: usize) -> f32 {
        match self {
            Thresholds::One(t) => *t,
            Thresholds::PerLabel(ts) => ts[label],
        }
    }
}

fn tensor<'a>(t: &'a HashMap<String, Tensor>, name: &str, path: &Path) -> Result<&'a Tensor> {
    t.get(name)
        .ok_or_else(|| ModelError::config(path, format!("no tensor {name}")))
}

fn matrix(t: &HashMap<String, Tensor>, name: &str, path: &Path) -> Result<Vec<Vec<f32>>> {
    tensor(t, name, path)?
        .to_dtype(DType::F32)
        .and_then(|x| x.to_vec2::<f32>())
        .map_err(|e| ModelError::config(path, format!("{name}: {e}")))
}

fn vector(t: &HashMap<String, Tensor>, name: &str, path: &Path) -> Result<Vec<f32>> {
    tensor(t, name, path)?
        .to_dtype(DType::F32)
        .and_then(|x| x.to_vec1::<f32>())
        .map_err(|e| ModelError::config(path, format!("{name}: {e}")))
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn linear(threshold: Vec<f32>) -> LabelHead {
        // Two labels over a 2-d input: "x" fires on the first axis, "y" on the second.
        LabelHead {
            scoring: Scoring::Linear(vec![vec![10.0, 0.0], vec![0.0, 10.0]]),
            bias: vec![-5.0, -5.0],
            threshold,
        }
    }

    fn table() -> TagTable {
        TagTable {
            labels: vec!["x".into(), "y".into()],
            rule: TagRule::Head {
                image: linear(vec![0.5, 0.5]),
                text: linear(vec![0.5, 2.0]),
            },
        }
    }

    fn none(_: &[f32], _: &[Vec<f32>]) -> Vec<f32> {
        unreachable!("a head does not score prompts")
    }

    fn labels(tags: &[Tag]) -> Vec<&str> {
        tags.iter().map(|t| t.label.as_str()).collect()
    }

    #[test]
    fn every_label_decides_alone() {
        let t = table();
        let both = t
            .tags(TagInput::Embedding(&[1.0, 0.9]), TagSource::Image, none)
            .unwrap();
        assert_eq!(
            labels(&both),
            ["x", "y"],
            "both labels present: both tags, best first"
        );
        assert!((both[0].score - sigmoid(5.0)).abs() < 1e-6);
        let empty = t.tags(TagInput::Embedding(&[0.0, 0.0]), TagSource::Image, none);
        assert!(empty.unwrap().is_empty());
        // The text head's threshold of 2 never lets "y" through.
        let text = t
            .tags(TagInput::Embedding(&[1.0, 1.0]), TagSource::Text, none)
            .unwrap();
        assert_eq!(text.len(), 1);
        assert_eq!(text[0].source, TagSource::Text);
        // Features the head does not read give no decision.
        assert!(t
            .tags(TagInput::Tokens(&[1]), TagSource::Text, none)
            .is_none());
    }

    #[test]
    fn a_patch_head_takes_each_label_from_its_best_patch() {
        let mut image = linear(vec![0.5, 0.5]);
        image.scoring = Scoring::MaxRows(vec![vec![10.0, 0.0], vec![0.0, 10.0]]);
        let t = TagTable {
            labels: vec!["x".into(), "y".into()],
            rule: TagRule::Head {
                image,
                text: linear(vec![0.5, 0.5]),
            },
        };
        assert_eq!(t.features(TagSource::Image), TagFeatures::CaptionPatches);
        assert_eq!(t.features(TagSource::Text), TagFeatures::Embedding);
        // Three patches: "x" shows in the first, "y" in the third; their mean shows neither.
        let rows = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let got = t
            .tags(
                TagInput::Rows {
                    data: &rows,
                    dim: 2,
                },
                TagSource::Image,
                none,
            )
            .unwrap();
        assert_eq!(labels(&got), ["x", "y"]);
        assert!((got[1].score - sigmoid(5.0)).abs() < 1e-6);
        assert!(t
            .tags(
                TagInput::Embedding(&[1.0 / 3.0, 1.0 / 3.0]),
                TagSource::Image,
                none
            )
            .is_none());
        let nothing = t.tags(TagInput::Rows { data: &[], dim: 2 }, TagSource::Image, none);
        assert!(nothing.unwrap().is_empty(), "no patches, no tags");
    }

    #[test]
    fn a_token_head_adds_the_position_and_keeps_the_best_token() {
        // Vocabulary of 3: token 1 says "x", token 2 says "y"; position 0 lowers every label.
        let text = LabelHead {
            scoring: Scoring::Tables {
                token: vec![vec![0.0, 0.0], vec![6.0, 0.0], vec![0.0, 6.0]],
                position: vec![vec![-10.0, -10.0], vec![0.0, 0.0], vec![0.0, 0.0]],
            },
            bias: vec![-3.0, -3.0],
            threshold: vec![0.5, 0.5],
        };
        let t = TagTable {
            labels: vec!["x".into(), "y".into()],
            rule: TagRule::Head {
                image: linear(vec![0.5, 0.5]),
                text,
            },
        };
        assert_eq!(t.features(TagSource::Text), TagFeatures::Tokens);
        let tag = |ids: &[u32]| {
            labels(
                &t.tags(TagInput::Tokens(ids), TagSource::Text, none)
                    .unwrap(),
            )
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
        };
        assert_eq!(tag(&[0, 1]), ["x"]);
        assert_eq!(tag(&[0, 2, 1]), ["x", "y"]);
        assert!(
            tag(&[1]).is_empty(),
            "at position 0 the token is outweighed"
        );
        // Past the table's positions or vocabulary, a token is not read.
        assert!(tag(&[0, 0, 0, 1]).is_empty());
        assert!(tag(&[0, 7]).is_empty());
    }

    #[test]
    fn prompts_keep_one_threshold() {
        let t = TagTable {
            labels: vec!["a".into(), "b".into(), "c".into()],
            rule: TagRule::Prompts {
                embeddings: vec![vec![1.0]; 3],
                threshold: 0.3,
            },
        };
        let tags = t
            .tags(TagInput::Embedding(&[1.0]), TagSource::Image, |_, _| {
                vec![0.2, 0.5, 0.3]
            })
            .unwrap();
        let got: Vec<(&str, f32)> = tags.iter().map(|t| (t.label.as_str(), t.score)).collect();
        assert_eq!(got, [("b", 0.5), ("c", 0.3)]);
    }
}
