//! Media from S3 (or an S3-compatible store such as MinIO): endpoint override and path-style
//! addressing, credentials from the standard chain (environment, profile, web identity for
//! IRSA), an allowed-bucket list, the size checked from the response's Content-Length before
//! the body is read, and typed errors that feed the degradation matrix. Retries and the
//! per-attempt timeout belong to the pipeline (one policy for every store), so the SDK's own
//! retries are off.

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;

use crate::media::FetchError;

/// The SDK's HTTP(S) client: hyper with rustls on ring, the system's trusted roots. (The SDK's
/// own default is the same client on aws-lc; ring is already in the build for Parquet.) Plain
/// `http://` endpoints such as a local MinIO work too.
pub fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// How to reach the store.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Endpoint override (`http://127.0.0.1:9000` for MinIO); `None` for AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Path-style addressing (MinIO).
    pub force_path_style: bool,
    /// Buckets events may reference; empty: any.
    pub allowed_buckets: Vec<String>,
    /// Largest object fetched, bytes.
    pub max_bytes: u64,
}

/// An S3 media store.
#[derive(Debug, Clone)]
pub struct S3Media {
    client: aws_sdk_s3::Client,
    settings: S3Settings,
}

impl S3Media {
    /// A client with credentials from the standard chain.
    pub async fn new(settings: S3Settings) -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(https_client())
            .region(aws_config::Region::new(settings.region.clone()))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await;
        let mut b =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.force_path_style);
        if let Some(e) = &settings.endpoint {
            b = b.endpoint_url(e);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            settings,
        }
    }

    /// The SDK client (tests and set-up use it to create buckets and upload).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Refuse a bucket outside `allowed_buckets` (when the list is not empty).
    fn allow(&self, bucket: &str) -> Result<(), FetchError> {
        let allowed = &self.settings.allowed_buckets;
        if allowed.is_empty() || allowed.iter().any(|b| b == bucket) {
            Ok(())
        } else {
            Err(FetchError::Forbidden(format!(
                "bucket {bucket} is not in s3.allowed_buckets"
            )))
        }
    }

    /// Fetch `s3://bucket/key`.
    pub async fn fetch(&self, bucket: &str, key: &str) -> Result<Vec<u8>, FetchError> {
        self.allow(bucket)?;
        let s = &self.settings;
        let name = format!("s3://{bucket}/{key}");
        let resp = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, &name))?;
        let len = resp.content_length().unwrap_or(0).max(0) as u64;
        if len > s.max_bytes {
            return Err(FetchError::TooLarge {
                size: len,
                limit: s.max_bytes,
            });
        }
        // Read the body with the limit enforced as it streams (a wrong Content-Length cannot
        // make us buffer more than the limit).
        let mut body = resp.body;
        let mut out = Vec::with_capacity(len as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| FetchError::Transient(format!("{name}: {e}")))?
        {
            if (out.len() + chunk.len()) as u64 > s.max_bytes {
                return Err(FetchError::TooLarge {
                    size: (out.len() + chunk.len()) as u64,
                    limit: s.max_bytes,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// One page of a listing (see [`S3Media::list_after`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Object keys, in key order.
    pub keys: Vec<String>,
    /// More keys follow the last one.
    pub truncated: bool,
}

impl S3Media {
    /// The keys under `prefix` that sort after `start_after`, at most `max` of them, in key
    /// order. Listing again from the last key of a page walks the whole prefix, and resumes
    /// it from any key (a checkpoint) without a continuation token. The allowed-bucket list
    /// applies.
    pub async fn list_after(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max: i32,
    ) -> Result<ListPage, FetchError> {
        self.allow(bucket)?;
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(max);
        if let Some(k) = start_after {
            req = req.start_after(k);
        }
        let page = req
            .send()
            .await
            .map_err(|e| classify_any(e, &format!("s3://{bucket}/{prefix}")))?;
        Ok(ListPage {
            keys: page
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect(),
            truncated: page.is_truncated().unwrap_or(false),
        })
    }
}

/// An object of a listing and what identifies its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Key.
    pub key: String,
    /// ETag (changes with the content).
    pub etag: String,
    /// Size, bytes.
    pub size: i64,
}

impl S3Media {
    /// Every object under `prefix`, in key order, with its ETag and size (all pages).
    pub async fn objects_under(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<ObjectVersion>, FetchError> {
        self.allow(bucket)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_objects_v2().bucket(bucket).prefix(prefix);
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = req
                .send()
                .await
                .map_err(|e| classify_any(e, &format!("s3://{bucket}/{prefix}")))?;
            out.extend(page.contents().iter().filter_map(|o| {
                Some(ObjectVersion {
                    key: o.key()?.to_owned(),
                    etag: o.e_tag().unwrap_or_default().to_owned(),
                    size: o.size().unwrap_or(0),
                })
            }));
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }
}

impl S3Media {
    /// Write `bytes` as `s3://bucket/key` (the index's snapshots; the bucket list applies).
    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), FetchError> {
        self.allow(bucket)?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| classify_any(e, &format!("s3://{bucket}/{key}")))?;
        Ok(())
    }

    /// Remove `s3://bucket/key` (absent is not an error).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), FetchError> {
        self.allow(bucket)?;
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify_any(e, &format!("s3://{bucket}/{key}")))?;
        Ok(())
    }
}

