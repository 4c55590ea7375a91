//! Bundle manifest: which model directories form the fusion model, their roles, and the
//! settings that belong to the bundle (zero-shot tag labels, generation defaults).
//!
//! ```toml
//! id = "shapes"
//! version = "1.0.0"
//! [clip]            # dual encoder: embeddings, match, tags (HF CLIPModel or SiglipModel directory)
//! path = "clip"
//! [caption]         # BlipForConditionalGeneration directory
//! path = "blip-caption"
//! [vqa]             # BlipForQuestionAnswering directory
//! path = "blip-vqa"
//! [fusion]          # gated fusion head directory
//! path = "fusion"
//! [tags]           # zero-shot: label prompts, one threshold
//! template = "a photo of a {}"
//! labels = ["circle", "square"]
//! threshold = 0.3
//! # or calibrated heads (models/tags.py), each on its source's features, with a
//! # threshold per label and source:
//! # head = "tags/head.safetensors"
//! # [tags.image]
//! # source = "caption_patches"   # or "embedding" (the default)
//! # threshold = [0.5, 0.7]
//! # [tags.text]
//! # source = "tokens"            # or "embedding"
//! # threshold = [0.6, 2.0]
//! [generation]
//! max_new_tokens = 20
//! num_beams = 1
//! ```
//!
//! A plain Hugging Face model directory (no `bundle.toml`) is also a bundle: its
//! `config.json` says which single role it fills.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::nn;

/// One part of a bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartSpec {
    /// Directory of the part, relative to the bundle directory.
    pub path: PathBuf,
}

/// Tag settings: the labels, and either zero-shot prompts with one threshold or a
/// calibrated head with a threshold per label and source (see [`crate::tags`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawTagSpec")]
pub struct TagSpec {
    /// Prompt with `{}` where the label goes (zero-shot prompts).
    pub template: String,
    /// Tag labels.
    pub labels: Vec<String>,
    /// Zero-shot prompts: labels whose probability reaches this are returned.
    pub threshold: f32,
    /// The calibrated head, when the bundle has one.
    pub head: Option<TagHeadSpec>,
}

/// Calibrated tag heads: their tensors, and per source the features read and each label's
/// threshold.
#[derive(Debug, Clone)]
pub struct TagHeadSpec {
    /// The heads' tensors (safetensors: `image.*` and `text.*`, see [`crate::tags`]),
    /// relative to the bundle directory in `bundle.toml`, resolved at load.
    pub path: PathBuf,
    /// The image head's features and thresholds, one per label.
    pub image: LabelThresholds,
    /// The text head's (text-only items) features and thresholds, one per label.
    pub text: LabelThresholds,
}

/// What a source's tag head reads (see [`crate::tags`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagFeatures {
    /// The dual encoder's embedding of the image or the text.
    #[default]
    Embedding,
    /// Images: the captioner's vision states, one per patch; a label's score is its best patch.
    CaptionPatches,
    /// Texts: the token ids, through per-token and per-position score tables; a label's
    /// score is its best token.
    Tokens,
}

/// One source's head: what it reads and one threshold per label, in the order of `labels`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelThresholds {
    /// The features the head reads.
    #[serde(default)]
    pub source: TagFeatures,
    /// A label is a tag when its score reaches its threshold (above 1: never).
    pub threshold: Vec<f32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTagSpec {
    #[serde(default = "default_template")]
    template: String,
    labels: Vec<String>,
    #[serde(default = "default_threshold")]
    threshold: f32,
    head: Option<PathBuf>,
    image: Option<LabelThresholds>,
    text: Option<LabelThresholds>,
}

impl TryFrom<RawTagSpec> for TagSpec {
    type Error = String;

