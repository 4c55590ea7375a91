//! Snapshots: the whole index and the source positions it holds, written so that a crash
//! at any moment leaves the previous snapshot whole.
//!
//! ```text
//! DIR/CURRENT               "snap-00000042": the snapshot to load
//! DIR/snap-00000042/        manifest.json (format, parameters, kinds, positions),
//!                           <kind>.usearch (the graph), <kind>.ids.json (key → event id)
//! DIR/snap-00000041/        the previous one, kept until the next is current
//! ```
//!
//! A snapshot is written into `DIR/.tmp-snap-…`, every file synced, renamed into place,
//! and only then named by `CURRENT` (written beside and renamed: atomic on POSIX). The
//! positions are those of the last record the index holds, so a restart reads on from
//! exactly there: nothing the snapshot holds is read twice, nothing after it is lost.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::vectors::{usearch_error, Kind, KindIndex, Params, VectorIndex};
use crate::IndexError;

const FORMAT: u32 = 1;
const CURRENT: &str = "CURRENT";

/// What a snapshot records beside the vectors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The bundle whose embedding space the vectors are in (`id@version`), set by the
    /// first record; records of another bundle are refused.
    pub bundle: Option<String>,
    /// The next record to read, per source (`topic/partition` or a file's name).
    pub positions: BTreeMap<String, u64>,
    /// Records read, all time.
    pub records: u64,
    /// Records refused (another bundle, a malformed record), all time.
    pub refused: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    sequence: u64,
    params: Params,
    kinds: BTreeMap<Kind, KindManifest>,
    meta: SnapshotMeta,
}

#[derive(Debug, Serialize, Deserialize)]
struct KindManifest {
    dim: usize,
    entries: usize,
}

/// A written snapshot.
#[derive(Debug, Clone)]
pub struct Written {
    /// Its sequence number.
    pub sequence: u64,
    /// Its folder.
    pub dir: PathBuf,
    /// Bytes on disk.
    pub bytes: u64,
}

/// A folder of snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    root: PathBuf,
}

