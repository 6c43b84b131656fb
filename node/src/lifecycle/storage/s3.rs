//! S3 through aws-sdk-s3: one client from the default credential chain (environment, profile, web
//! identity — IRSA on EKS — and instance metadata), an optional endpoint for S3-compatible stores,
//! and errors sorted into `StorageError` variants (transient ones worth a retry), each a sentence
//! naming the object.

use std::fmt;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;

use super::StorageError;

/// `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    /// Parses `s3://bucket/key`; the key must name an object, not a folder.
    pub fn parse(uri: &str) -> Result<Self, StorageError> {
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| StorageError::InvalidUri(format!("{uri:?} is not an s3:// URI")))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| StorageError::InvalidUri(format!("{uri:?}: no key after the bucket")))?;
        if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
            return Err(StorageError::InvalidUri(format!("{uri:?}: expected s3://bucket/key")));
        }
        Ok(Self { bucket: bucket.to_string(), key: key.to_string() })
    }

    /// The object called `name` in the same folder.
    pub fn beside(&self, name: &str) -> Self {
        let dir = self.key.rsplit_once('/').map_or("", |(d, _)| d);
        let key = if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") };
        Self { bucket: self.bucket.clone(), key }
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Sorts an SDK error into a storage error and says it in one line about `uri`.
pub fn from_sdk<E, R>(uri: &S3Uri, err: SdkError<E, R>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + HttpStatus,
{
    match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            let context = DisplayErrorContext(&err).to_string();
            // The whole chain was tried and has nothing: another attempt will not find any.
            if context.contains("no credentials found in chain") {
                return StorageError::NoCredentials(format!(
                    "{uri}: no AWS credentials (tried the environment, profile, web identity/IRSA, \
                     container and instance roles)"
                ));
            }
            StorageError::Transient(format!("{uri}: cannot reach S3: {context}"))
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status();
            let code = err.code().unwrap_or_default();
            let message = err.message().unwrap_or_default();
            let answered = || format!("{uri}: {}", format!("S3 answered {status} {code} {message}").trim());
            match (status, code) {
                (404, _) | (_, "NoSuchKey") => StorageError::NotFound(format!("{uri}: no such object")),
                (_, "NoSuchBucket") => StorageError::NotFound(format!("{uri}: no such bucket {:?}", uri.bucket)),
                (403, _) => StorageError::AccessDenied(format!(
                    "{uri}: access denied (check the credentials or the pod's IAM role)"
                )),
                (429 | 500..=599, _) | (_, "SlowDown" | "RequestTimeout" | "InternalError") => {
                    StorageError::Transient(answered())
                }
                _ => StorageError::Permanent(answered()),
            }
        }
        _ => StorageError::Permanent(format!("{uri}: {}", DisplayErrorContext(&err))),
    }
}

/// The HTTP status of a raw response, for sorting service errors.
pub trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// How long one S3 request may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To open the connection.
    pub connect: Duration,
    /// From sending the request to the first byte of the answer: an endpoint that accepts and
    /// never answers fails here.
    pub read: Duration,
    /// One whole attempt until the answer's headers (the body is then read under the fetcher's
    /// stall timeout).
    pub attempt: Duration,
}

/// Default of `--s3-read-timeout-seconds`.
pub const DEFAULT_READ_TIMEOUT_SECONDS: u64 = 10;

impl Default for Timeouts {
    fn default() -> Self {
        let read = Duration::from_secs(DEFAULT_READ_TIMEOUT_SECONDS);
        Self { connect: Duration::from_secs(5), read, attempt: read * 3 }
    }
}

/// A client for `endpoint` (else `AWS_ENDPOINT_URL`, else AWS). The SDK's own retries are off:
/// callers retry whole transfers (a body cut off half-way is retried too) and log each attempt.
pub async fn client(endpoint: Option<&str>, timeouts: Timeouts) -> Client {
    s3_client(&sdk_config(endpoint, timeouts, RetryConfig::disabled()).await)
}

/// The AWS settings every client of the node shares: the default credential and region chains
/// (us-east-1 when none is set), `endpoint` (else `AWS_ENDPOINT_URL`, else AWS), the timeouts and
/// retries given.
pub async fn sdk_config(endpoint: Option<&str>, timeouts: Timeouts, retry: RetryConfig) -> aws_config::SdkConfig {
    let region = RegionProviderChain::default_provider().or_else(Region::new("us-east-1"));
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region).retry_config(retry).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .operation_attempt_timeout(timeouts.attempt)
            .build(),
    );
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// An S3 client of `shared`; S3-compatible stores (MinIO, moto, Ceph) address buckets by path,
/// not by host name.
pub fn s3_client(shared: &aws_config::SdkConfig) -> Client {
    let custom = shared.endpoint_url().is_some();
    Client::from_conf(aws_sdk_s3::config::Builder::from(shared).force_path_style(custom).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_siblings_share_the_folder() {
        let u = S3Uri::parse("s3://models/a/b/model.onnx").unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("models", "a/b/model.onnx"));
        assert_eq!(u.beside("tokenizer.json").to_string(), "s3://models/a/b/tokenizer.json");
        assert_eq!(S3Uri::parse("s3://b/m.onnx").unwrap().beside("x").key, "x");
        for bad in ["s3://", "s3://bucket", "s3://bucket/", "s3:///key", "s3://b/dir/", "http://b/k"] {
            assert!(S3Uri::parse(bad).is_err(), "{bad}");
        }
    }
}
