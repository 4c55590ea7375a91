//! Typed errors of the model runtime, each classified for the pipeline.

use fusionstream_core::ReasonCode;
use std::path::PathBuf;

pub use fusionstream_core::error::ErrorClass;
pub use fusionstream_core::isolate::Failure;

/// Why an image was refused. Every variant has a stable reason code used in degradation
/// flags and dead-letter records.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Zero bytes.
    #[error("image is empty")]
    Empty,
    /// More encoded bytes than the configured limit (checked before decoding).
    #[error("image has {bytes} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Encoded size.
        bytes: usize,
        /// Configured `max_encoded_bytes`.
        limit: usize,
    },
    /// More pixels than the configured limit (checked from the header, before allocating).
    #[error("image is {width}x{height} pixels, more than the limit of {limit} pixels")]
    TooManyPixels {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// Configured `max_pixels`.
        limit: u64,
    },
    /// Not a format the runtime decodes.
    #[error("unsupported or unrecognised image format")]
    UnsupportedFormat,
    /// The bytes claim a format but do not decode.
    #[error("corrupt image: {0}")]
    Corrupt(String),
}

impl ImageError {
    /// Stable, machine-readable reason code.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            ImageError::Empty => ReasonCode::ImageEmpty,
            ImageError::TooLarge { .. } => ReasonCode::ImageTooLarge,
            ImageError::TooManyPixels { .. } => ReasonCode::ImageTooManyPixels,
            ImageError::UnsupportedFormat => ReasonCode::ImageUnsupportedFormat,
            ImageError::Corrupt(_) => ReasonCode::ImageCorrupt,
        }
    }
}

/// Errors of the model runtime.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file of a model directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A config file is missing a key, has a wrong value, or is not JSON/TOML.
    #[error("invalid config {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor operation failed; a missing or mis-shaped weight also lands here.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An image was refused.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The input is not usable by the model (too long text, wrong shape).
    #[error("invalid input: {0}")]
    Input(String),
    /// The checkpoint asks for something this runtime does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The ONNX Runtime library is missing, unloadable or too old, or an execution provider
    /// (CUDA) could not be registered.
    #[error("ONNX Runtime: {0}")]
    OnnxRuntime(String),
    /// An ONNX graph does not load or does not have the inputs and outputs the runtime drives.
    #[error("ONNX graph {path}: {reason}")]
    Graph {
        /// The graph file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// ONNX Runtime failed while running a graph.
    #[error("ONNX Runtime run of {graph}: {reason}")]
    OnnxRun {
        /// Graph name.
        graph: String,
        /// The runtime's message.
        reason: String,
    },
}

impl ModelError {
    /// Poison (the input) or fatal (the runtime).
    pub fn class(&self) -> ErrorClass {
        match self {
            ModelError::Image(_) | ModelError::Input(_) => ErrorClass::Poison,
            _ => ErrorClass::Fatal,
        }
    }

    /// What a failed batch call says about its items, for batch failure isolation
    /// ([`fusionstream_core::isolate`]): errors that only loading can raise, and device
    /// losses, are the runtime's ([`Failure::Fatal`]); out-of-memory depends on the batch's
    /// size; anything else may be an item's doing.
    pub fn batch_failure(&self) -> Failure {
        match self {
            ModelError::Io { .. }
            | ModelError::Config { .. }
            | ModelError::Unsupported(_)
            | ModelError::OnnxRuntime(_)
            | ModelError::Graph { .. } => Failure::Fatal,
            other => failure_from_message(&other.to_string()),
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        ModelError::Config {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Device and memory failures are only told apart by their messages (candle and ONNX
/// Runtime report CUDA errors as text).
fn failure_from_message(msg: &str) -> Failure {
    const DEVICE_LOST: [&str; 9] = [
        "illegal address",
        "illegal memory access",
        "launch failed",
        "device-side assert",
        "context is destroyed",
        "devices unavailable",
        "ecc uncorrectable",
        "no cuda-capable device",
        "device lost",
    ];
    const OUT_OF_MEMORY: [&str; 4] = [
        "out of memory",
        "failed to allocate",
        "cannot allocate memory",
        "bad_alloc",
    ];
    // `CUDA_ERROR_OUT_OF_MEMORY` and "out of memory" alike.
    let m = msg.to_ascii_lowercase().replace('_', " ");
    if DEVICE_LOST.iter().any(|p| m.contains(p)) {
        Failure::Fatal
    } else if OUT_OF_MEMORY.iter().any(|p| m.contains(p)) {
        Failure::OutOfMemory
    } else {
        Failure::Item
    }
}

/// Result alias of the crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(msg: &str) -> ModelError {
        ModelError::Tensor(candle_core::Error::Msg(msg.into()))
    }

    #[test]
    fn batch_failures_are_classified() {
        assert_eq!(
            tensor("shape mismatch in matmul").batch_failure(),
            Failure::Item
        );
        assert_eq!(
            tensor("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")").batch_failure(),
            Failure::OutOfMemory
        );
        let ort_oom = ModelError::OnnxRun {
            graph: "vision".into(),
            reason: "Failed to allocate memory for requested buffer of size 1073741824".into(),
        };
        assert_eq!(ort_oom.batch_failure(), Failure::OutOfMemory);
        assert_eq!(
            tensor("DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, \"an illegal memory access\")")
                .batch_failure(),
            Failure::Fatal
        );
        assert_eq!(
            tensor("CUDA_ERROR_LAUNCH_FAILED").batch_failure(),
            Failure::Fatal
        );
        assert_eq!(
            ModelError::OnnxRuntime("library gone".into()).batch_failure(),
            Failure::Fatal
        );
    }
}
