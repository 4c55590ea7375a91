//! The backfill source: its spec from the configuration, resumed from the checkpoint file
//! or, with the lake sink, from the lake's last commit of this shard.

use anyhow::Context as _;
use fusionstream_io::backfill::{backfill, BackfillCheckpoint, BackfillSource, BackfillSpec};
use fusionstream_io::local::BackfillPosition;
use fusionstream_io::s3::S3Media;
use fusionstream_lake::{Lake, LakeSettings};
use sha2::Digest as _;

use super::Common;
use crate::config::Config;

/// The backfill the configuration names, and the S3 store it lists.
pub(super) fn backfill_spec(
    c: &Config,
    common: &Common,
) -> anyhow::Result<(BackfillSpec, S3Media)> {
    let (bucket, prefix) = c
        .backfill
        .bucket_and_prefix()
        .context("backfill.prefix is not an s3:// URL")?;
    let spec = BackfillSpec {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        shard: c.backfill.shard,
        shards: c.backfill.shards,
        suffixes: c.backfill.include_suffixes.clone(),
        tasks: c.backfill_tasks().map_err(anyhow::Error::msg)?,
        page: c.backfill.list_page,
        backoff: common.settings.fetch_backoff,
    };
    let store = common
        .media
        .s3
        .clone()
        .context("a backfill needs the S3 store (s3.enabled)")?;
    Ok((spec, store))
}

/// The backfill's listing source and checkpoint, from `resume`.
pub(super) fn start_backfill(
    c: &Config,
    store: S3Media,
    spec: BackfillSpec,
    resume: BackfillPosition,
) -> (BackfillSource, BackfillCheckpoint) {
    tracing::info!(
        source = %spec.url(),
        shard = spec.shard,
        shards = spec.shards,
        start_after = resume.start_after.as_deref().unwrap_or(""),
        done_before = resume.done,
        "backfill"
    );
    backfill(store, spec, resume, &c.checkpoint.path)
}

/// The lake's writer name: `lake.writer`, or one per backfill shard.
pub(super) fn lake_writer(c: &Config, spec: &BackfillSpec) -> String {
    if !c.lake.writer.trim().is_empty() {
        return c.lake.writer.trim().to_owned();
    }
    let hash = sha2::Sha256::digest(spec.url().as_bytes());
    let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("backfill-{hex}-{}-of-{}", spec.shard, spec.shards)
}

/// Open the lake of `[lake]` for `writer` (its last commit rolled forward).
pub(super) async fn open_lake(
    c: &Config,
    client: &aws_sdk_s3::Client,
    writer: &str,
) -> anyhow::Result<Lake> {
    let l = &c.lake;
    let settings = LakeSettings {
        format: l.format,
        catalog_uri: l.catalog_uri.clone(),
        warehouse: l.warehouse.clone(),
        namespace: l.namespace.clone(),
        target_file_bytes: l.target_file_bytes,
        row_group_bytes: l.row_group_bytes,
        batch_rows: l.batch_rows,
    };
    Lake::open(&settings, client.clone(), writer)
        .await
        .with_context(|| format!("opening the lake at {} ({})", l.warehouse, l.catalog_uri))
}
