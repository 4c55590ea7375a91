//! Tags: which of the bundle's labels an embedding shows.
//!
//! Two rules, chosen by `bundle.toml`'s `[tags]`:
//!
//! - **A calibrated head** (`head = "tags/head.safetensors"`): one logistic regression per label
//!   and per source, `score = sigmoid(w_label · e + b_label)`, and a label is a tag when its
//!   score reaches that label's threshold (`[tags.image] threshold = [...]`, `[tags.text]`).
//!   Every label is its own yes/no decision, so a scene with a red cross and a blue circle can
//!   get all four tags. `models/tags.py` fits the head and the thresholds on generated splits.
//! - **Zero-shot prompts** (no head): the label prompts' embeddings scored against the
//!   embedding by the dual encoder's own rule (CLIP's softmax over labels, SigLIP's sigmoid),
//!   one `threshold` for every label: what a real CLIP or SigLIP checkpoint gives unchanged.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::error::{ModelError, Result};

/// Which modality a tag was scored from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagSource {
    /// From the image embedding.
    Image,
    /// From the text embedding (text-only items).
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

/// One source's head: a logistic regression per label and the label's threshold.
#[derive(Debug, Clone)]
pub(crate) struct LabelHead {
    /// (L, P) weights.
    weight: Vec<Vec<f32>>,
    bias: Vec<f32>,
    threshold: Vec<f32>,
}

impl LabelHead {
    fn scores(&self, e: &[f32]) -> Vec<f32> {
        self.weight
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| sigmoid(dot(w, e) + b))
            .collect()
    }
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
    /// Load a head file: `image.weight` (L, P), `image.bias` (L), `text.weight`, `text.bias`,
    /// checked against the labels and the embedding width `dim`.
    pub(crate) fn load_head(
        path: &Path,
        labels: &[String],
        dim: usize,
        image_threshold: &[f32],
        text_threshold: &[f32],
    ) -> Result<TagRule> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| ModelError::config(path, e))?;
        let part = |source: &str, threshold: &[f32]| -> Result<LabelHead> {
            let weight = matrix(&tensors, &format!("{source}.weight"), path)?;
            let bias = vector(&tensors, &format!("{source}.bias"), path)?;
            let n = labels.len();
            if weight.len() != n || weight.iter().any(|r| r.len() != dim) {
                return Err(ModelError::config(
                    path,
                    format!("{source}.weight must be ({n}, {dim}): one row per label"),
                ));
            }
            if bias.len() != n || threshold.len() != n {
                return Err(ModelError::config(
                    path,
                    format!("{source}: {n} labels need {n} biases and {n} thresholds"),
                ));
            }
            Ok(LabelHead {
                weight,
                bias,
                threshold: threshold.to_vec(),
            })
        };
        Ok(TagRule::Head {
            image: part("image", image_threshold)?,
            text: part("text", text_threshold)?,
        })
    }

    /// The tags of one embedding, best first. `zero_shot` scores the prompt embeddings
    /// (the dual encoder's rule); a head does not use it.
    pub(crate) fn tags(
        &self,
        e: &[f32],
        source: TagSource,
        zero_shot: impl FnOnce(&[f32], &[Vec<f32>]) -> Vec<f32>,
    ) -> Vec<Tag> {
        let (scores, thresholds) = match &self.rule {
            TagRule::Prompts {
                embeddings,
                threshold,
            } => (zero_shot(e, embeddings), Thresholds::One(*threshold)),
            TagRule::Head { image, text } => {
                let head = match source {
                    TagSource::Image => image,
                    TagSource::Text => text,
                };
                (head.scores(e), Thresholds::PerLabel(&head.threshold))
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
        tags
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

    fn table() -> TagTable {
        // Two labels over a 2-d embedding: "x" fires on the first axis, "y" on the second.
        let head = |threshold: Vec<f32>| LabelHead {
            weight: vec![vec![10.0, 0.0], vec![0.0, 10.0]],
            bias: vec![-5.0, -5.0],
            threshold,
        };
        TagTable {
            labels: vec!["x".into(), "y".into()],
            rule: TagRule::Head {
                image: head(vec![0.5, 0.5]),
                text: head(vec![0.5, 2.0]),
            },
        }
    }

    #[test]
    fn every_label_decides_alone() {
        let t = table();
        let none = |_: &[f32], _: &[Vec<f32>]| unreachable!("a head does not score prompts");
        let both = t.tags(&[1.0, 0.9], TagSource::Image, none);
        assert_eq!(
            both.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(),
            ["x", "y"],
            "both labels present: both tags, best first"
        );
        assert!((both[0].score - sigmoid(5.0)).abs() < 1e-6);
        assert!(t.tags(&[0.0, 0.0], TagSource::Image, none).is_empty());
        // The text head's threshold of 2 never lets "y" through.
        let text = t.tags(&[1.0, 1.0], TagSource::Text, none);
        assert_eq!(text.len(), 1);
        assert_eq!(text[0].source, TagSource::Text);
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
        let tags = t.tags(&[1.0], TagSource::Image, |_, _| vec![0.2, 0.5, 0.3]);
        let got: Vec<(&str, f32)> = tags.iter().map(|t| (t.label.as_str(), t.score)).collect();
        assert_eq!(got, [("b", 0.5), ("c", 0.3)]);
    }
}
