//! Where an event's image comes from: a local file under the media root, bytes inline in
//! the event, or an S3 object (when the worker has a store configured).

use fusionstream_core::event::ImageSource;

mod local;

use crate::s3::S3Media;
pub use local::{FetchError, LocalMedia};

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
