//! ONNX Runtime backend: the graphs that `python -m models.export_onnx` writes under a part's
//! `onnx/` folder, run through `ort` with the library loaded at run time (`load-dynamic`).
//!
//! Nothing links against ONNX Runtime: a build runs without it (the candle backend), and the
//! library is loaded once per process from `model.onnxruntime_library`, `ORT_DYLIB_PATH` or
//! the cache `scripts/fetch-onnxruntime.sh` fills (`library.rs`: the lookup order). A missing,
//! unloadable or too old library (ONNX Runtime < 1.22), a graph whose inputs or outputs are not
//! the ones the runtime drives, or a CUDA provider that does not register is an error at load
//! — never a panic, never a silent fall-back to the CPU.
//!
//! The graphs of a part and their variants (`f32`, `int8`, `fp16`) are listed in
//! `onnx/manifest.json`; see `models/export_onnx.py` for their inputs and outputs.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the library (loaded once), [`OnnxOptions`], the graphs of a part and the [`Graph`] wrapper, tensor helpers |
//! | `library.rs` | where the library is found: configuration, environment, cache |
//! | `clip.rs` | [`OnnxClip`]: CLIP's `vision` and `text` graphs |
//! | `blip.rs` | [`OnnxBlip`]: BLIP's vision, question and decoder graphs, the decoder's steps with their cache |

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor, TensorRef};
use serde::{Deserialize, Serialize};

mod blip;
mod clip;
pub mod library;

pub use blip::{BlipTextDims, OnnxBlip};
pub use clip::OnnxClip;
pub use library::{LibrarySource, ONNXRUNTIME_VERSION};

use crate::error::{ModelError, Result};
use crate::nn;

/// Numeric precision of the ONNX graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// The exported f32 graphs.
    #[default]
    F32,
    /// Dynamically quantised graphs: int8 weights, activations quantised at run time (CPU).
    Int8,
    /// FP16 graphs (GPU).
    F16,
}

impl Precision {
    /// Parse `f32`, `int8` or `f16`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "int8" => Ok(Self::Int8),
            "f16" | "fp16" => Ok(Self::F16),
            other => Err(ModelError::Unsupported(format!(
                "precision {other:?} (expected f32, int8 or f16)"
            ))),
        }
    }

    fn variant(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Int8 => "int8",
            Self::F16 => "fp16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Int8 => "int8",
            Self::F16 => "f16",
        })
    }
}

/// How to run ONNX graphs.
#[derive(Debug, Clone, Default)]
pub struct OnnxOptions {
    /// The ONNX Runtime shared library (`None`: `ORT_DYLIB_PATH`, else the cache).
    pub library: Option<PathBuf>,
    /// Which graphs to load.
    pub precision: Precision,
    /// Threads of one operator (0: ONNX Runtime's default, one per physical core).
    pub intra_threads: usize,
    /// Let those threads spin while they wait for work (ONNX Runtime's default). Off by
    /// default here: in a worker they share the cores with decoding and preprocessing, and on
    /// 2 cores spinning halved the pipeline's throughput (benches/README.md).
    pub spinning: bool,
    /// Run on this CUDA device through the CUDA execution provider (error if it cannot).
    pub cuda_device: Option<i32>,
}

impl OnnxOptions {
    /// The library to load, if any, and where it was found (`library.rs`: `library`, else
    /// `ORT_DYLIB_PATH`, else the cache of `scripts/fetch-onnxruntime.sh`).
    pub fn find_library(&self) -> Option<(PathBuf, LibrarySource)> {
        library::lookup(
            self.library.as_deref(),
            std::env::var_os("ORT_DYLIB_PATH"),
            library::cache_root().as_deref(),
            Path::is_file,
        )
    }

    /// The library to load, if any (see [`OnnxOptions::find_library`]).
    pub fn library_path(&self) -> Option<PathBuf> {
        self.find_library().map(|(p, _)| p)
    }
}

/// The library loaded in this process and its environment (ONNX Runtime is loaded once).
static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// The environment of the loaded library.
fn environment() -> Result<Environment> {
    LOADED
        .lock()
        .map_err(|_| ModelError::OnnxRuntime("library lock poisoned".into()))?
        .as_ref()
        .map(|(_, env)| env.clone())
        .ok_or_else(|| ModelError::OnnxRuntime("the library is not loaded".into()))
}