impl SnapshotDir {
    /// Snapshots under `root` (created on the first save).
    pub fn new(root: impl Into<PathBuf>) -> SnapshotDir {
        SnapshotDir { root: root.into() }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The current snapshot's folder and sequence number, if there is one.
    pub fn current(&self) -> Result<Option<(PathBuf, u64)>, IndexError> {
        let name = match fs::read_to_string(self.root.join(CURRENT)) {
            Ok(s) => s.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&self.root.join(CURRENT), e)),
        };
        let sequence = name
            .strip_prefix("snap-")
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| IndexError::Invalid(format!("CURRENT names {name:?}")))?;
        Ok(Some((self.root.join(name), sequence)))
    }

    /// Make the snapshot `sequence` (a complete `snap-…` folder here, e.g. one copied from a
    /// remote store) the current one.
    pub fn set_current(&self, sequence: u64) -> Result<(), IndexError> {
        let name = format!("snap-{sequence:08}");
        if !self.root.join(&name).join("manifest.json").is_file() {
            return Err(IndexError::Invalid(format!(
                "{} has no snapshot {name}",
                self.root.display()
            )));
        }
        let current_tmp = self.root.join(format!(".{CURRENT}.tmp"));
        write_synced(&current_tmp, format!("{name}\n").as_bytes())?;
        fs::rename(&current_tmp, self.root.join(CURRENT)).map_err(|e| io(&self.root, e))?;
        sync_dir(&self.root)
    }

    /// Load the current snapshot (none in an empty or new folder).
    pub fn load(&self) -> Result<Option<(VectorIndex, SnapshotMeta)>, IndexError> {
        match self.current()? {
            None => Ok(None),
            Some((dir, _)) => load_snapshot(&dir).map(Some),
        }
    }

    /// Write `index` and `meta` as the next snapshot and make it current; the one before
    /// stays, older ones are removed.
    pub fn save(&self, index: &VectorIndex, meta: &SnapshotMeta) -> Result<Written, IndexError> {
        fs::create_dir_all(&self.root).map_err(|e| io(&self.root, e))?;
        let previous = self.current()?;
        let sequence = previous.as_ref().map_or(1, |(_, s)| s + 1);
        let name = format!("snap-{sequence:08}");
        let tmp = self.root.join(format!(".tmp-{name}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;

        let mut kinds = BTreeMap::new();
        for kind in Kind::ALL {
            let Some(part) = index.part(kind) else {
                continue;
            };
            let graph = tmp.join(format!("{}.usearch", kind.name()));
            let path = graph
                .to_str()
                .ok_or_else(|| IndexError::Invalid(format!("{} is not UTF-8", graph.display())))?;
            part.graph.save(path).map_err(usearch_error)?;
            sync_file(&graph)?;
            write_synced(
                &tmp.join(format!("{}.ids.json", kind.name())),
                &serde_json::to_vec(&part.ids).expect("strings serialise"),
            )?;
            kinds.insert(
                kind,
                KindManifest {
                    dim: part.dim,
                    entries: part.ids.len(),
                },
            );
        }
        let manifest = Manifest {
            format: FORMAT,
            sequence,
            params: *index.params(),
            kinds,
            meta: meta.clone(),
        };
        write_synced(
            &tmp.join("manifest.json"),
            &serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
        )?;
        sync_dir(&tmp)?;
        let dir = self.root.join(&name);
        fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
        sync_dir(&self.root)?;
        let current_tmp = self.root.join(format!(".{CURRENT}.tmp"));
        write_synced(&current_tmp, format!("{name}\n").as_bytes())?;
        fs::rename(&current_tmp, self.root.join(CURRENT)).map_err(|e| io(&self.root, e))?;
        sync_dir(&self.root)?;

        // Older snapshots and abandoned temporary folders go; the previous one stays.
        let keep_previous = previous.map(|(d, _)| d);
        if let Ok(entries) = fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let p = e.path();
                let n = e.file_name().to_string_lossy().into_owned();
                let stale =
                    (n.starts_with("snap-") && p != dir && Some(&p) != keep_previous.as_ref())
                        || n.starts_with(".tmp-snap-");
                if stale && p.is_dir() {
                    let _ = fs::remove_dir_all(&p);
                }
            }
        }
        let bytes = fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        Ok(Written {
            sequence,
            dir,
            bytes,
        })
    }
}

/// Load the snapshot in `dir` (a `snap-…` folder).
pub fn load_snapshot(dir: &Path) -> Result<(VectorIndex, SnapshotMeta), IndexError> {
    let path = dir.join("manifest.json");
    let manifest: Manifest = serde_json::from_slice(&fs::read(&path).map_err(|e| io(&path, e))?)
        .map_err(|e| IndexError::Invalid(format!("{}: {e}", path.display())))?;
    if manifest.format != FORMAT {
        return Err(IndexError::Invalid(format!(
            "{}: snapshot format {} (this build reads {FORMAT})",
            path.display(),
            manifest.format
        )));
    }
    manifest.params.validate()?;
    let mut kinds: [Option<KindIndex>; 4] = [None, None, None, None];
    for (kind, k) in &manifest.kinds {
        let graph = dir.join(format!("{}.usearch", kind.name()));
        let ids_path = dir.join(format!("{}.ids.json", kind.name()));
        let ids: Vec<String> =
            serde_json::from_slice(&fs::read(&ids_path).map_err(|e| io(&ids_path, e))?)
                .map_err(|e| IndexError::Invalid(format!("{}: {e}", ids_path.display())))?;
        if ids.len() != k.entries {
            return Err(IndexError::Invalid(format!(
                "{}: {} ids, the manifest says {}",
                ids_path.display(),
                ids.len(),
                k.entries
            )));
        }
        let part = KindIndex::new(&manifest.params, k.dim)?;
        let p = graph
            .to_str()
            .ok_or_else(|| IndexError::Invalid(format!("{} is not UTF-8", graph.display())))?;
        part.graph.load(p).map_err(usearch_error)?;
        if part.graph.dimensions() != k.dim {
            return Err(IndexError::Invalid(format!(
                "{}: dimension {}, the manifest says {}",
                graph.display(),
                part.graph.dimensions(),
                k.dim
            )));
        }
        kinds[*kind as usize] = Some(part.with_ids(ids)?);
    }
    Ok((
        VectorIndex::from_parts(manifest.params, kinds),
        manifest.meta,
    ))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    let mut f = fs::File::create(path).map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

fn sync_file(path: &Path) -> Result<(), IndexError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(path, e))
}

