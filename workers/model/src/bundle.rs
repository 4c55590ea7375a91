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
//! [tags]
//! template = "a photo of a {}"
//! labels = ["circle", "square"]
//! threshold = 0.3
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

/// Zero-shot tag settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagSpec {
    /// Prompt with `{}` where the label goes.
    #[serde(default = "default_template")]
    pub template: String,
    /// Tag labels.
    pub labels: Vec<String>,
    /// Labels whose probability reaches this are returned.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
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
        if m.tags.is_some() && m.clip.is_none() {
            return Err(ModelError::config(dir, "tags need a clip part"));
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
