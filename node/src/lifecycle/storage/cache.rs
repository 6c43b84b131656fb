//! The local cache of S3 objects: `<dir>/<bucket>/<key>`, and beside each file a
//! `<name>.stowage.json` recording what was downloaded (source, ETag, size, sha256, mtime). A file
//! is reused only while its size and mtime still match that record; writes go to a temporary file
//! renamed into place, and the record goes last, so a crash never leaves a file that looks valid.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::{S3Uri, StorageError};

/// What the cache knows about one downloaded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub source: String,
    pub etag: String,
    pub size: u64,
    pub sha256: String,
    /// Modification time of the cached file when it was stored, in ns since the epoch.
    pub mtime_ns: u128,
}

/// Where `uri` is kept under `dir`; refuses keys that would escape it.
pub fn path(dir: &Path, uri: &S3Uri) -> Result<PathBuf, StorageError> {
    let key = Path::new(&uri.key);
    let safe = key.components().all(|c| matches!(c, Component::Normal(_)));
    if !safe || uri.bucket.contains(['/', '\\']) || uri.bucket.starts_with('.') {
        return Err(StorageError::InvalidUri(format!(
            "{uri}: the key cannot be stored in the cache (it has '..' or starts with '/' or '.')"
        )));
    }
    Ok(dir.join(&uri.bucket).join(key))
}

fn meta_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".stowage.json");
    path.with_file_name(name)
}

/// A temporary name beside `path`, unique in this process and across processes sharing the cache.
pub fn part_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".part-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    path.with_file_name(name)
}

/// Removes temporary files beside `path` left by processes that died mid-download (a pod killed
/// during start-up), so they do not fill the cache across restarts.
pub fn sweep_parts(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!("{name}.part-");
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file.to_str().and_then(|f| f.strip_prefix(&prefix)).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn mtime_ns(path: &Path) -> Option<(u64, u128)> {
    let m = std::fs::metadata(path).ok()?;
    let t = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((m.len(), t.as_nanos()))
}

/// The record of a cached file that is still as it was stored.
pub fn valid(path: &Path) -> Option<Meta> {
    let meta: Meta = serde_json::from_slice(&std::fs::read(meta_path(path)).ok()?).ok()?;
    let (size, mtime) = mtime_ns(path)?;
    (size == meta.size && mtime == meta.mtime_ns).then_some(meta)
}

/// Moves a finished download into place and records it.
pub fn commit(part: &Path, path: &Path, mut meta: Meta) -> std::io::Result<Meta> {
    let record = meta_path(path);
    // The old record must not vouch for the new file, even for a moment.
    match std::fs::remove_file(&record) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::rename(part, path)?;
    meta.mtime_ns = mtime_ns(path).map_or(0, |m| m.1);
    let tmp = part_path(&record);
    std::fs::write(&tmp, serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, &record)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(key: &str) -> S3Uri {
        S3Uri { bucket: "models".into(), key: key.into() }
    }

    #[test]
    fn keys_that_would_escape_the_cache_are_refused() {
        let dir = Path::new("/cache");
        assert_eq!(path(dir, &uri("a/b/model.onnx")).unwrap(), Path::new("/cache/models/a/b/model.onnx"));
        for bad in ["../x", "a/../../x", "/abs", "./x"] {
            assert!(path(dir, &uri(bad)).is_err(), "{bad}");
        }
        // Path drops inner "." and empty segments: these stay inside.
        for harmless in ["a/./b", "a//b"] {
            assert_eq!(path(dir, &uri(harmless)).unwrap(), Path::new("/cache/models/a/b"));
        }
    }

    #[test]
    fn a_record_vouches_only_for_the_file_it_was_written_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let part = part_path(&path);
        std::fs::write(&part, b"weights").unwrap();
        let meta = Meta { source: "s3://b/m.onnx".into(), etag: "e".into(), size: 7, sha256: "s".into(), mtime_ns: 0 };
        let stored = commit(&part, &path, meta).unwrap();
        assert_eq!(valid(&path), Some(stored));
        std::fs::write(&path, b"weightz").unwrap(); // same size, new mtime
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        assert_eq!(valid(&path), None, "a file changed after it was stored is not reused");
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(valid(&path), None);
    }

    #[test]
    fn leftovers_of_dead_processes_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let dead = dir.path().join("m.onnx.part-4000000000-0"); // no such pid
        let live = part_path(&path);
        std::fs::write(&dead, b"x").unwrap();
        std::fs::write(&live, b"x").unwrap();
        sweep_parts(&path);
        assert!(!dead.exists() && live.exists());
    }
}
