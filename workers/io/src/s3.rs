//! Media from S3 (or an S3-compatible store such as MinIO): endpoint override and path-style
//! addressing, credentials from the standard chain (environment, profile, web identity for
//! IRSA), an allowed-bucket list, the size checked from the response's Content-Length before
//! the body is read, and typed errors that feed the degradation matrix. Retries and the
//! per-attempt timeout belong to the pipeline (one policy for every store), so the SDK's own
//! retries are off.

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;

use crate::media::FetchError;

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

    /// Fetch `s3://bucket/key`.
    pub async fn fetch(&self, bucket: &str, key: &str) -> Result<Vec<u8>, FetchError> {
        let s = &self.settings;
        if !s.allowed_buckets.is_empty() && !s.allowed_buckets.iter().any(|b| b == bucket) {
            return Err(FetchError::Forbidden(format!(
                "bucket {bucket} is not in s3.allowed_buckets"
            )));
        }
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

fn classify<R: std::fmt::Debug>(e: SdkError<GetObjectError, R>, name: &str) -> FetchError {
    match &e {
        SdkError::ServiceError(se) => {
            if matches!(se.err(), GetObjectError::NoSuchKey(_)) {
                return FetchError::NotFound(name.to_owned());
            }
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
        // back; the pipeline retries with backoff.
        _ => FetchError::Transient(format!(
            "{name}: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        )),
    }
}
