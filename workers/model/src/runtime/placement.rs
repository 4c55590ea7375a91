//! Where the parts of a bundle run: how a bundle is loaded ([`RuntimeOptions`]), which
//! library runs the parts ([`BackendChoice`]), and per part whether ONNX Runtime has its
//! graphs (`Placement`).

use std::path::Path;

use candle_core::{DType, Device};
use serde::Serialize;

use crate::backend::onnx::{self, OnnxOptions, Precision};
use crate::bundle::GenerationSpec;
use crate::error::{ModelError, Result};
use crate::preprocess::DecodeOptions;

/// How to load a bundle.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where the model runs.
    pub device: Device,
    /// Weight and activation dtype (f32 on CPU; f16/bf16 on GPU).
    pub dtype: DType,
    /// Image limits and JPEG DCT scaling.
    pub decode: DecodeOptions,
    /// Overrides the bundle's generation settings.
    pub generation: Option<GenerationSpec>,
    /// Which library runs the parts.
    pub backend: BackendChoice,
    /// ONNX Runtime settings (library, precision, threads, CUDA device).
    pub onnx: OnnxOptions,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            decode: DecodeOptions::default(),
            generation: None,
            backend: BackendChoice::Candle,
            onnx: OnnxOptions::default(),
        }
    }
}

/// Which library runs the bundle's parts (`model.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// ONNX Runtime for every part that has graphs of the asked precision when the library
    /// is found (`model.onnxruntime_library`, `ORT_DYLIB_PATH` or the cache of
    /// `scripts/fetch-onnxruntime.sh`), candle otherwise.
    #[default]
    Auto,
    /// candle for every part.
    Candle,
    /// ONNX Runtime for every part but the fusion head; a part without graphs is an error.
    Onnx,
}

impl BackendChoice {
    /// Parse `auto`, `candle` or `onnx`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "candle" => Ok(Self::Candle),
            "onnx" => Ok(Self::Onnx),
            other => Err(ModelError::Unsupported(format!(
                "backend {other:?} (expected auto, candle or onnx)"
            ))),
        }
    }
}

/// Where the parts run and with what.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    pub(super) device: Device,
    pub(super) dtype: DType,
    /// `Some` when ONNX Runtime is loaded and asked for (`onnx`) or allowed (`auto`).
    pub(super) onnx: Option<OnnxOptions>,
    /// `onnx` was asked for explicitly: a part without graphs is an error.
    pub(super) require_onnx: bool,
    /// The ONNX Runtime library loaded, and where the lookup found it.
    pub(super) library: Option<(std::path::PathBuf, onnx::LibrarySource)>,
}

impl Placement {
    pub(super) fn new(opts: &RuntimeOptions) -> Result<Self> {
        let mut library = None;
        let onnx = match opts.backend {
            BackendChoice::Candle => None,
            BackendChoice::Auto | BackendChoice::Onnx => match opts.onnx.find_library() {
                Some((lib, source)) => {
                    onnx::load_library(&lib)?;
                    library = Some((lib, source));
                    Some(opts.onnx.clone())
                }
                None if opts.backend == BackendChoice::Onnx => {
                    return Err(ModelError::OnnxRuntime(format!(
                        "backend onnx needs the ONNX Runtime library: {} (or set \
                         model.onnxruntime_library or ORT_DYLIB_PATH)",
                        onnx::library::not_found_hint()
                    )))
                }
                None => None,
            },
        };
        if onnx.is_none() && opts.onnx.cuda_device.is_some() && opts.device.is_cpu() {
            return Err(ModelError::Unsupported(
                "CUDA was asked for the ONNX backend, but no part runs on ONNX Runtime".into(),
            ));
        }
        Ok(Self {
            device: opts.device.clone(),
            dtype: opts.dtype,
            onnx,
            require_onnx: opts.backend == BackendChoice::Onnx,
            library,
        })
    }

    /// The ONNX options if this part runs on ONNX Runtime.
    pub(super) fn onnx_for(&self, part: &Path, name: &str) -> Result<Option<&OnnxOptions>> {
        let Some(o) = &self.onnx else {
            return Ok(None);
        };
        if onnx::has_graphs(part, o.precision) {
            Ok(Some(o))
        } else if self.require_onnx {
            Err(ModelError::config(
                part.join("onnx/manifest.json"),
                format!(
                    "the {name} part has no {} ONNX graphs (python -m models.export_onnx \
                     --model {}{})",
                    o.precision,
                    part.display(),
                    match o.precision {
                        Precision::Int8 => " --int8",
                        Precision::F16 => " --fp16",
                        Precision::F32 => "",
                    }
                ),
            ))
        } else {
            Ok(None)
        }
    }

    pub(super) fn candle_precision(&self) -> String {
        format!("{:?}", self.dtype).to_lowercase()
    }
}