    fn try_from(r: RawTagSpec) -> std::result::Result<Self, String> {
        let head = match (r.head, r.image, r.text) {
            (None, None, None) => None,
            (Some(path), Some(image), Some(text)) => {
                for (source, t) in [("image", &image), ("text", &text)] {
                    if t.threshold.len() != r.labels.len() {
                        return Err(format!(
                            "tags.{source}.threshold has {} values for {} labels",
                            t.threshold.len(),
                            r.labels.len()
                        ));
                    }
                    if t.threshold.iter().any(|x| !x.is_finite()) {
                        return Err(format!("tags.{source}.threshold must be finite"));
                    }
                }
                let allowed =
                    |f: TagFeatures, other: TagFeatures| f == TagFeatures::Embedding || f == other;
                if !allowed(image.source, TagFeatures::CaptionPatches) {
                    return Err(format!(
                        "tags.image.source {:?}: an image head reads \"embedding\" or \"caption_patches\"",
                        image.source
                    ));
                }
                if !allowed(text.source, TagFeatures::Tokens) {
                    return Err(format!(
                        "tags.text.source {:?}: a text head reads \"embedding\" or \"tokens\"",
                        text.source
                    ));
                }
                Some(TagHeadSpec { path, image, text })
            }
            (None, _, _) => {
                return Err("tags.image / tags.text thresholds need a tags.head".into());
            }
            (Some(_), _, _) => {
                return Err("a tags.head needs [tags.image] and [tags.text] thresholds".into());
            }
        };
        Ok(TagSpec {
            template: r.template,
            labels: r.labels,
            threshold: r.threshold,
            head,
        })
    }
}

fn default_template() -> String {
    "a photo of a {}".into()
}
fn default_threshold() -> f32 {
    0.1
}

/// Generation defaults of the bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationSpec {
    /// Most generated tokens.
    #[serde(default = "default_max_new")]
    pub max_new_tokens: usize,
    /// Beam width (1: greedy).
    #[serde(default = "default_beams")]
    pub num_beams: usize,
}

impl Default for GenerationSpec {
    fn default() -> Self {
        Self {
            max_new_tokens: default_max_new(),
            num_beams: default_beams(),
        }
    }
}

fn default_max_new() -> usize {
    20
}
fn default_beams() -> usize {
    1
}

/// A parsed bundle manifest with absolute part paths.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    /// Bundle id, carried by every output record.
    pub id: String,
    /// Bundle version, carried by every output record.
    pub version: String,
    /// Dual encoder.
    pub clip: Option<PartSpec>,
    /// Captioner.
    pub caption: Option<PartSpec>,
    /// Question answering.
    pub vqa: Option<PartSpec>,
    /// Fusion head.
    pub fusion: Option<PartSpec>,
    /// Zero-shot tags.
    pub tags: Option<TagSpec>,
    /// Generation defaults.
    #[serde(default)]
    pub generation: GenerationSpec,
}

#[derive(Debug, Deserialize)]
struct HfConfigHead {
    #[serde(default)]
    model_type: String,
    #[serde(default)]
    architectures: Vec<String>,
}

impl BundleManifest {
    /// Read `dir/bundle.toml`, or describe a single HF model directory as a bundle.
    pub fn load(dir: &Path) -> Result<Self> {
        let manifest = dir.join("bundle.toml");
        let mut m = if manifest.exists() {
            let text =
                std::fs::read_to_string(&manifest).map_err(|e| ModelError::io(&manifest, e))?;
            toml::from_str::<BundleManifest>(&text).map_err(|e| ModelError::config(&manifest, e))?
        } else {
            Self::single(dir)?
        };
        for part in [&mut m.clip, &mut m.caption, &mut m.vqa, &mut m.fusion]
            .into_iter()
            .flatten()
        {
            part.path = dir.join(&part.path);
        }
        if m.clip.is_none() && m.caption.is_none() && m.vqa.is_none() {
            return Err(ModelError::config(
                dir,
                "the bundle has no clip, caption or vqa part",
            ));
        }
        if let Some(head) = m.tags.as_mut().and_then(|t| t.head.as_mut()) {
            head.path = dir.join(&head.path);
        }
        if m.tags.is_some() && m.clip.is_none() {
            return Err(ModelError::config(dir, "tags need a clip part"));
        }
        let patches = m
            .tags
            .as_ref()
            .and_then(|t| t.head.as_ref())
            .map(|h| h.image.source)
            == Some(TagFeatures::CaptionPatches);
        if patches && m.caption.is_none() {
            return Err(ModelError::config(
                dir,
                "tags.image.source = \"caption_patches\" needs a caption part",
            ));
        }
        if m.generation.num_beams == 0 {
            return Err(ModelError::config(
                dir,
                "generation.num_beams must be at least 1",
            ));
        }
        Ok(m)
    }

