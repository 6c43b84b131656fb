//! S3 through aws-sdk-s3: one client from the default credential chain (environment, profile, web
//! identity — IRSA on EKS — and instance metadata), an optional endpoint for S3-compatible stores,
//! and errors sorted into transient (worth a retry) and permanent, each a sentence naming the object.

use std::fmt;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;

/// `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    /// Parses `s3://bucket/key`; the key must name an object, not a folder.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri.strip_prefix("s3://").ok_or_else(|| format!("{uri:?} is not an s3:// URI"))?;
        let (bucket, key) = rest.split_once('/').ok_or_else(|| format!("{uri:?}: no key after the bucket"))?;
        if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
            return Err(format!("{uri:?}: expected s3://bucket/key"));
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

/// Why an S3 call failed.
#[derive(Debug, Clone)]
pub struct S3Error {
    pub message: String,
    /// Worth another try: the connection, a timeout, throttling, a 5xx, a cut-off body.
    pub transient: bool,
    /// The object (or bucket) is not there.
    pub not_found: bool,
}

impl S3Error {
    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: true, not_found: false }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: false, not_found: false }
    }

    /// Sorts an SDK error and says it in one line about `uri`.
    pub fn from_sdk<E, R>(uri: &S3Uri, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + HttpStatus,
    {
        match &err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
                let context = DisplayErrorContext(&err).to_string();
                // The whole chain was tried and has nothing: another attempt will not find any.
                if context.contains("no credentials found in chain") {
                    return Self::permanent(format!(
                        "{uri}: no AWS credentials (tried the environment, profile, web identity/IRSA, \
                         container and instance roles)"
                    ));
                }
                Self::transient(format!("{uri}: cannot reach S3: {context}"))
            }
            SdkError::ServiceError(se) => {
                let status = se.raw().status();
                let code = err.code().unwrap_or_default();
                let message = err.message().unwrap_or_default();
                let (transient, not_found, what) = match (status, code) {
                    (404, _) | (_, "NoSuchKey") => (false, true, "no such object".to_string()),
                    (_, "NoSuchBucket") => (false, true, format!("no such bucket {:?}", uri.bucket)),
                    (403, _) => (false, false, "access denied (check the credentials or the pod's IAM role)".into()),
                    (429 | 500..=599, _) | (_, "SlowDown" | "RequestTimeout" | "InternalError") => {
                        (true, false, format!("S3 answered {status} {code} {message}"))
                    }
                    _ => (false, false, format!("S3 answered {status} {code} {message}")),
                };
                Self { message: format!("{uri}: {}", what.trim()), transient, not_found }
            }
            _ => Self::permanent(format!("{uri}: {}", DisplayErrorContext(&err))),
        }
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for S3Error {}

/// The HTTP status of a raw response, for sorting service errors.
pub trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// A client for `endpoint` (else `AWS_ENDPOINT_URL`, else AWS). The SDK's own retries are off:
/// callers retry whole transfers (a body cut off half-way is retried too) and log each attempt.
pub async fn client(endpoint: Option<&str>) -> Client {
    let region = RegionProviderChain::default_provider().or_else(Region::new("us-east-1"));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(RetryConfig::disabled())
        .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).build());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    let shared = loader.load().await;
    // S3-compatible stores (MinIO, moto, Ceph) address buckets by path, not by host name.
    let custom = shared.endpoint_url().is_some();
    Client::from_conf(aws_sdk_s3::config::Builder::from(&shared).force_path_style(custom).build())
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
