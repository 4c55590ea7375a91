//! The local store: media on the file system, below a root folder (paths that leave it
//! are refused), size-checked before reading.

use std::path::{Component, Path, PathBuf};

use super::FetchError;

/// Media on the local file system, below a root folder.
#[derive(Debug, Clone)]
pub struct LocalMedia {
    root: PathBuf,
    max_bytes: u64,
}

impl LocalMedia {
    /// A store reading below `root`, refusing files over `max_bytes`.
    pub fn new(root: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            root: root.into(),
            max_bytes,
        }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolve `path` below the root: relative paths only, no `..`.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, FetchError> {
        let escapes = path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if escapes {
            return Err(FetchError::Forbidden(format!(
                "{} is not a relative path inside the media root",
                path.display()
            )));
        }
        Ok(self.root.join(path))
    }

    /// Read a file; its size is checked before reading.
    pub async fn fetch(&self, path: &Path) -> Result<Vec<u8>, FetchError> {
        let full = self.resolve(path)?;
        let name = path.display().to_string();
        let map = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => FetchError::NotFound(name.clone()),
            std::io::ErrorKind::PermissionDenied => FetchError::AccessDenied(name.clone()),
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut => {
                FetchError::Transient(format!("{name}: {e}"))
            }
            _ => FetchError::NotFound(format!("{name}: {e}")),
        };
        let meta = tokio::fs::metadata(&full).await.map_err(map)?;
        if !meta.is_file() {
            return Err(FetchError::NotFound(format!("{name} is not a file")));
        }
        if meta.len() > self.max_bytes {
            return Err(FetchError::TooLarge {
                size: meta.len(),
                limit: self.max_bytes,
            });
        }
        let bytes = tokio::fs::read(&full).await.map_err(map)?;
        // The file may have grown between the check and the read.
        if bytes.len() as u64 > self.max_bytes {
            return Err(FetchError::TooLarge {
                size: bytes.len() as u64,
                limit: self.max_bytes,
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusionstream_core::{Classify, ErrorClass};

    #[tokio::test]
    async fn local_fetch_codes() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("a.png"), [1u8; 10]).expect("w");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let m = LocalMedia::new(dir.path(), 5);
        let code = |r: Result<Vec<u8>, FetchError>| r.expect_err("fails").reason_code();
        assert_eq!(code(m.fetch(Path::new("a.png")).await), "image_too_large");
        assert_eq!(code(m.fetch(Path::new("b.png")).await), "image_not_found");
        assert_eq!(code(m.fetch(Path::new("sub")).await), "image_not_found");
        assert_eq!(
            code(m.fetch(Path::new("../a.png")).await),
            "image_ref_forbidden"
        );
        assert_eq!(
            code(m.fetch(Path::new("/etc/passwd")).await),
            "image_ref_forbidden"
        );
        let m = LocalMedia::new(dir.path(), 100);
        assert_eq!(
            m.fetch(Path::new("./a.png")).await.expect("ok"),
            vec![1u8; 10]
        );
        assert_eq!(
            FetchError::Timeout(Default::default()).class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            FetchError::NotFound(String::new()).class(),
            ErrorClass::Poison
        );
    }
}