/// Errors of [`S3Media::download_prefix`].
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Listing or reading an object failed.
    #[error("s3://{bucket}/{key}: {detail}")]
    S3 {
        /// Bucket.
        bucket: String,
        /// Key or prefix.
        key: String,
        /// What went wrong.
        detail: String,
    },
    /// Nothing under the prefix.
    #[error("nothing under s3://{bucket}/{prefix}")]
    Empty {
        /// Bucket.
        bucket: String,
        /// Prefix.
        prefix: String,
    },
    /// A key that would escape the destination folder.
    #[error("refusing object key {0:?} (it would escape the bundle folder)")]
    UnsafeKey(String),
    /// Writing the files.
    #[error("writing {path}: {source}")]
    Io {
        /// Path.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Marker of a finished download in a cached folder.
const COMPLETE: &str = ".fusionstream-complete";

impl S3Media {
    /// Copy every object under `s3://bucket/prefix/` into `dest` (a store made for bundles:
    /// no bucket list, no size limit), keeping the relative key
    /// paths, unless a finished copy is already there (then nothing is fetched: a cached
    /// prefix is trusted as immutable). The copy is assembled in a temporary sibling folder
    /// and renamed into place, so a crash never leaves a half bundle that looks finished.
    /// Returns whether anything was downloaded. Long: listing, copying and the atomic
    /// rename with their error contexts, one step after the other.
    pub async fn download_prefix(
        &self,
        bucket: &str,
        prefix: &str,
        dest: &std::path::Path,
    ) -> Result<bool, DownloadError> {
        if dest.join(COMPLETE).is_file() {
            return Ok(false);
        }
        let io = |path: &std::path::Path| {
            let path = path.to_owned();
            move |source| DownloadError::Io { path, source }
        };
        let prefix = prefix.trim_matches('/');
        let list_prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let s3err = |key: &str, e: &dyn std::fmt::Display| DownloadError::S3 {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            detail: e.to_string(),
        };
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&list_prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| s3err(&list_prefix, &aws_sdk_s3::error::DisplayErrorContext(&e)))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    if !k.ends_with('/') {
                        keys.push(k.to_owned());
                    }
                }
            }
        }
        if keys.is_empty() {
            return Err(DownloadError::Empty {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        let parent = dest.parent().unwrap_or(std::path::Path::new("."));
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io(parent))?;
        let tmp = parent.join(format!(
            ".{}.partial-{}",
            dest.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("bundle"),
            std::process::id()
        ));
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        for key in &keys {
            let rel = &key[list_prefix.len()..];
            let rel_path = std::path::Path::new(rel);
            if rel_path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(DownloadError::UnsafeKey(key.clone()));
            }
            let file = tmp.join(rel_path);
            if let Some(d) = file.parent() {
                tokio::fs::create_dir_all(d).await.map_err(io(d))?;
            }
            // The same fetch as media (with this store's size limit and bucket list).
            let bytes = self.fetch(bucket, key).await.map_err(|e| s3err(key, &e))?;
            tokio::fs::write(&file, &bytes).await.map_err(io(&file))?;
        }
        tokio::fs::write(tmp.join(COMPLETE), format!("s3://{bucket}/{prefix}\n"))
            .await
            .map_err(io(&tmp))?;
        let _ = tokio::fs::remove_dir_all(dest).await;
        tokio::fs::rename(&tmp, dest).await.map_err(io(dest))?;
        Ok(true)
    }
}

fn classify<R: std::fmt::Debug>(e: SdkError<GetObjectError, R>, name: &str) -> FetchError {
    if let SdkError::ServiceError(se) = &e {
        if matches!(se.err(), GetObjectError::NoSuchKey(_)) {
            return FetchError::NotFound(name.to_owned());
        }
    }
    classify_any(e, name)
}

/// Any S3 operation's error by its code: missing, denied, or worth retrying.
fn classify_any<E, R>(e: SdkError<E, R>, name: &str) -> FetchError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &e {
        SdkError::ServiceError(se) => {
            let code = aws_sdk_s3::error::ProvideErrorMetadata::code(se.err()).unwrap_or("");
            match code {
                "NoSuchKey" | "NoSuchBucket" | "NotFound" => FetchError::NotFound(name.to_owned()),
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AllAccessDisabled" => FetchError::AccessDenied(format!("{name}: {code}")),
                "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" => {
                    FetchError::Transient(format!("{name}: {code}"))
                }
                _ => FetchError::Transient(format!(
                    "{name}: {code} {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )),
            }
        }
        SdkError::TimeoutError(_) => FetchError::Timeout(std::time::Duration::ZERO),
        // Connection refused or reset, a response that could not be read: the store may come
        // back; the caller retries with backoff.
        _ => FetchError::Transient(format!(
            "{name}: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        )),
    }
}
