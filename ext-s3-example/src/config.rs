//! Where the extension finds its bucket: `[extension.config]`, then `S3_*`, then
//! the standard `AWS_*` environment variables.

use serde::Deserialize;

/// `[extension.config]` as operators write it; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtConfig {
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// `true`: `http://endpoint/bucket/key`; `false`: virtual-hosted, where the
    /// endpoint (when given) already names the bucket's host.
    pub path_style: Option<bool>,
}

/// The settings one S3 client is built from.
#[derive(Debug, PartialEq, Eq)]
pub struct Settings {
    /// `None`: AWS itself, with the region's endpoint.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// `None`: unsigned requests (a public bucket).
    pub credentials: Option<Credentials>,
    pub path_style: bool,
}

#[derive(PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

// Keeps the secret out of any log line that prints the settings.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What is missing when no bucket is configured anywhere.
pub const NO_BUCKET: &str = "no bucket configured: set `bucket` in [extension.config], \
     or S3_BUCKET in the host's environment";

impl ExtConfig {
    /// Fills what the config leaves out from `env` (the process environment in
    /// production). `Err` names what is missing.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let first = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| env(name).filter(|v| !v.is_empty()))
        };
        let endpoint = self
            .endpoint
            .or_else(|| first(&["S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]));
        let bucket = self
            .bucket
            .or_else(|| first(&["S3_BUCKET"]))
            .filter(|b| !b.is_empty())
            .ok_or_else(|| NO_BUCKET.to_owned())?;
        let region = self
            .region
            .or_else(|| first(&["S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"]))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let access_key_id = self
            .access_key_id
            .or_else(|| first(&["S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"]));
        let secret_access_key = self
            .secret_access_key
            .or_else(|| first(&["S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"]));
        let credentials = match (access_key_id, secret_access_key) {
            (Some(access_key_id), Some(secret_access_key)) => Some(Credentials {
                access_key_id,
                secret_access_key,
                session_token: self
                    .session_token
                    .or_else(|| first(&["S3_SESSION_TOKEN", "AWS_SESSION_TOKEN"])),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err("access_key_id is set but secret_access_key is not".into())
            }
            (None, Some(_)) => {
                return Err("secret_access_key is set but access_key_id is not".into())
            }
        };
        // S3-compatible servers rarely resolve bucket host names; AWS prefers them.
        let path_style = self.path_style.unwrap_or(endpoint.is_some());
        Ok(Settings {
            endpoint,
            bucket,
            region,
            credentials,
            path_style,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn config_wins_over_the_environment() {
        let config = ExtConfig {
            endpoint: Some("http://127.0.0.1:9000".into()),
            bucket: Some("cells".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            ..ExtConfig::default()
        };
        let settings = config
            .resolve(env(&[("S3_BUCKET", "other"), ("AWS_REGION", "eu-west-1")]))
            .unwrap();
        assert_eq!(settings.bucket, "cells");
        assert_eq!(settings.region, "eu-west-1");
        assert_eq!(settings.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(settings.path_style);
        assert_eq!(settings.credentials.unwrap().access_key_id, "k");
    }

    #[test]
    fn s3_variables_come_before_aws_ones() {
        let settings = ExtConfig::default()
            .resolve(env(&[
                ("S3_BUCKET", "b"),
                ("S3_ACCESS_KEY_ID", "s3-key"),
                ("AWS_ACCESS_KEY_ID", "aws-key"),
                ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
                ("AWS_ENDPOINT_URL", "http://aws-endpoint"),
                ("S3_ENDPOINT", ""),
            ]))
            .unwrap();
        let credentials = settings.credentials.unwrap();
        assert_eq!(credentials.access_key_id, "s3-key");
        assert_eq!(credentials.secret_access_key, "aws-secret");
        assert_eq!(settings.endpoint.as_deref(), Some("http://aws-endpoint"));
        assert_eq!(settings.region, "us-east-1");
    }

    #[test]
    fn no_bucket_and_half_credentials_are_errors() {
        assert_eq!(
            ExtConfig::default().resolve(env(&[])).unwrap_err(),
            NO_BUCKET
        );
        let half = ExtConfig {
            bucket: Some("b".into()),
            access_key_id: Some("k".into()),
            ..ExtConfig::default()
        };
        assert!(half
            .resolve(env(&[]))
            .unwrap_err()
            .contains("secret_access_key"));
    }

    #[test]
    fn aws_itself_defaults_to_virtual_hosted_style() {
        let settings = ExtConfig {
            bucket: Some("b".into()),
            ..ExtConfig::default()
        }
        .resolve(env(&[]))
        .unwrap();
        assert!(!settings.path_style);
        assert_eq!(settings.credentials, None);
    }
}
