//! Where model files come from: local paths, or `s3://` objects fetched into a local cache before
//! loading. Downloads stream to disk, are checked (the catalog's sha256, else size and the ETag's
//! MD5 where S3 makes it one), renamed into place atomically, and reused on restart while valid.
//! Transient failures are retried with exponential backoff and jitter; permanent ones (no such
//! object, access denied, wrong checksum) fail at once with a sentence naming the object.

pub mod cache;
pub mod s3;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::types::ServerSideEncryption;
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use self::cache::Meta;
pub use self::s3::S3Uri;

/// Why a file could not be brought to local disk. Callers decide by the variant (retry a transient
/// failure, treat an optional file that is absent or unreadable as missing), never by the
/// sentence, which names the object and says what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The object (or its bucket) is not there.
    #[error("{0}")]
    NotFound(String),
    /// S3 refused the credentials' access (also what S3 answers for a missing key without
    /// ListBucket permission).
    #[error("{0}")]
    AccessDenied(String),
    /// Worth another try: the connection, a timeout, throttling, a 5xx, a cut-off or stalled body.
    #[error("{0}")]
    Transient(String),
    /// The bytes are not what the catalog's sha256 says.
    #[error("{0}")]
    Checksum(String),
    /// A URI that names no object, or a key that cannot be kept in the cache.
    #[error("{0}")]
    InvalidUri(String),
    /// The local disk refused: creating, writing or renaming a file.
    #[error("{0}")]
    Local(String),
    /// The default credential chain has none: another attempt will not find any.
    #[error("{0}")]
    NoCredentials(String),
    /// Anything else S3 refused for good (a 4xx).
    #[error("{0}")]
    Permanent(String),
}

impl StorageError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Transient(_))
    }

    /// What happened, without the object's name (the sentence has it): for clients, who should
    /// learn neither buckets nor paths.
    pub fn summary(&self) -> &'static str {
        match self {
            StorageError::NotFound(_) => "no such object in the model store",
            StorageError::AccessDenied(_) => "access denied by the model store",
            StorageError::Transient(_) => "the model store could not be reached (see the node's log)",
            StorageError::Checksum(_) => "the bytes do not match the catalog's sha256",
            StorageError::InvalidUri(_) => "not a valid file URI",
            StorageError::Local(_) => "cannot be stored in the node's cache",
            StorageError::NoCredentials(_) => "no AWS credentials (the node's log says where it looked)",
            StorageError::Permanent(_) => "refused by the model store (see the node's log)",
        }
    }

    /// The same error, its sentence extended by `note`.
    fn noted(self, note: &str) -> Self {
        use StorageError::*;
        let add = |m: String| format!("{m} ({note})");
        match self {
            NotFound(m) => NotFound(add(m)),
            AccessDenied(m) => AccessDenied(add(m)),
            Transient(m) => Transient(add(m)),
            Checksum(m) => Checksum(add(m)),
            InvalidUri(m) => InvalidUri(add(m)),
            Local(m) => Local(add(m)),
            NoCredentials(m) => NoCredentials(add(m)),
            Permanent(m) => Permanent(add(m)),
        }
    }
}

/// A file of a model: on this machine, or in S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Local(PathBuf),
    S3(S3Uri),
}

impl Source {
    /// A catalog URI: `s3://bucket/key`, `file://path` or a path relative to `base` (the catalog's folder).
    pub fn parse(base: &Path, uri: &str) -> Result<Self, StorageError> {
        if uri.starts_with("s3://") {
            return S3Uri::parse(uri).map(Source::S3);
        }
        let p = Path::new(uri.strip_prefix("file://").unwrap_or(uri));
        Ok(Source::Local(if p.is_absolute() { p.to_path_buf() } else { base.join(p) }))
    }

    /// The file called `name` in the same folder (or S3 prefix).
    pub fn beside(&self, name: &str) -> Self {
        match self {
            Source::Local(p) => Source::Local(p.parent().unwrap_or(Path::new(".")).join(name)),
            Source::S3(u) => Source::S3(u.beside(name)),
        }
    }

    pub fn is_s3(&self) -> bool {
        matches!(self, Source::S3(_))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Local(p) => write!(f, "{}", p.display()),
            Source::S3(u) => u.fmt(f),
        }
    }
}

impl From<PathBuf> for Source {
    fn from(p: PathBuf) -> Self {
        Source::Local(p)
    }
}

/// Default of `--fetch-retries`.
pub const DEFAULT_FETCH_RETRIES: u32 = 5;
/// Default of `--fetch-backoff-ms`.
pub const DEFAULT_FETCH_BACKOFF_MS: u64 = 500;

