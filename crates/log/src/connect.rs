//! Connecting to NATS: credentials, nkeys and TLS from config, and the server-version gate.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::LogError;

/// The oldest nats-server the log is correct on. 2.9/2.10 silently ignore consumer
/// `filter_subjects` and skipped expected-sequence checks in measured runs.
pub const MIN_SERVER: (u64, u64) = (2, 11);

/// A string that never appears in logs or `Debug` output.
#[derive(Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to reach NATS.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// One URL, or several comma-separated URLs of one cluster.
    pub url: String,
    /// A `.creds` file (JWT + nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// An nkey seed (`SU…`).
    pub nkey_seed: Option<Secret>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub require_tls: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Client name shown in the server's connection list.
    pub name: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            credentials_file: None,
            nkey_seed: None,
            user: None,
            password: None,
            token: None,
            require_tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            name: "crm".into(),
        }
    }
}

impl NatsConfig {
    /// A config for a plain URL.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// Connects and checks the server version.
pub async fn connect(config: &NatsConfig) -> Result<async_nats::Client, LogError> {
    let connect_err = |reason: String| LogError::Connect {
        url: redacted_url(&config.url),
        reason,
    };
    // A comma-separated list names several servers of a cluster.
    let addrs = config
        .url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| connect_err(redacted_url(&e.to_string())))?;
    if config.user.is_some() != config.password.is_some() {
        return Err(connect_err(
            "nats.user and nats.password go together: one of them is missing".into(),
        ));
    }
    if config.tls_cert_file.is_some() != config.tls_key_file.is_some() {
        return Err(connect_err(
            "nats.tls_cert_file and nats.tls_key_file go together: one of them is missing".into(),
        ));
    }
    let mut opts = async_nats::ConnectOptions::new()
        .name(&config.name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)));
    if let Some(path) = &config.credentials_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| connect_err(format!("credentials file {}: {e}", path.display())))?;
    }
    if let Some(seed) = &config.nkey_seed {
        opts = opts.nkey(seed.expose().to_owned());
    }
    if let (Some(user), Some(pass)) = (&config.user, &config.password) {
        opts = opts.user_and_password(user.clone(), pass.expose().to_owned());
    }
    if let Some(token) = &config.token {
        opts = opts.token(token.expose().to_owned());
    }
    // async-nats does not read credentials written into the URL
    // (`nats://user:password@host`, `nats://token@host`): pass them on, unless the
    // settings give some.
    if config.user.is_none()
        && config.token.is_none()
        && config.nkey_seed.is_none()
        && config.credentials_file.is_none()
    {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        match addrs
            .iter()
            .find_map(|a| a.username().map(|u| (u, a.password())))
        {
            Some((user, Some(password))) => {
                opts = opts.user_and_password(decode(user), decode(password));
            }
            Some((token, None)) => opts = opts.token(decode(token)),
            None => {}
        }
    }
    if config.require_tls {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &config.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let client = opts
        .connect(addrs)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    check_version(&client.server_info().version)?;
    Ok(client)
}

/// `url` (one NATS URL or a comma-separated list) with any credentials in it replaced by
/// `***`, for messages and logs.
pub fn redacted_url(url: &str) -> String {
    url.split(',')
        .map(|part| match (part.find("://"), part.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &part[..scheme + 3], &part[at..])
            }
            (None, Some(at)) => format!("***{}", &part[at..]),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Refuses servers older than [`MIN_SERVER`].
pub fn check_version(version: &str) -> Result<(), LogError> {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    if (major, minor) < MIN_SERVER {
        return Err(LogError::ServerTooOld {
            found: version.to_owned(),
            required: "2.11",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redacted_url("nats://crm:s3cret@nats:4222"),
            "nats://***@nats:4222"
        );
        assert_eq!(
            redacted_url("nats://t0ken@a:4222, tls://u:p%40ss@b:4222,nats://c:4222"),
            "nats://***@a:4222, tls://***@b:4222,nats://c:4222"
        );
        assert_eq!(redacted_url("u:p@host:4222"), "***@host:4222");
        assert_eq!(
            redacted_url("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }

    #[test]
    fn version_gate() {
        assert!(check_version("2.9.10").is_err());
        assert!(check_version("2.10.26").is_err());
        assert!(check_version("2.11.0").is_ok());
        assert!(check_version("2.12.8").is_ok());
        assert!(check_version("3.0.0-beta").is_ok());
        assert!(check_version("garbage").is_err());
    }
}
