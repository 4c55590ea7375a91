//! Validation of `[lake]`, the lake sink's settings (docs/lake.md).

use fusionstream_lake::LakeFormat;

use super::{Config, SinkKind, SourceKind};

impl Config {
    /// The lake, when it is the sink.
    pub(super) fn validate_lake(&self, errors: &mut Vec<String>) {
        if self.sink.kind != SinkKind::Lake {
            return;
        }
        let l = &self.lake;
        if !self.s3.enabled {
            errors.push("sink.kind = \"lake\" needs s3.enabled = true".into());
        }
        let s3 = l
            .warehouse
            .strip_prefix("s3://")
            .and_then(|r| r.split_once('/').map(|(b, _)| b).or(Some(r)));
        if s3.is_none_or(str::is_empty) {
            errors.push(format!(
                "lake.warehouse {:?}: expected s3://bucket/prefix",
                l.warehouse
            ));
        }
        if l.format == LakeFormat::Iceberg
            && !(l.catalog_uri.starts_with("http://") || l.catalog_uri.starts_with("https://"))
        {
            errors.push(format!(
                "lake.catalog_uri {:?}: lake.format = \"iceberg\" needs the REST catalog's \
                 http(s) URL",
                l.catalog_uri
            ));
        }
        if l.namespace.trim().is_empty() || l.namespace.contains('/') {
            errors.push(format!(
                "lake.namespace {:?}: expected a name (dots separate levels)",
                l.namespace
            ));
        }
        for (name, v) in [
            ("lake.target_file_bytes", l.target_file_bytes),
            ("lake.batch_rows", l.batch_rows as u64),
            ("lake.commit_max_events", l.commit_max_events as u64),
        ] {
            if v == 0 {
                errors.push(format!("{name} must be at least 1"));
            }
        }
        if l.row_group_bytes < 1 << 20 {
            errors.push("lake.row_group_bytes must be at least 1 MiB".into());
        }
        if l.commit_interval.is_zero() {
            errors.push("lake.commit_interval must be more than 0".into());
        }
        match self.source.kind {
            SourceKind::Backfill | SourceKind::Kafka => {}
            // A local source keeps its positions in the checkpoint file, which the lake's
            // commits do not carry.
            SourceKind::Local => errors
                .push("sink.kind = \"lake\" needs source.kind = \"backfill\" or \"kafka\"".into()),
        }
        if l.writer.contains('/') {
            errors.push(format!("lake.writer {:?} must not contain '/'", l.writer));
        }
    }
}
