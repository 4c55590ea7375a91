//! Files on S3 through the worker's own S3 client (the endpoint, path style and credentials
//! of `[s3]`): Iceberg's [`Storage`] for the table writers and the catalog's metadata reads,
//! and the plain writer the Parquet mode uses.
//!
//! A file is written with a multipart upload in parts of [`PART_BYTES`] (one `PutObject`
//! when it is smaller): a data file never sits whole in memory, and an unfinished upload
//! (a crash, an aborted transaction) leaves no object behind: nothing half-written is ever
//! visible under a committed name.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt as _;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

/// Size of one part of a multipart upload (S3's minimum is 5 MiB, except the last).
pub const PART_BYTES: usize = 8 << 20;

/// `s3://bucket/key` (also `s3a://`) → (bucket, key).
pub fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url
        .strip_prefix("s3://")
        .or_else(|| url.strip_prefix("s3a://"))?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

fn invalid(url: &str) -> Error {
    Error::new(
        ErrorKind::DataInvalid,
        format!("not an s3://bucket/key location: {url}"),
    )
}

fn failed(what: &str, url: &str, e: impl std::fmt::Display) -> Error {
    // Transient as far as the table writer knows: its commit retries decide.
    Error::new(ErrorKind::Unexpected, format!("{what} {url}: {e}"))
}

/// The S3 client as Iceberg's storage. (Serialisable as Iceberg asks of a storage; a
/// deserialised copy has no client and refuses every call.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3Storage {
    #[serde(skip)]
    client: Option<aws_sdk_s3::Client>,
}

impl S3Storage {
    /// The storage over `client`.
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        Self {
            client: Some(client),
        }
    }

    fn client(&self) -> Result<&aws_sdk_s3::Client> {
        self.client.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "a deserialised S3Storage has no client",
            )
        })
    }

    /// A multipart writer of `url`.
    pub fn file_writer(&self, url: &str) -> Result<S3Writer> {
        let (bucket, key) = split_url(url).ok_or_else(|| invalid(url))?;
        Ok(S3Writer {
            client: self.client()?.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            buf: BytesMut::new(),
            upload: None,
            parts: Vec::new(),
            written: 0,
            closed: false,
        })
    }

    /// Write `bytes` to `url` in one request.
    pub async fn put(&self, url: &str, bytes: Bytes) -> Result<()> {
        let (bucket, key) = split_url(url).ok_or_else(|| invalid(url))?;
        self.client()?
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| failed("writing", url, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// The object at `url`, `None` if there is none.
    pub async fn get(&self, url: &str) -> Result<Option<Bytes>> {
        let (bucket, key) = split_url(url).ok_or_else(|| invalid(url))?;
        match self
            .client()?
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => {
                let body = o
                    .body
                    .collect()
                    .await
                    .map_err(|e| failed("reading", url, e))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(failed(
                "reading",
                url,
                aws_sdk_s3::error::DisplayErrorContext(e),
            )),
        }
    }

    /// Keys under `url` (a prefix), in key order, as `s3://` URLs.
    pub async fn list(&self, url: &str) -> Result<Vec<String>> {
        let (bucket, prefix) = split_url(url).ok_or_else(|| invalid(url))?;
        let mut out = Vec::new();
        let mut pages = self
            .client()?
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(|e| failed("listing", url, aws_sdk_s3::error::DisplayErrorContext(e)))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(format!("s3://{bucket}/{k}"));
                }
            }
        }
        Ok(out)
    }

    async fn head(&self, url: &str) -> Result<Option<u64>> {
        let (bucket, key) = split_url(url).ok_or_else(|| invalid(url))?;
        match self
            .client()?
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(h) => Ok(Some(h.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(failed(
                "reading the size of",
                url,
                aws_sdk_s3::error::DisplayErrorContext(e),
            )),
        }
    }
}