/// Load the ONNX Runtime library once per process; the same path again is a no-op.
pub fn load_library(path: &Path) -> Result<()> {
    let mut loaded = LOADED
        .lock()
        .map_err(|_| ModelError::OnnxRuntime("library lock poisoned".into()))?;
    if let Some((p, _)) = loaded.as_ref() {
        if p == path {
            return Ok(());
        }
        return Err(ModelError::OnnxRuntime(format!(
            "already loaded from {} in this process; cannot also load {}",
            p.display(),
            path.display()
        )));
    }
    if !path.is_file() {
        return Err(ModelError::OnnxRuntime(format!(
            "library {} not found (scripts/fetch-onnxruntime.sh installs it into the cache, \
             where it is found without configuration; or point model.onnxruntime_library or \
             ORT_DYLIB_PATH at an onnxruntime wheel's capi/libonnxruntime.so.*)",
            path.display()
        )));
    }
    let env = ort::init_from(path)
        .map_err(|e| ModelError::OnnxRuntime(e.to_string()))?
        .with_name("fusionstream")
        .build()
        .map_err(|e| ModelError::OnnxRuntime(e.to_string()))?;
    *loaded = Some((path.to_path_buf(), env));
    Ok(())
}

#[derive(Debug, Deserialize)]
struct ManifestGraph {
    name: String,
    variants: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    graphs: Vec<ManifestGraph>,
}

/// Whether a part folder has exported graphs of this precision.
pub fn has_graphs(part: &Path, precision: Precision) -> bool {
    read_manifest(part).is_ok_and(|m| {
        m.graphs
            .iter()
            .all(|g| g.variants.contains_key(precision.variant()))
    })
}

fn read_manifest(part: &Path) -> Result<Manifest> {
    nn::read_json(&part.join("onnx").join("manifest.json"))
}

/// One loaded graph. ONNX Runtime's `run` takes the session mutably; the model thread is the
/// only caller, so the lock is never contended.
pub(crate) struct Graph {
    name: String,
    path: PathBuf,
    session: Mutex<Session>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

pub(crate) type Inputs<'v> = Vec<(Cow<'static, str>, SessionInputValue<'v>)>;

impl Graph {
    /// Open graph `name` of `part` in the configured precision and check that its inputs and
    /// outputs are exactly `inputs` and `outputs` (any order).
    fn open(
        part: &Path,
        manifest: &Manifest,
        name: &str,
        opts: &OnnxOptions,
        inputs: &[String],
        outputs: &[String],
    ) -> Result<Self> {
        let entry = manifest
            .graphs
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| {
                ModelError::config(
                    part.join("onnx/manifest.json"),
                    format!("no graph {name:?} (re-export with python -m models.export_onnx)"),
                )
            })?;
        let file = entry
            .variants
            .get(opts.precision.variant())
            .ok_or_else(|| {
                ModelError::config(
                    part.join("onnx/manifest.json"),
                    format!(
                        "graph {name:?} has no {} variant (export with --{})",
                        opts.precision,
                        opts.precision.variant()
                    ),
                )
            })?;
        Self::open_file(name, &part.join("onnx").join(file), opts, inputs, outputs)
    }

