//! Where an event's image comes from: a local file under the media root, bytes inline in
//! the event, or an S3 object (when the worker has a store configured); why a fetch failed,
//! with a reason code and a class. The local store is `local.rs`, S3 is [`crate::s3`].

use fusionstream_core::event::ImageSource;
use fusionstream_core::ReasonCode;
use fusionstream_core::{Classify, ErrorClass};

use crate::s3::S3Media;

mod local;

pub use local::LocalMedia;

/// Why media could not be fetched. Every variant has a stable reason code.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No such object or file.
    #[error("not found: {0}")]
    NotFound(String),
    /// Permission denied.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Larger than the limit (checked before reading).
    #[error("{size} bytes, limit {limit}")]
    TooLarge {
        /// Size.
        size: u64,
        /// Limit.
        limit: u64,
    },
    /// Outside what this worker may read (path escapes the media root, bucket not allowed).
    #[error("refused: {0}")]
    Forbidden(String),
    /// No store for this kind of reference is configured.
    #[error("no store configured for {0}")]
    Unconfigured(String),
    /// A fetch attempt took longer than its timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Transient failure (connection reset, throttling, 5xx).
    #[error("transient: {0}")]
    Transient(String),
}

impl FetchError {
    /// Stable reason code (used in degradation flags and dead letters).
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            FetchError::NotFound(_) => ReasonCode::ImageNotFound,
            FetchError::AccessDenied(_) => ReasonCode::ImageAccessDenied,
            FetchError::TooLarge { .. } => ReasonCode::ImageTooLarge,
            FetchError::Forbidden(_) => ReasonCode::ImageRefForbidden,
            FetchError::Unconfigured(_) => ReasonCode::ImageStoreUnconfigured,
            FetchError::Timeout(_) => ReasonCode::ImageFetchTimeout,
            FetchError::Transient(_) => ReasonCode::ImageFetchFailed,
        }
    }
}

impl Classify for FetchError {
    fn class(&self) -> ErrorClass {
        match self {
            FetchError::Timeout(_) | FetchError::Transient(_) => ErrorClass::Retryable,
            _ => ErrorClass::Poison,
        }
    }
}

/// The media stores of a worker.
#[derive(Debug, Clone)]
pub struct MediaStores {
    /// Local files.
    pub local: LocalMedia,
    /// S3, when configured.
    pub s3: Option<S3Media>,
}

impl MediaStores {
    /// Fetch the bytes of an image reference (inline images need no fetch).
    pub async fn fetch(&self, src: &ImageSource) -> Result<Vec<u8>, FetchError> {
        match src {
            ImageSource::Local(p) => self.local.fetch(p).await,
            ImageSource::Inline(b) => Ok(b.clone()),
            ImageSource::S3 { bucket, key } => match &self.s3 {
                Some(s3) => s3.fetch(bucket, key).await,
                None => Err(FetchError::Unconfigured(format!(
                    "s3://{bucket}/… (this worker has no S3 store configured)"
                ))),
            },
        }
    }
}