#[async_trait]
#[typetag::serde]
impl Storage for S3Storage {
    async fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.head(path).await?.is_some())
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        match self.head(path).await? {
            Some(size) => Ok(FileMetadata { size }),
            None => Err(Error::new(
                ErrorKind::DataInvalid,
                format!("no such file: {path}"),
            )),
        }
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        self.get(path)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::DataInvalid, format!("no such file: {path}")))
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        let (bucket, key) = split_url(path).ok_or_else(|| invalid(path))?;
        Ok(Box::new(S3Reader {
            client: self.client()?.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        self.put(path, bs).await
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        Ok(Box::new(self.file_writer(path)?))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let (bucket, key) = split_url(path).ok_or_else(|| invalid(path))?;
        self.client()?
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("deleting", path, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let prefix = if path.ends_with('/') {
            path.to_owned()
        } else {
            format!("{path}/")
        };
        for url in self.list(&prefix).await? {
            self.delete(&url).await?;
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        while let Some(p) = paths.next().await {
            self.delete(&p).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_owned()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_owned()))
    }
}

/// Builds the [`S3Storage`] for every table the catalog loads (whatever S3 properties the
/// catalog hands out: the worker's own client and credentials are used).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3StorageFactory(pub S3Storage);

#[typetag::serde]
impl StorageFactory for S3StorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.0.clone()))
    }
}

/// Ranged reads of one object.
struct S3Reader {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
}

#[async_trait]
impl FileRead for S3Reader {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let url = format!("s3://{}/{}", self.bucket, self.key);
        let o = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| failed("reading", &url, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let body = o
            .body
            .collect()
            .await
            .map_err(|e| failed("reading", &url, e))?;
        Ok(body.into_bytes())
    }
}

/// A multipart upload of one object: parts go up as they fill; `close` completes it (or
/// puts the whole object in one request when it never reached one part).
#[derive(Debug)]
pub struct S3Writer {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    buf: BytesMut,
    upload: Option<String>,
    parts: Vec<CompletedPart>,
    written: u64,
    closed: bool,
}

impl S3Writer {
    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    async fn upload_part(&mut self, part: Bytes) -> Result<()> {
        let url = self.url();
        let id = match &self.upload {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .send()
                    .await
                    .map_err(|e| {
                        failed(
                            "starting the upload of",
                            &url,
                            aws_sdk_s3::error::DisplayErrorContext(e),
                        )
                    })?;
                let id = created
                    .upload_id()
                    .ok_or_else(|| failed("starting the upload of", &url, "no upload id"))?
                    .to_owned();
                self.upload = Some(id.clone());
                id
            }
        };
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let done = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&id)
            .part_number(number)
            .body(ByteStream::from(part))
            .send()
            .await
            .map_err(|e| {
                failed(
                    "uploading a part of",
                    &url,
                    aws_sdk_s3::error::DisplayErrorContext(e),
                )
            })?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(done.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }
}

#[async_trait]
impl FileWrite for S3Writer {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        self.written += bs.len() as u64;
        self.buf.extend_from_slice(&bs);
        while self.buf.len() >= PART_BYTES {
            let part = self.buf.split_to(PART_BYTES).freeze();
            self.upload_part(part).await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if self.closed {
            return Err(Error::new(ErrorKind::Unexpected, "file closed twice"));
        }
        self.closed = true;
        let rest = std::mem::take(&mut self.buf).freeze();
        let url = self.url();
        let Some(id) = self.upload.clone() else {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .body(ByteStream::from(rest))
                .send()
                .await
                .map_err(|e| failed("writing", &url, aws_sdk_s3::error::DisplayErrorContext(e)))?;
            return Ok(());
        };
        if !rest.is_empty() {
            self.upload_part(rest).await?;
        }
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(std::mem::take(&mut self.parts)))
            .build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(id)
            .multipart_upload(parts)
            .send()
            .await
            .map_err(|e| {
                failed(
                    "completing the upload of",
                    &url,
                    aws_sdk_s3::error::DisplayErrorContext(e),
                )
            })?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn splits_s3_urls() {
        assert_eq!(split_url("s3://b/k/x.parquet"), Some(("b", "k/x.parquet")));
        assert_eq!(split_url("s3a://b/k"), Some(("b", "k")));
        assert_eq!(split_url("s3://b/"), None);
        assert_eq!(split_url("s3://b"), None);
        assert_eq!(split_url("file:///tmp/x"), None);
    }
}
