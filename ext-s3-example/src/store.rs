//! One S3 client per cell, the extension's own async runtime, and how S3's
//! answers become codes and log lines.

use std::error::Error as _;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use pulp_ext_api::Code;
use tokio::runtime::Runtime;

use crate::config::Settings;

/// An S3 error: network, authentication (`InvalidAccessKeyId`,
/// `SignatureDoesNotMatch`) or anything else the server refuses.
pub const S3_ERROR: Code = Code::REFUSED;
/// No usable configuration: no bucket, or half a key pair.
pub const CONFIG_MISSING: Code = pulp_wire::code::s3::CONFIG_MISSING;
/// The server answered `AccessDenied`.
pub const ACCESS_DENIED: Code = pulp_wire::code::s3::ACCESS_DENIED;

/// The runtime every S3 call runs on, started with the first cell that declares
/// `storage.s3`. Import callbacks block on it from the cells' threads; no handle
/// to it leaves the library.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pulp-ext-s3")
            .enable_all()
            .build()
            .expect("the S3 runtime starts")
    })
}

/// What one cell reaches S3 through.
pub struct CellStore {
    /// `Err`: why the configuration is unusable; every import answers code 10.
    pub client: Result<Arc<AmazonS3>, String>,
    /// The cell's `call_timeout_ms`: an import may not hold the cell longer.
    pub timeout: Duration,
}

pub fn build(settings: &Settings, timeout: Duration) -> Result<AmazonS3, String> {
    // rustls keeps its default provider in statics, and this library has its own
    // copy of them: the provider the host installed is not seen here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plain_http = settings
        .endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&settings.bucket)
        .with_region(&settings.region)
        .with_virtual_hosted_style_request(!settings.path_style)
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(plain_http)
                .with_timeout(timeout),
        )
        // Retries stay inside the call's time budget.
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: timeout,
        });
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    builder = match &settings.credentials {
        Some(credentials) => {
            let builder = builder
                .with_access_key_id(&credentials.access_key_id)
                .with_secret_access_key(&credentials.secret_access_key);
            match &credentials.session_token {
                Some(token) => builder.with_token(token),
                None => builder,
            }
        }
        // Without keys, unsigned requests rather than a hunt for instance credentials.
        None => builder.with_skip_signature(true),
    };
    builder.build().map_err(|e| e.to_string())
}

/// A failed S3 call, ready to be logged and returned.
pub struct Failure {
    pub code: Code,
    /// S3's own error code (`NoSuchKey`, `SignatureDoesNotMatch`), when it sent one.
    pub s3_error: String,
    pub detail: String,
}

impl Failure {
    fn from_store(error: &object_store::Error) -> Failure {
        let detail = chain(error);
        let s3_error = s3_error_code(&detail).unwrap_or_default().to_owned();
        let code = match error {
            object_store::Error::NotFound { .. } => Code::NOT_FOUND,
            _ if s3_error == "AccessDenied" => ACCESS_DENIED,
            _ => S3_ERROR,
        };
        let s3_error = match (s3_error.is_empty(), code) {
            (true, Code::NOT_FOUND) => "NotFound".to_owned(),
            (true, _) => "none".to_owned(),
            (false, _) => s3_error,
        };
        Failure {
            code,
            s3_error,
            detail,
        }
    }
}

/// The error and its sources on one line: the server's XML answer sits at the end.
fn chain(error: &object_store::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text.replace(['\n', '\r'], " ")
}

fn s3_error_code(detail: &str) -> Option<&str> {
    let start = detail.find("<Code>")? + "<Code>".len();
    let len = detail[start..].find("</Code>")?;
    Some(&detail[start..start + len])
}

/// Runs `op` on the extension's runtime within the cell's time budget.
pub fn run<T>(
    timeout: Duration,
    op: impl Future<Output = Result<T, object_store::Error>>,
) -> Result<T, Failure> {
    // The timer is made inside the runtime: it needs the runtime's clock.
    match runtime().block_on(async { tokio::time::timeout(timeout, op).await }) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Failure::from_store(&error)),
        Err(_) => Err(Failure {
            code: S3_ERROR,
            s3_error: "none".to_owned(),
            detail: format!("no answer within {} ms", timeout.as_millis()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s3_error_code_is_read_from_the_answer() {
        let body = "Server returned non-2xx status code: 403 Forbidden: <?xml?><Error>\
                    <Code>SignatureDoesNotMatch</Code><Message>m</Message></Error>";
        assert_eq!(s3_error_code(body), Some("SignatureDoesNotMatch"));
        assert_eq!(s3_error_code("connection refused"), None);
    }
}
