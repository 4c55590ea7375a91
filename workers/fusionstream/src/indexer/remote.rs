//! Index snapshots on S3 (`index.dir = "s3://bucket/prefix"`): the index works in a local
//! snapshot folder (`index.cache_dir`) and copies each snapshot up — its files under
//! `prefix/snap-<n>/`, then `prefix/CURRENT` naming it, last, so a reader never finds a
//! `CURRENT` whose files are not all there. Starting (or searching) on a machine whose
//! folder is behind copies the current snapshot down first. The offsets are committed only
//! after the upload: a snapshot that is not on S3 is not durable.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fusionstream_index::snapshot::Written;
use fusionstream_index::SnapshotDir;
use fusionstream_io::media::FetchError;
use fusionstream_io::s3::S3Media;

/// A snapshot location on S3.
#[derive(Debug)]
pub struct Remote {
    s3: S3Media,
    bucket: String,
    prefix: String,
}

/// `s3://bucket/prefix` split, or None for a local path.
pub fn parse_url(dir: &Path) -> anyhow::Result<Option<(String, String)>> {
    let text = dir.to_string_lossy();
    if !text.starts_with("s3://") {
        return Ok(None);
    }
    let (bucket, prefix) = fusionstream_core::event::split_s3_url(&text)
        .with_context(|| format!("index.dir {text:?}: expected s3://bucket/prefix"))?;
    Ok(Some((
        bucket.to_owned(),
        prefix.trim_matches('/').to_owned(),
    )))
}

fn sequence_of(name: &str) -> Option<u64> {
    name.trim().strip_prefix("snap-")?.parse().ok()
}

impl Remote {
    /// The store at `s3://bucket/prefix` through `settings`.
    pub async fn new(
        settings: fusionstream_io::s3::S3Settings,
        bucket: String,
        prefix: String,
    ) -> Remote {
        Remote {
            s3: S3Media::new(settings).await,
            bucket,
            prefix,
        }
    }

    fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// The sequence number `prefix/CURRENT` names (none before the first upload).
    pub async fn current(&self) -> anyhow::Result<Option<u64>> {
        match self.s3.fetch(&self.bucket, &self.key("CURRENT")).await {
            Ok(bytes) => {
                let name = String::from_utf8_lossy(&bytes).into_owned();
                sequence_of(&name).map(Some).with_context(|| {
                    format!(
                        "s3://{}/{}: names {name:?}",
                        self.bucket,
                        self.key("CURRENT")
                    )
                })
            }
            Err(FetchError::NotFound(_)) => Ok(None),
            Err(e) => Err(e).context("reading the index's CURRENT on S3"),
        }
    }

    /// Copy the remote current snapshot into `local` and make it current there, unless
    /// `local` already holds it or a later one. Returns the sequence pulled, if any.
    pub async fn pull(&self, local: &SnapshotDir) -> anyhow::Result<Option<u64>> {
        let Some(remote) = self.current().await? else {
            return Ok(None);
        };
        let here = local.current()?.map(|(_, s)| s);
        if here.is_some_and(|h| h >= remote) {
            return Ok(None);
        }
        let name = format!("snap-{remote:08}");
        let dest: PathBuf = local.root().join(&name);
        self.s3
            .download_prefix(&self.bucket, &self.key(&name), &dest)
            .await
            .with_context(|| format!("copying s3://{}/{} down", self.bucket, self.key(&name)))?;
        local.set_current(remote)?;
        tracing::info!(sequence = remote, from = %format!("s3://{}/{}", self.bucket, self.prefix), "index snapshot copied from S3");
        Ok(Some(remote))
    }

    /// Copy a written snapshot up and name it in `CURRENT`; then remove remote snapshots
    /// older than the one before it.
    pub async fn push(&self, w: &Written) -> anyhow::Result<()> {
        let name = format!("snap-{:08}", w.sequence);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&w.dir)
            .with_context(|| w.dir.display().to_string())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in &files {
            let file = f
                .file_name()
                .and_then(|n| n.to_str())
                .context("file name")?;
            let bytes = tokio::fs::read(f)
                .await
                .with_context(|| f.display().to_string())?;
            self.s3
                .put(&self.bucket, &self.key(&format!("{name}/{file}")), bytes)
                .await
                .with_context(|| format!("uploading {}", f.display()))?;
        }
        self.s3
            .put(
                &self.bucket,
                &self.key("CURRENT"),
                format!("{name}\n").into_bytes(),
            )
            .await
            .context("naming the snapshot in CURRENT on S3")?;
        // Older snapshots go (the one before stays for a reader that read CURRENT just
        // before); a failure here leaves garbage, not a broken index.
        let listed = self
            .s3
            .objects_under(&self.bucket, &self.key("snap-"))
            .await
            .unwrap_or_default();
        for o in listed {
            let rel = o.key.strip_prefix(&self.key("")).unwrap_or(&o.key);
            let old = rel
                .split('/')
                .next()
                .and_then(sequence_of)
                .is_some_and(|s| s + 1 < w.sequence);
            if old {
                let _ = self.s3.delete(&self.bucket, &o.key).await;
            }
        }
        Ok(())
    }
}