/// How files are fetched.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Where S3 objects are kept: `<cache_dir>/<bucket>/<key>` plus a `.stowage.json` beside each.
    pub cache_dir: PathBuf,
    /// S3-compatible endpoint; else `AWS_ENDPOINT_URL`, else AWS.
    pub endpoint: Option<String>,
    /// Further attempts after a transient failure.
    pub retries: u32,
    /// First backoff; each retry doubles it (capped at 20 s), with jitter.
    pub backoff: Duration,
    /// A download that receives nothing for this long is abandoned (and retried).
    pub stall_timeout: Duration,
    /// Per request: connection, first byte of the answer, whole attempt.
    pub timeouts: s3::Timeouts,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            endpoint: None,
            retries: DEFAULT_FETCH_RETRIES,
            backoff: Duration::from_millis(DEFAULT_FETCH_BACKOFF_MS),
            stall_timeout: Duration::from_secs(s3::DEFAULT_READ_TIMEOUT_SECONDS),
            timeouts: s3::Timeouts::default(),
        }
    }
}

/// `$XDG_CACHE_HOME/stowage`, else `$HOME/.cache/stowage`, else `/var/cache/stowage`.
pub fn default_cache_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("XDG_CACHE_HOME")
        .map(|d| d.join("stowage"))
        .or_else(|| env("HOME").map(|h| h.join(".cache/stowage")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/stowage"))
}

/// One file, on local disk.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    /// Bytes downloaded now (0 for a local file or a valid cached copy).
    pub downloaded: u64,
    /// Bytes of a cached copy that was reused.
    pub reused: u64,
    /// The catalog's sha256 was checked (while downloading, or recorded when it was).
    pub sha256_checked: bool,
}

impl Fetched {
    fn local(path: &Path) -> Self {
        Self { path: path.to_path_buf(), downloaded: 0, reused: 0, sha256_checked: false }
    }
}

/// Fetches S3 objects into the cache; local files pass through untouched.
pub struct Fetcher {
    opts: FetchOptions,
    client: tokio::sync::OnceCell<aws_sdk_s3::Client>,
}

impl Fetcher {
    pub fn new(opts: FetchOptions) -> Self {
        Self { opts, client: tokio::sync::OnceCell::new() }
    }

    /// The S3 client, built on first use (a node with only local models never needs credentials).
    pub async fn client(&self) -> &aws_sdk_s3::Client {
        self.client.get_or_init(|| s3::client(self.opts.endpoint.as_deref(), self.opts.timeouts)).await
    }

    /// Makes `source` a local file; `sha256` is the catalog's checksum of it, when it has one.
    pub async fn fetch(&self, source: &Source, sha256: Option<&str>) -> Result<Fetched, StorageError> {
        self.get(source, sha256, false).await?.ok_or_else(|| StorageError::NotFound(format!("{source}: not there")))
    }

    /// Like `fetch`, for a file that may be absent: `None` when it is not there.
    pub async fn fetch_optional(&self, source: &Source) -> Result<Option<Fetched>, StorageError> {
        self.get(source, None, true).await
    }

