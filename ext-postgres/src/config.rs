//! Where the extension finds its server: `[extension.config]`, then the usual
//! `PG*` environment variables, then libpq's defaults.

use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::config::Host;

/// `[extension.config]` as operators write it; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtConfig {
    /// A connection string, `postgresql://user:pass@host:port/db` or
    /// `host=... user=...`, for the administrative user.
    pub url: Option<String>,
    /// Connections per cell (default 4).
    pub pool_size: Option<u32>,
    /// Cell roles are named `<role_prefix><cell>` (default `pulp_`).
    pub role_prefix: Option<String>,
    /// What the cell roles' passwords are derived from (default: the admin
    /// password). Hosts sharing a database must share it.
    pub role_secret: Option<String>,
    /// How long connecting may take (default 5000).
    pub connect_timeout_ms: Option<u64>,
}

/// What the extension connects with.
pub struct Settings {
    /// The administrative connection: creates roles and schemas at set-up.
    pub admin: tokio_postgres::Config,
    pub pool_size: usize,
    pub role_prefix: String,
    pub role_secret: String,
}

pub const DEFAULT_POOL_SIZE: u32 = 4;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl ExtConfig {
    /// Fills what the config leaves out from `env` (the process environment in
    /// production). `Err` says what is wrong.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let mut admin = match &self.url {
            Some(url) => tokio_postgres::Config::from_str(url)
                .map_err(|e| format!("`url` in [extension.config]: {e}"))?,
            None => tokio_postgres::Config::new(),
        };
        if admin.get_hosts().is_empty() {
            admin.host(var("PGHOST").unwrap_or_else(|| "localhost".into()));
        }
        if admin.get_ports().is_empty() {
            let port = match var("PGPORT") {
                Some(port) => port
                    .parse()
                    .map_err(|_| format!("PGPORT={port:?} is not a port number"))?,
                None => 5432,
            };
            admin.port(port);
        }
        if admin.get_user().is_none() {
            admin.user(var("PGUSER").unwrap_or_else(|| "postgres".into()));
        }
        if admin.get_password().is_none() {
            if let Some(password) = var("PGPASSWORD") {
                admin.password(password);
            }
        }
        if admin.get_dbname().is_none() {
            let user = admin.get_user().unwrap_or_default().to_owned();
            admin.dbname(var("PGDATABASE").unwrap_or(user));
        }
        if admin.get_connect_timeout().is_none() {
            admin.connect_timeout(
                self.connect_timeout_ms
                    .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis),
            );
        }
        admin.application_name("pulp-ext-postgres");
        let pool_size = self.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
        if pool_size == 0 {
            return Err("pool_size must be at least 1".into());
        }
        let role_secret = self.role_secret.unwrap_or_else(|| {
            admin
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default()
        });
        Ok(Settings {
            admin,
            pool_size: pool_size as usize,
            role_prefix: self.role_prefix.unwrap_or_else(|| "pulp_".into()),
            role_secret,
        })
    }
}

impl Settings {
    /// `user@host:port/db`, for log lines (never the password).
    pub fn describe(&self) -> String {
        let host = match self.admin.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(Host::Unix(path)) => path.display().to_string(),
            None => String::new(),
        };
        format!(
            "{}@{}:{}/{}",
            self.admin.get_user().unwrap_or_default(),
            host,
            self.admin.get_ports().first().copied().unwrap_or(5432),
            self.admin.get_dbname().unwrap_or_default()
        )
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
    fn the_url_wins_and_pg_variables_fill_the_rest() {
        let config = ExtConfig {
            url: Some("postgresql://admin:pw@127.0.0.1:6543".into()),
            pool_size: Some(2),
            ..ExtConfig::default()
        };
        let settings = config
            .resolve(env(&[
                ("PGHOST", "elsewhere"),
                ("PGDATABASE", "cells"),
                ("PGPASSWORD", "other"),
            ]))
            .unwrap();
        assert_eq!(settings.describe(), "admin@127.0.0.1:6543/cells");
        assert_eq!(settings.admin.get_password(), Some(&b"pw"[..]));
        assert_eq!(settings.role_secret, "pw");
        assert_eq!(settings.pool_size, 2);
        assert_eq!(settings.role_prefix, "pulp_");
    }

    #[test]
    fn without_config_the_environment_and_defaults_apply() {
        let settings = ExtConfig::default()
            .resolve(env(&[("PGPORT", "5999"), ("PGUSER", "ops")]))
            .unwrap();
        assert_eq!(settings.describe(), "ops@localhost:5999/ops");
        assert_eq!(settings.pool_size, DEFAULT_POOL_SIZE as usize);
        assert!(ExtConfig::default()
            .resolve(env(&[("PGPORT", "x")]))
            .is_err());
        let zero = ExtConfig {
            pool_size: Some(0),
            ..ExtConfig::default()
        };
        assert!(zero.resolve(env(&[])).is_err());
    }
}
