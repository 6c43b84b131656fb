//! `stowage upload`: puts a catalog's local model files into a bucket and writes the catalog again
//! with `s3://` URIs and each artifact's sha256 (nodes check it after download). Objects already
//! there with the same bytes (ETag = MD5) are left alone, so a re-run only sends what changed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use futures_util::{StreamExt, TryStreamExt};
use md5::Md5;
use sha2::{Digest, Sha256};
use stowage_core::Catalog;
use stowage_node::lifecycle::spec::ModelSpec;
use stowage_node::lifecycle::storage::{retrying, s3, unquote, S3Uri, Source, StorageError, DEFAULT_FETCH_BACKOFF_MS};

use crate::cli::UploadArgs;

/// S3's limit for one PUT.
const MAX_PUT_BYTES: u64 = 5 << 30;

/// One local file and where it goes.
struct Put {
    model: String,
    field: &'static str,
    path: PathBuf,
    uri: S3Uri,
}

pub fn run(args: &UploadArgs) -> Result<()> {
    let catalog_path = if args.catalog.is_dir() { args.catalog.join("models.toml") } else { args.catalog.clone() };
    let catalog = Catalog::load(&catalog_path)?;
    let prefix = args.prefix.trim_matches('/');
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    let mut puts = Vec::new();
    for m in &catalog.models {
        let spec = ModelSpec::from_catalog(&catalog, &m.id, stowage_core::Engine::Tract)?;
        let files = [("artifact", Some(spec.artifact)), ("tokenizer", Some(spec.tokenizer)), ("config", spec.config)];
        for (field, source) in files {
            let Some(source) = source else { continue };
            let path = match source {
                Source::Local(p) if p.is_file() => p,
                // A config that was only looked for beside the artifact may be absent.
                Source::Local(_) if field == "config" && spec.config_optional => continue,
                Source::Local(p) => {
                    bail!("{}: model {}: {field} {} does not exist", catalog_path.display(), m.id, p.display())
                }
                Source::S3(u) => bail!("{}: model {}: {field} is already in S3 ({u})", catalog_path.display(), m.id),
            };
            let name = path.file_name().and_then(|n| n.to_str()).context("file name is not UTF-8")?;
            let uri = S3Uri { bucket: args.bucket.clone(), key: format!("{prefix}{}/{name}", m.id) };
            puts.push(Put { model: m.id.clone(), field, path, uri });
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let done: Vec<(usize, String)> = runtime.block_on(async {
        let client = s3::client(args.s3_endpoint.as_deref(), s3::Timeouts::default()).await;
        if args.create_bucket {
            create_bucket(&client, &args.bucket).await?;
        }
        futures_util::stream::iter(puts.iter().enumerate())
            .map(|(i, p)| {
                let client = &client;
                async move {
                    let sha =
                        retrying(args.retries, Duration::from_millis(DEFAULT_FETCH_BACKOFF_MS), || upload(client, p))
                            .await?;
                    Ok::<_, anyhow::Error>((i, sha))
                }
            })
            .buffer_unordered(args.parallelism.max(1))
            .try_collect()
            .await
    })?;

    let mut sha = vec![String::new(); puts.len()];
    for (i, s) in done {
        sha[i] = s;
    }
    let text = std::fs::read_to_string(&catalog_path)?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("{}: cannot edit as TOML", catalog_path.display()))?;
    let models = doc
        .get_mut("models")
        .and_then(|m| m.as_array_of_tables_mut())
        .with_context(|| format!("{}: models must be [[models]] tables to be rewritten", catalog_path.display()))?;
    for table in models.iter_mut() {
        let id = table.get("id").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        for (p, sha) in puts.iter().zip(&sha).filter(|(p, _)| p.model == id) {
            table[p.field] = toml_edit::value(p.uri.to_string());
            if p.field == "artifact" {
                table["sha256"] = toml_edit::value(sha.as_str());
            }
        }
    }
    let out = doc.to_string();
    match &args.out {
        Some(path) => {
            std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {} ({} models, {} files)", path.display(), catalog.models.len(), puts.len());
        }
        None => print!("{out}"),
    }
    Ok(())
}

async fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> Result<()> {
    match client.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).unwrap_or_default().to_string();
            if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
                return Ok(());
            }
            let uri = S3Uri { bucket: bucket.into(), key: String::new() };
            bail!("cannot create bucket {bucket}: {}", s3::from_sdk(&uri, e))
        }
    }
}

/// Hashes a file: (sha256, md5, size).
fn digests(path: &Path) -> std::io::Result<(String, String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let (mut sha, mut md5, mut size) = (Sha256::new(), Md5::new(), 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(sha.finalize()), hex::encode(md5.finalize()), size))
}

/// One attempt: skips an object that already holds these bytes; returns the file's sha256.
async fn upload(client: &aws_sdk_s3::Client, p: &Put) -> Result<String, StorageError> {
    let local = |e: std::io::Error| StorageError::Local(format!("{}: {e}", p.path.display()));
    let path = p.path.clone();
    let (sha, md5, size) = tokio::task::spawn_blocking(move || digests(&path))
        .await
        .map_err(|e| StorageError::Local(e.to_string()))?
        .map_err(local)?;
    if size > MAX_PUT_BYTES {
        return Err(StorageError::Permanent(format!(
            "{}: {size} bytes is over S3's 5 GiB single upload",
            p.path.display()
        )));
    }
    let head = client.head_object().bucket(&p.uri.bucket).key(&p.uri.key).send().await;
    match head {
        Ok(h) if unquote(h.e_tag()) == md5 && h.content_length() == Some(size as i64) => {
            eprintln!("unchanged {} ({} {})", p.uri, p.model, p.field);
            return Ok(sha);
        }
        Ok(_) => {}
        Err(e) => match s3::from_sdk(&p.uri, e) {
            StorageError::NotFound(_) => {}
            e => return Err(e),
        },
    }
    let start = Instant::now();
    let body =
        ByteStream::from_path(&p.path).await.map_err(|e| StorageError::Local(format!("{}: {e}", p.path.display())))?;
    client
        .put_object()
        .bucket(&p.uri.bucket)
        .key(&p.uri.key)
        .content_length(size as i64)
        .body(body)
        .send()
        .await
        .map_err(|e| s3::from_sdk(&p.uri, e))?;
    eprintln!("uploaded {} ({:.1} MiB in {:.2} s)", p.uri, size as f64 / 1048576.0, start.elapsed().as_secs_f64());
    Ok(sha)
}