    async fn get(
        &self,
        source: &Source,
        sha256: Option<&str>,
        optional: bool,
    ) -> Result<Option<Fetched>, StorageError> {
        let uri = match source {
            Source::Local(p) if optional && !p.is_file() => return Ok(None),
            Source::Local(p) => return Ok(Some(Fetched::local(p))),
            Source::S3(u) => u,
        };
        let path = cache::path(&self.opts.cache_dir, uri)?;
        if let Some(meta) = cache::valid(&path) {
            match self.reusable(uri, &meta, sha256).await {
                Ok(true) => {
                    debug!(object = %uri, path = %path.display(), "using the cached copy");
                    return Ok(Some(Fetched {
                        path,
                        downloaded: 0,
                        reused: meta.size,
                        sha256_checked: sha256.is_some(),
                    }));
                }
                Ok(false) => {}
                Err(StorageError::NotFound(_)) if optional => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        match self.retrying(|| self.download(uri, &path, sha256)).await {
            Ok(meta) => Ok(Some(Fetched { path, downloaded: meta.size, reused: 0, sha256_checked: sha256.is_some() })),
            // Without ListBucket permission S3 answers 403 for a missing key: an optional file
            // that cannot be read is treated as absent (and said so in the log).
            Err(e @ (StorageError::NotFound(_) | StorageError::AccessDenied(_))) if optional => {
                debug!(object = %uri, reason = %e, "optional file not there");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a cached copy may be used: its recorded checksum matches the catalog's; without
    /// one, S3 still holds the same object (ETag and size). When S3 cannot be asked — one try, no
    /// retries: the copy is at hand — the copy checked when it was downloaded is used (and the
    /// log says so), so a node restarts from its cache while S3 is down.
    async fn reusable(&self, uri: &S3Uri, meta: &Meta, sha256: Option<&str>) -> Result<bool, StorageError> {
        if let Some(want) = sha256 {
            return Ok(meta.sha256.eq_ignore_ascii_case(want));
        }
        let head = self.head(uri).await;
        match head {
            Ok((etag, size)) => Ok(etag == meta.etag && size == meta.size),
            Err(e) if e.is_transient() => {
                warn!(object = %uri, error = %e, "cannot confirm the cached copy with S3; using it");
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    async fn head(&self, uri: &S3Uri) -> Result<(String, u64), StorageError> {
        let out = self
            .client()
            .await
            .head_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| s3::from_sdk(uri, e))?;
        Ok((unquote(out.e_tag()), out.content_length().unwrap_or(0).max(0) as u64))
    }

    async fn retrying<T, F, Fut>(&self, attempt: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        retrying(self.opts.retries, self.opts.backoff, attempt).await
    }

    /// One attempt at downloading `uri` to `path`: streamed to a temporary file beside it,
    /// checked, then renamed into place.
    async fn download(&self, uri: &S3Uri, path: &Path, sha256: Option<&str>) -> Result<Meta, StorageError> {
        let io = |what: &str, e: std::io::Error| StorageError::Local(format!("{uri}: cannot {what}: {e}"));
        let dir = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir).await.map_err(|e| io(&format!("create {}", dir.display()), e))?;
        let out = self
            .client()
            .await
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| s3::from_sdk(uri, e))?;
        let etag = unquote(out.e_tag());
        let expected = out.content_length().map(|n| n.max(0) as u64);
        // The ETag is the MD5 of the bytes only for single-part objects stored plainly or with
        // SSE-S3. The catalog's sha256, when given, is the stronger check: MD5 is then skipped
        // (hashing costs CPU that loading needs on small nodes).
        let etag_is_md5 = sha256.is_none()
            && etag.len() == 32
            && etag.bytes().all(|b| b.is_ascii_hexdigit())
            && matches!(out.server_side_encryption(), None | Some(ServerSideEncryption::Aes256));
        cache::sweep_parts(path);
        let part = cache::part_path(path);
        let result = async {
            let file =
                tokio::fs::File::create(&part).await.map_err(|e| io(&format!("create {}", part.display()), e))?;
            let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
            let (mut sha, mut md5, mut size) = (Sha256::new(), Md5::new(), 0u64);
            let mut body = out.body;
            loop {
                let chunk = tokio::time::timeout(self.opts.stall_timeout, body.try_next())
                    .await
                    .map_err(|_| {
                        StorageError::Transient(format!(
                            "{uri}: download stalled (nothing for {} s)",
                            self.opts.stall_timeout.as_secs()
                        ))
                    })?
                    .map_err(|e| StorageError::Transient(format!("{uri}: download cut off after {size} bytes: {e}")))?;
                let Some(chunk) = chunk else { break };
                sha.update(&chunk);
                if etag_is_md5 {
                    md5.update(&chunk);
                }
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(|e| io(&format!("write {}", part.display()), e))?;
            }
            file.flush().await.map_err(|e| io(&format!("write {}", part.display()), e))?;
            if let Some(n) = expected.filter(|&n| n != size) {
                return Err(StorageError::Transient(format!("{uri}: truncated download: {size} of {n} bytes")));
            }
            if etag_is_md5 && hex::encode(md5.finalize()) != etag {
                return Err(StorageError::Transient(format!("{uri}: the bytes received do not match the ETag {etag}")));
            }
            let got = hex::encode(sha.finalize());
            if let Some(want) = sha256.filter(|w| !w.eq_ignore_ascii_case(&got)) {
                return Err(StorageError::Checksum(format!("{uri}: sha256 is {got}, the catalog says {want}")));
            }
            let meta = Meta { source: uri.to_string(), etag: etag.clone(), size, sha256: got, mtime_ns: 0 };
            cache::commit(&part, path, meta).map_err(|e| io(&format!("store {}", path.display()), e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        result
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or `retries` more tries are spent; waits
/// `backoff`, doubling (capped at 20 s) with jitter, between tries, and logs each retry.
pub async fn retrying<T, F, Fut>(retries: u32, backoff: Duration, mut attempt: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let mut tries = 0u32;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && tries < retries => {
                let cap = backoff.saturating_mul(1 << tries.min(16)).min(Duration::from_secs(20));
                let delay = cap.mul_f64(rand::random_range(0.5..=1.0));
                tries += 1;
                warn!(error = %e, attempt = tries, of = retries, retry_in_s = delay.as_secs_f64(), "S3 request failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) if tries > 0 => return Err(e.noted(&format!("gave up after {} attempts", tries + 1))),
            Err(e) => return Err(e),
        }
    }
}

pub fn unquote(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_string()
}
