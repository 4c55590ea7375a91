//! Where the ONNX Runtime library is found, in this order (the first that applies wins):
//!
//! 1. `model.onnxruntime_library` (or `--onnxruntime-library`): the path configured;
//! 2. `ORT_DYLIB_PATH`: the environment variable `ort` itself reads;
//! 3. `$FUSIONSTREAM_CACHE/onnxruntime/<version>/libonnxruntime.so.<version>` (default cache
//!    `$HOME/.cache/fusionstream`): where `scripts/fetch-onnxruntime.sh` puts the library of
//!    the pinned `onnxruntime` wheel — used only when the file is there.
//!
//! A path from 1 or 2 is taken as given (a missing file is then an error at load, naming it);
//! the cache is a default, never an error. The worker logs which one it used.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The ONNX Runtime release `scripts/fetch-onnxruntime.sh` installs (and
/// `models/requirements.txt` pins).
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// Which step of the lookup gave the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibrarySource {
    /// `model.onnxruntime_library`.
    Config,
    /// `ORT_DYLIB_PATH`.
    Environment,
    /// The cache `scripts/fetch-onnxruntime.sh` fills.
    Cache,
}

impl std::fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Config => "model.onnxruntime_library",
            Self::Environment => "ORT_DYLIB_PATH",
            Self::Cache => "the cache of scripts/fetch-onnxruntime.sh",
        })
    }
}

/// The cache's library path under a cache root.
pub fn cached_library(cache_root: &Path) -> PathBuf {
    cache_root
        .join("onnxruntime")
        .join(ONNXRUNTIME_VERSION)
        .join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"))
}

/// The cache root: `$FUSIONSTREAM_CACHE`, else `$HOME/.cache/fusionstream`.
pub fn cache_root() -> Option<PathBuf> {
    let nonempty = |v: OsString| (!v.is_empty()).then_some(v);
    std::env::var_os("FUSIONSTREAM_CACHE")
        .and_then(nonempty)
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(nonempty)
                .map(|h| PathBuf::from(h).join(".cache/fusionstream"))
        })
}

/// The lookup (pure: the configured path, the environment variable's value, the cache root
/// and how to tell a file exists are given).
pub fn lookup(
    configured: Option<&Path>,
    env: Option<OsString>,
    cache_root: Option<&Path>,
    exists: impl Fn(&Path) -> bool,
) -> Option<(PathBuf, LibrarySource)> {
    if let Some(p) = configured.filter(|p| !p.as_os_str().is_empty()) {
        return Some((p.to_path_buf(), LibrarySource::Config));
    }
    if let Some(v) = env.filter(|v| !v.is_empty()) {
        return Some((PathBuf::from(v), LibrarySource::Environment));
    }
    cache_root
        .map(cached_library)
        .filter(|p| exists(p))
        .map(|p| (p, LibrarySource::Cache))
}

/// What a worker without the library should read: where it looked and how to get it.
pub fn not_found_hint() -> String {
    let cache = cache_root().map_or_else(
        || "$HOME/.cache/fusionstream".into(),
        |p| p.display().to_string(),
    );
    format!(
        "no ONNX Runtime library (model.onnxruntime_library, ORT_DYLIB_PATH, \
         {cache}/onnxruntime/{ONNXRUNTIME_VERSION}/): scripts/fetch-onnxruntime.sh installs it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_order_is_config_then_environment_then_cache() {
        let cache = Path::new("/c");
        let lib = cached_library(cache);
        assert_eq!(
            lib,
            Path::new("/c/onnxruntime/1.31.1/libonnxruntime.so.1.31.1")
        );
        let yes = |_: &Path| true;
        let no = |_: &Path| false;
        let cfg = Some(Path::new("/etc/ort.so"));
        let env = || Some(OsString::from("/env/ort.so"));
        assert_eq!(
            lookup(cfg, env(), Some(cache), yes),
            Some((PathBuf::from("/etc/ort.so"), LibrarySource::Config))
        );
        assert_eq!(
            lookup(None, env(), Some(cache), yes),
            Some((PathBuf::from("/env/ort.so"), LibrarySource::Environment))
        );
        // Empty values count as unset.
        assert_eq!(
            lookup(Some(Path::new("")), Some(OsString::new()), Some(cache), yes),
            Some((lib.clone(), LibrarySource::Cache))
        );
        // The cache only when its file is there; configured paths even when they are not
        // (loading them then fails with their name).
        assert_eq!(lookup(None, None, Some(cache), no), None);
        assert_eq!(lookup(None, None, None, yes), None);
        assert_eq!(
            lookup(cfg, None, Some(cache), no).map(|(_, s)| s),
            Some(LibrarySource::Config)
        );
        // Only the cache's own path is probed.
        let probed = std::cell::RefCell::new(Vec::new());
        let _ = lookup(None, None, Some(cache), |p| {
            probed.borrow_mut().push(p.to_path_buf());
            false
        });
        assert_eq!(probed.into_inner(), vec![lib]);
    }
}