    fn single(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let head: HfConfigHead = nn::read_json(&cfg_path)?;
        let here = Some(PartSpec {
            path: PathBuf::from("."),
        });
        let mut m = BundleManifest {
            id: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            version: "unversioned".into(),
            clip: None,
            caption: None,
            vqa: None,
            fusion: None,
            tags: None,
            generation: GenerationSpec::default(),
        };
        let arch = head.architectures.first().map(String::as_str).unwrap_or("");
        match (head.model_type.as_str(), arch) {
            ("clip" | "siglip", _) => m.clip = here,
            ("blip", "BlipForQuestionAnswering") => m.vqa = here,
            ("blip", _) => m.caption = here,
            ("fusionstream_gated_fusion", _) => {
                return Err(ModelError::config(
                    &cfg_path,
                    "a fusion head alone is not a model; use a bundle",
                ))
            }
            (other, _) => {
                return Err(ModelError::Unsupported(format!(
                    "model_type {other:?} in {}",
                    cfg_path.display()
                )))
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tags(toml_text: &str) -> std::result::Result<TagSpec, String> {
        toml::from_str::<TagSpec>(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn tag_heads_need_a_threshold_per_label_and_source() {
        let ok = tags(
            "labels = [\"a\", \"b\"]\nhead = \"h.safetensors\"\n\
             [image]\nthreshold = [0.5, 2.0]\n[text]\nthreshold = [0.4, 0.6]\n",
        )
        .unwrap();
        let head = ok.head.unwrap();
        assert_eq!(head.image.threshold, [0.5, 2.0]);
        assert_eq!(head.text.threshold, [0.4, 0.6]);
        assert_eq!(head.image.source, TagFeatures::Embedding, "the default");
        let sources = tags(
            "labels = [\"a\"]\nhead = \"h\"\n[image]\nsource = \"caption_patches\"\n\
             threshold = [0.5]\n[text]\nsource = \"tokens\"\nthreshold = [0.4]\n",
        )
        .unwrap()
        .head
        .unwrap();
        assert_eq!(
            (sources.image.source, sources.text.source),
            (TagFeatures::CaptionPatches, TagFeatures::Tokens)
        );
        let swapped = tags(
            "labels = [\"a\"]\nhead = \"h\"\n[image]\nsource = \"tokens\"\n\
             threshold = [0.5]\n[text]\nthreshold = [0.4]\n",
        );
        assert!(swapped.unwrap_err().contains("an image head reads"));
        let text_patches = tags(
            "labels = [\"a\"]\nhead = \"h\"\n[image]\nthreshold = [0.5]\n\
             [text]\nsource = \"caption_patches\"\nthreshold = [0.4]\n",
        );
        assert!(text_patches.unwrap_err().contains("a text head reads"));
        let unknown_source = tags(
            "labels = [\"a\"]\nhead = \"h\"\n[image]\nsource = \"pixels\"\n\
             threshold = [0.5]\n[text]\nthreshold = [0.4]\n",
        );
        assert!(unknown_source.is_err());
        let short = tags(
            "labels = [\"a\", \"b\"]\nhead = \"h\"\n\
             [image]\nthreshold = [0.5]\n[text]\nthreshold = [0.4, 0.6]\n",
        );
        assert!(short.unwrap_err().contains("1 values for 2 labels"));
        let no_text = tags("labels = [\"a\"]\nhead = \"h\"\n[image]\nthreshold = [0.5]\n");
        assert!(no_text
            .unwrap_err()
            .contains("needs [tags.image] and [tags.text]"));
        let no_head = tags("labels = [\"a\"]\n[image]\nthreshold = [0.5]\n");
        assert!(no_head.unwrap_err().contains("need a tags.head"));
        let unknown = tags("labels = [\"a\"]\nthresholds = 0.5\n");
        assert!(unknown.is_err());
    }

    #[test]
    fn prompt_tags_keep_their_defaults() {
        let t = tags("labels = [\"a\"]\n").unwrap();
        assert!(t.head.is_none());
        assert_eq!((t.template.as_str(), t.threshold), ("a photo of a {}", 0.1));
    }
}
