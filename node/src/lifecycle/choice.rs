//! `auto`: the faster engine that runs a model. Where both engines load it, each runs a typical
//! request (the catalog's `request_tokens`, real words of the model's vocabulary) in turns — one
//! warm-up call each, then up to `ROUNDS` rounds, fewer once one engine is twice as fast — and the
//! one with the lower median time serves. The verdict is kept by the artifact's sha256 and what it
//! was measured under (engine settings, request length, the machine's processor), in memory and
//! on disk (`<cache dir>/engines/`), so a restart or a cold reload does not pay for it again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use stowage_core::Engine as EngineKind;
use stowage_engine::EngineOptions;

/// Timed rounds at most (each runs every engine once).
pub const ROUNDS: usize = 7;

/// How `auto` chose an engine: both timings where both ran the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub engine: EngineKind,
    /// Median milliseconds of the typical request on each engine (absent: it cannot run the model).
    pub tract_ms: Option<f64>,
    pub ort_ms: Option<f64>,
    pub tokens: usize,
    /// Whether this verdict was measured earlier (a restart, a cold reload) rather than now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// When one engine alone loads the model: why the other does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
}

impl Verdict {
    /// The engine whose median is lower.
    pub fn faster(tract_ms: f64, ort_ms: f64, tokens: usize) -> Self {
        let engine = if ort_ms < tract_ms { EngineKind::Ort } else { EngineKind::Tract };
        Verdict { engine, tract_ms: Some(tract_ms), ort_ms: Some(ort_ms), tokens, cached: false, only: None }
    }

    /// The one engine that loads the model, and why the other does not.
    pub fn only(engine: EngineKind, tokens: usize, why: String) -> Self {
        Verdict { engine, tract_ms: None, ort_ms: None, tokens, cached: false, only: Some(why) }
    }

    /// One line for `/models` and the log: the choice and the timings behind it.
    pub fn reason(&self) -> String {
        if let Some(why) = &self.only {
            return format!("auto: {}, the only engine that loads it ({why})", self.engine);
        }
        let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2} ms"));
        let from = if self.cached { ", measured earlier" } else { "" };
        format!(
            "auto: {}, the faster at {} tokens (tract {}, ort {}{from})",
            self.engine,
            self.tokens,
            ms(self.tract_ms),
            ms(self.ort_ms)
        )
    }
}

/// Verdicts by artifact and measuring conditions.
pub struct Verdicts {
    /// Where verdicts are kept across restarts (none: in memory only).
    dir: Option<PathBuf>,
    memo: Mutex<HashMap<String, Verdict>>,
    /// sha256 of artifact files by (device, inode, size, mtime): a cold model's next load does not
    /// hash its file again.
    hashes: Mutex<HashMap<(u64, u64, u64, i64), String>>,
}

impl Verdicts {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir, memo: Mutex::new(HashMap::new()), hashes: Mutex::new(HashMap::new()) }
    }

    /// The sha256 of `bytes`, read from `path`: computed once per version of the file.
    pub fn sha256_of(&self, path: &std::path::Path, bytes: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        use std::os::unix::fs::MetadataExt;
        let id = std::fs::metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000));
        if let Some(sha) = id.and_then(|id| self.hashes.lock().ok()?.get(&id).cloned()) {
            return sha;
        }
        let sha = hex::encode(Sha256::digest(bytes));
        if let (Some(id), Ok(mut h)) = (id, self.hashes.lock()) {
            h.insert(id, sha.clone());
        }
        sha
    }

    /// The key of an artifact measured under `opts` at `tokens`: its sha256 and a digest of the
    /// conditions (a verdict from another machine or other settings does not count).
    pub fn key(sha256: &str, opts: &EngineOptions, tokens: usize) -> String {
        use sha2::{Digest, Sha256};
        let conditions = format!(
            "{}|intra={}|cuda={:?}|tokens={tokens}|ort={}",
            processor(),
            opts.ort_intra_threads,
            opts.ort_cuda_device,
            stowage_engine::ort::library_path(None).map(|p| p.display().to_string()).unwrap_or_default()
        );
        format!("{sha256}-{}", &hex::encode(Sha256::digest(conditions.as_bytes()))[..16])
    }

    pub fn get(&self, key: &str) -> Option<Verdict> {
        if let Some(v) = self.memo.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Some(Verdict { cached: true, ..v });
        }
        let path = self.dir.as_ref()?.join(format!("{key}.json"));
        let v: Verdict = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        if let Ok(mut m) = self.memo.lock() {
            m.insert(key.to_string(), v.clone());
        }
        Some(Verdict { cached: true, ..v })
    }

    /// Keeps a verdict; a disk that cannot take it only costs a measurement at the next start.
    pub fn put(&self, key: &str, v: &Verdict) {
        if let Ok(mut m) = self.memo.lock() {
            m.insert(key.to_string(), v.clone());
        }
        let Some(dir) = &self.dir else { return };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".{key}.tmp"));
            std::fs::write(&tmp, serde_json::to_vec(v)?)?;
            std::fs::rename(tmp, dir.join(format!("{key}.json")))
        };
        if let Err(e) = write() {
            tracing::debug!(error = %e, dir = %dir.display(), "cannot keep the engine verdict");
        }
    }
}

/// The processor's model name (Linux), part of what a verdict was measured on.
fn processor() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.to_string()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faster_engine_is_chosen_and_said() {
        let v = Verdict::faster(39.0, 3.9, 16);
        assert_eq!(v.engine, EngineKind::Ort);
        assert_eq!(v.reason(), "auto: ort, the faster at 16 tokens (tract 39.00 ms, ort 3.90 ms)");
        assert_eq!(Verdict::faster(2.0, 3.0, 32).engine, EngineKind::Tract);
    }

    #[test]
    fn verdicts_survive_a_restart_and_depend_on_the_conditions() {
        let dir = tempfile::tempdir().unwrap();
        let opts = EngineOptions::default();
        let key = Verdicts::key(&"ab".repeat(32), &opts, 32);
        assert_ne!(key, Verdicts::key(&"ab".repeat(32), &opts, 128), "another request length");
        assert_ne!(key, Verdicts::key(&"ab".repeat(32), &EngineOptions { ort_intra_threads: 7, ..opts }, 32));
        Verdicts::new(Some(dir.path().to_path_buf())).put(&key, &Verdict::faster(5.0, 1.0, 32));
        let again = Verdicts::new(Some(dir.path().to_path_buf())).get(&key).unwrap();
        assert_eq!((again.engine, again.cached), (EngineKind::Ort, true));
        assert!(again.reason().ends_with("measured earlier)"), "{}", again.reason());
        assert!(Verdicts::new(None).get(&key).is_none());
    }
}
