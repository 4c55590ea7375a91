//! The local position checkpoint: stream name → next position to read, written atomically
//! (temporary file, fsync, rename) so a crash leaves the old or the new one, never a mix.
//! Used by the local source and the backfill (`fusionstream-io` re-exports it); it lives here,
//! free of I/O clients, so its reader can be fuzzed without building them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Checkpoint file format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// Stream → next position.
    pub positions: BTreeMap<String, u64>,
    /// Where a backfill over an object-store prefix stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillPosition>,
    /// Stream → the crash-loop guard's mark stored with its position (its text form).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, String>,
}

/// A backfill's position: every wanted key of its shard up to `start_after` is done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillPosition {
    /// `s3://bucket/prefix`.
    pub source: String,
    /// Shard index.
    pub shard: u32,
    /// Number of shards.
    pub shards: u32,
    /// The last key whose outputs were acknowledged (every key before it too).
    pub start_after: Option<String>,
    /// Objects finished so far, over all runs.
    pub done: u64,
}

/// Checkpoint errors.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a checkpoint.
    #[error("checkpoint {path} is unreadable ({reason}); remove it or run with --fresh")]
    Corrupt {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl Checkpoint {
    /// Load `path`; a missing file is an empty checkpoint.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| CheckpointError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                version: 1,
                ..Self::default()
            }),
            Err(source) => Err(CheckpointError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Write atomically.
    pub fn store(&self, path: &Path) -> Result<(), CheckpointError> {
        use std::io::Write as _;
        let io = |source| CheckpointError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        let body = serde_json::to_vec_pretty(self).map_err(|e| io(e.into()))?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("sub/cp.json");
        assert_eq!(
            Checkpoint::load(&p)
                .expect("missing is empty")
                .positions
                .len(),
            0
        );
        let mut c = Checkpoint {
            version: 1,
            ..Default::default()
        };
        c.positions.insert("a.jsonl".into(), 7);
        c.store(&p).expect("store");
        assert_eq!(Checkpoint::load(&p).expect("load"), c);
        c.backfill = Some(BackfillPosition {
            source: "s3://b/p".into(),
            shard: 1,
            shards: 3,
            start_after: Some("p/x.jpg".into()),
            done: 12,
        });
        c.store(&p).expect("store");
        assert_eq!(Checkpoint::load(&p).expect("load"), c);
        std::fs::write(&p, "{").expect("w");
        assert!(matches!(
            Checkpoint::load(&p),
            Err(CheckpointError::Corrupt { .. })
        ));
    }
}