    /// Open the graph file at `path` (called `name` in errors) and check that its inputs and
    /// outputs are exactly `inputs` and `outputs` (any order). The library must be loaded.
    pub(crate) fn open_file(
        name: &str,
        path: &Path,
        opts: &OnnxOptions,
        inputs: &[String],
        outputs: &[String],
    ) -> Result<Self> {
        let path = path.to_path_buf();
        let graph_err = |reason: String| ModelError::Graph {
            path: path.clone(),
            reason,
        };
        if !path.is_file() {
            return Err(graph_err("file not found".into()));
        }
        let mut builder = Session::builder(&environment()?)
            .map_err(|e| ModelError::OnnxRuntime(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| ModelError::OnnxRuntime(e.to_string()))?;
        builder = builder
            .with_intra_op_spinning(opts.spinning)
            .map_err(|e| ModelError::OnnxRuntime(e.to_string()))?;
        if opts.intra_threads > 0 {
            builder = builder
                .with_intra_threads(opts.intra_threads)
                .map_err(|e| ModelError::OnnxRuntime(e.to_string()))?;
        }
        if let Some(device) = opts.cuda_device {
            builder = with_cuda(builder, device)?;
        }
        let session = builder
            .commit_from_file(&path)
            .map_err(|e| graph_err(e.to_string()))?;
        let names = |v: &[ort::value::Outlet]| {
            let mut n: Vec<String> = v.iter().map(|o| o.name().to_string()).collect();
            n.sort();
            n
        };
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        let (got_in, got_out) = (names(session.inputs()), names(session.outputs()));
        if got_in != sorted(inputs) || got_out != sorted(outputs) {
            return Err(graph_err(format!(
                "expected inputs {:?} and outputs {:?}, the graph has inputs {got_in:?} and \
                 outputs {got_out:?}",
                sorted(inputs),
                sorted(outputs)
            )));
        }
        Ok(Self {
            name: name.to_string(),
            path,
            session: Mutex::new(session),
        })
    }

    /// A custom metadata entry of the graph (e.g. PP-OCR's `character` dictionary).
    pub(crate) fn custom_metadata(&self, key: &str) -> Result<Option<String>> {
        let session = self
            .session
            .lock()
            .map_err(|_| ModelError::OnnxRuntime("session lock poisoned".into()))?;
        let meta = session.metadata().map_err(ort_err)?;
        Ok(meta.custom(key))
    }

    /// Run with `inputs`; `f` takes what it needs from the outputs.
    pub(crate) fn run<R>(
        &self,
        inputs: Inputs<'_>,
        f: impl FnOnce(&mut SessionOutputs<'_>) -> Result<R>,
    ) -> Result<R> {
        let err = |e: &dyn std::fmt::Display| ModelError::OnnxRun {
            graph: self.name.clone(),
            reason: e.to_string(),
        };
        let mut session = self
            .session
            .lock()
            .map_err(|_| err(&"session lock poisoned"))?;
        let mut out = session.run(inputs).map_err(|e| err(&e))?;
        f(&mut out)
    }
}

#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    device: i32,
) -> Result<ort::session::builder::SessionBuilder> {
    builder
        .with_execution_providers([ort::ep::CUDA::default()
            .with_device_id(device)
            .build()
            .error_on_failure()])
        .map_err(|e| ModelError::OnnxRuntime(format!("CUDA execution provider: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    _device: i32,
) -> Result<ort::session::builder::SessionBuilder> {
    Err(ModelError::OnnxRuntime(
        "this build has no CUDA execution provider support (build with --features cuda)".into(),
    ))
}

fn ort_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::OnnxRuntime(e.to_string())
}

fn f32_tensor(shape: Vec<usize>, data: Vec<f32>) -> Result<DynValue> {
    Ok(Tensor::from_array((shape, data))
        .map_err(ort_err)?
        .into_dyn())
}

/// A borrowed view of host f32 data as an input (no copy).
pub(crate) fn f32_view(shape: Vec<usize>, data: &[f32]) -> Result<SessionInputValue<'_>> {
    Ok(TensorRef::from_array_view((shape, data))
        .map_err(ort_err)?
        .into())
}

fn i64_tensor(shape: Vec<usize>, data: Vec<i64>) -> Result<DynValue> {
    Ok(Tensor::from_array((shape, data))
        .map_err(ort_err)?
        .into_dyn())
}

/// Take output `name` as f32 host data with its shape.
pub(crate) fn take_f32(out: &SessionOutputs<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let v = out
        .get(name)
        .ok_or_else(|| ModelError::OnnxRuntime(format!("output {name} missing")))?;
    let (shape, data) = v.try_extract_tensor::<f32>().map_err(ort_err)?;
    Ok((
        shape.iter().map(|&d| d.max(0) as usize).collect(),
        data.to_vec(),
    ))
}

fn rows_of(shape: &[usize], data: Vec<f32>) -> Vec<Vec<f32>> {
    let width = shape.get(1).copied().unwrap_or(0).max(1);
    data.chunks(width).map(<[f32]>::to_vec).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn precisions_parse() {
        assert_eq!(Precision::parse("int8").unwrap(), Precision::Int8);
        assert_eq!(Precision::parse("fp16").unwrap(), Precision::F16);
        assert!(Precision::parse("int4").is_err());
    }

    #[test]
    fn a_missing_library_is_a_clear_error() {
        let err = load_library(Path::new("/nonexistent/libonnxruntime.so"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