fn sync_dir(path: &Path) -> Result<(), IndexError> {
    // Directories are synced so that renames survive a power cut; not every file system
    // allows it, and a failure here does not make the snapshot less whole.
    if let Ok(f) = fs::File::open(path) {
        let _ = f.sync_all();
    }
    Ok(())
}

fn io(path: &Path, e: std::io::Error) -> IndexError {
    IndexError::Io(format!("{}: {e}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::exact::random_unit_vectors;

    #[test]
    fn save_load_round_trip_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotDir::new(dir.path().join("ix"));
        assert!(store.load().unwrap().is_none());
        let mut ix = VectorIndex::new(Params::default()).unwrap();
        let vs = random_unit_vectors(300, 24, 1);
        for (i, v) in vs.iter().enumerate() {
            ix.upsert(Kind::Image, &format!("e{i}"), v).unwrap();
            if i % 3 == 0 {
                ix.upsert(Kind::Text, &format!("e{i}"), &v[..16]).unwrap();
            }
        }
        let mut meta = SnapshotMeta {
            bundle: Some("shapes@1.2.0".into()),
            ..Default::default()
        };
        meta.positions.insert("embeddings/0".into(), 300);
        for round in 1..=3u64 {
            let w = store.save(&ix, &meta).unwrap();
            assert_eq!(w.sequence, round);
        }
        let snaps: Vec<String> = fs::read_dir(store.root())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snap-"))
            .collect();
        assert_eq!(snaps.len(), 2, "{snaps:?}");
        let (back, m) = store.load().unwrap().unwrap();
        assert_eq!(m, meta);
        assert_eq!(back.len(Kind::Image), 300);
        assert_eq!(back.len(Kind::Text), 100);
        assert_eq!(back.dim(Kind::Text), Some(16));
        assert_eq!(back.ids(Kind::Image), ix.ids(Kind::Image));
        let hit = &back.search(Kind::Image, &vs[42], 1).unwrap()[0];
        assert_eq!(hit.event_id, "e42");
    }

    #[test]
    fn a_torn_snapshot_is_never_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotDir::new(dir.path());
        let mut ix = VectorIndex::new(Params::default()).unwrap();
        ix.upsert(Kind::Fused, "a", &[1.0, 0.0]).unwrap();
        store.save(&ix, &SnapshotMeta::default()).unwrap();
        // A crash while writing the next one leaves a temporary folder: it is ignored and
        // cleaned by the next save.
        fs::create_dir(dir.path().join(".tmp-snap-00000002")).unwrap();
        fs::write(dir.path().join(".tmp-snap-00000002/manifest.json"), "{").unwrap();
        let (back, _) = store.load().unwrap().unwrap();
        assert_eq!(back.len(Kind::Fused), 1);
        ix.upsert(Kind::Fused, "b", &[0.0, 1.0]).unwrap();
        assert_eq!(
            store.save(&ix, &SnapshotMeta::default()).unwrap().sequence,
            2
        );
        assert!(!dir.path().join(".tmp-snap-00000002").exists());
        // A damaged current snapshot is an error, not an empty index.
        let (cur, _) = store.current().unwrap().unwrap();
        fs::write(cur.join("fused.ids.json"), "[\"a\"]").unwrap();
        assert!(store.load().is_err());
    }
}
