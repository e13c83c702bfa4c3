//! The one typed configuration: defaults, then a TOML file, then `CRM_SECTION__KEY`
//! environment variables (for example `CRM_NATS__URL`, `CRM_GATEWAY__HTTP_ADDR`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use crm_gateway::GatewayConfig;
use crm_log::{NatsConfig, StreamSettings};
use crm_projections::store::Location;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

/// Where the read models live: a SQLite file (the default), or a schema of a PostgreSQL
/// database when `postgres_url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file (used when `postgres_url` is not set).
    pub sqlite_path: PathBuf,
    /// `postgres://user:password@host:port/database`: keep the read models in PostgreSQL.
    pub postgres_url: Option<String>,
    /// The PostgreSQL schema of the read models (created if missing).
    pub postgres_schema: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            sqlite_path: PathBuf::from("views.sqlite"),
            postgres_url: None,
            postgres_schema: "crm".into(),
        }
    }
}

impl StoreConfig {
    /// The configured read store.
    pub fn location(&self) -> Location {
        match &self.postgres_url {
            Some(url) => Location::Postgres {
                url: url.clone(),
                schema: self.postgres_schema.clone(),
            },
            None => Location::Sqlite(self.sqlite_path.clone()),
        }
    }
}

/// Projector tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectorConfig {
    pub batch_size: usize,
    /// Most customers whose folded state each projection keeps in memory between batches
    /// (0: load every touched customer's state from the store in every batch).
    pub state_cache: usize,
    /// Share the stream's partitions with the other projector processes of the same
    /// projections, through leases in a NATS KV bucket; a dead process's partitions move to
    /// the survivors after `lease_ttl_ms`.
    pub partitioned: bool,
    /// How long a partition lease lives without renewal (renewed every third of it).
    pub lease_ttl_ms: u64,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_size: crm_projections::projector::DEFAULT_BATCH_SIZE,
            state_cache: crm_projections::cache::DEFAULT_CAPACITY,
            partitioned: false,
            lease_ttl_ms: 10_000,
        }
    }
}

/// The scoring policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// A policy TOML file; the shipped `policy/default.toml` when absent.
    pub path: Option<PathBuf>,
}

/// The scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Seconds between ticks.
    pub interval_secs: u64,
    /// Days after a term's last day before the scheduler ends a contract that was not
    /// renewed as lapsed (0: as soon as the last day has ended in every time zone, from
    /// 12:00 UTC the next day). A late renewal inside them still renews.
    pub lapse_grace_days: u32,
    /// Seconds nothing must have been recorded for a customer before one of its contracts
    /// is ended as lapsed, so history being back-filled (an import, `crm demo`) is not cut
    /// off between a signing and its renewal.
    pub lapse_quiet_secs: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            interval_secs: 60,
            lapse_grace_days: 0,
            lapse_quiet_secs: 600,
        }
    }
}

/// The audit trail.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Key that signs checkpoints of every chain head (HMAC-SHA-256). Keep it away from
    /// the stream's admins: it is what detects a stream rebuilt from scratch.
    pub signing_key: Option<crm_log::connect::Secret>,
    /// Seconds between automatic signed checkpoints (0: only on request).
    pub checkpoint_interval_secs: u64,
}

/// Everything `crm` can be configured with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub nats: NatsConfig,
    pub stream: StreamSettings,
    pub store: StoreConfig,
    pub gateway: GatewayConfig,
    pub projector: ProjectorConfig,
    pub policy: PolicyConfig,
    pub scheduler: SchedulerConfig,
    pub audit: AuditConfig,
}

/// Loads defaults, the optional file, then the environment.
pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let figment = sources(path)?;
    extract(&figment).with_context(|| match path {
        Some(p) => format!(
            "invalid configuration in {} or CRM_* environment",
            p.display()
        ),
        None => "invalid configuration in CRM_* environment".to_owned(),
    })
}

/// Whether the config file or the environment sets `key` (dotted, e.g.
/// `gateway.grpc_addr`), whatever its value: a setting that equals its default but was
/// chosen is still chosen.
pub fn is_set(path: Option<&Path>, key: &str) -> anyhow::Result<bool> {
    Ok(sources(path)?.find_value(key).is_ok())
}

/// The config file, then the `CRM_*` environment over it.
fn sources(path: Option<&Path>) -> anyhow::Result<Figment> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        anyhow::ensure!(
            path.is_file(),
            "config file {} does not exist",
            path.display()
        );
        figment = figment.merge(Toml::file(path));
    }
    // Only nested keys (`CRM_NATS__URL`); flat variables such as CRM_NATS_SERVER are not
    // configuration.
    figment = figment.merge(
        Env::prefixed("CRM_")
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    );
    Ok(figment)
}

/// The configuration in `figment`. An environment value of digits alone
/// (`CRM_NATS__PASSWORD=123456`) reaches a text setting as a number; taking it back as text
/// could change it (`007` is read as 7), so it is refused with the way to quote it.
fn extract(figment: &Figment) -> anyhow::Result<Config> {
    let cfg = figment.extract::<Config>().map_err(|e| {
        let numbers: Vec<String> = e
            .clone()
            .into_iter()
            .filter(|e| {
                matches!(
                    &e.kind,
                    figment::error::Kind::InvalidType(
                        figment::error::Actual::Unsigned(_)
                            | figment::error::Actual::Signed(_)
                            | figment::error::Actual::Float(_),
                        expected
                    ) if expected.contains("string")
                )
            })
            .map(|e| e.path.join("."))
            .collect();
        // figment's message quotes the value; for a secret it must not reach the logs.
        if let Some(secret) = numbers.iter().find(|path| is_secret(path)) {
            return anyhow::anyhow!(
                "{secret} was given a number: an environment value of digits alone is read \
                 as one, so quote it (CRM_NATS__PASSWORD='\"123456\"')"
            );
        }
        let e = anyhow::Error::new(e);
        if !numbers.is_empty() {
            e.context(
                "a text setting was given a number: an environment value of digits alone is \
                 read as one, so quote it (CRM_NATS__PASSWORD='\"123456\"')",
            )
        } else {
            e
        }
    })?;
    if let Some(key) = &cfg.audit.signing_key {
        let key = key.expose();
        anyhow::ensure!(
            !key.trim().is_empty() && key != SIGNING_KEY_PLACEHOLDER,
            "audit.signing_key (CRM_AUDIT__SIGNING_KEY) is empty or the example's \
             placeholder: anyone can forge a checkpoint signed with a key they can guess \
             (`openssl rand -hex 32` makes a good one)"
        );
        // A short key is only warned about: checkpoints signed with it must stay verifiable.
        if key.trim().len() < MIN_SIGNING_KEY_LEN {
            eprintln!(
                "warning: audit.signing_key (CRM_AUDIT__SIGNING_KEY) is shorter than \
                 {MIN_SIGNING_KEY_LEN} characters and easy to guess; sign new checkpoints \
                 with a longer one"
            );
        }
    }
    Ok(cfg)
}

/// Below this many characters an audit signing key is warned about.
const MIN_SIGNING_KEY_LEN: usize = 16;

/// The placeholder `deploy/k8s/crm.yaml` ships.
const SIGNING_KEY_PLACEHOLDER: &str = "replace-with-a-long-random-secret";

/// Whether the setting at `path` (`nats.password`) holds a secret.
fn is_secret(path: &str) -> bool {
    [
        "password",
        "token",
        "nkey_seed",
        "signing_key",
        "api_keys",
        "postgres_url",
    ]
    .iter()
    .any(|s| path.split('.').any(|part| part.eq_ignore_ascii_case(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crm.example.toml");
        let cfg = load(Some(&path)).expect("example config");
        assert_eq!(cfg.stream.replicas, 3);
        assert_eq!(cfg.gateway.api_keys.len(), 1);
        assert_eq!(cfg.projector.batch_size, 20_000);
    }

    /// A setting chosen in the file counts as set even when it equals its default (`crm
    /// dev` keeps a chosen gRPC address and picks a free port only when none was chosen).
    #[test]
    fn a_setting_equal_to_its_default_is_still_set() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let chosen = dir.path().join("chosen.toml");
        let default = crm_gateway::GatewayConfig::default().grpc_addr;
        std::fs::write(&chosen, format!("[gateway]\ngrpc_addr = \"{default}\"\n"))?;
        let silent = dir.path().join("silent.toml");
        std::fs::write(&silent, "[gateway]\nhttp_addr = \"127.0.0.1:8080\"\n")?;
        assert!(is_set(Some(&chosen), "gateway.grpc_addr")?);
        assert_eq!(load(Some(&chosen))?.gateway.grpc_addr, default);
        assert!(!is_set(Some(&silent), "gateway.grpc_addr")?);
        assert!(is_set(Some(&silent), "gateway.http_addr")?);
        Ok(())
    }

    #[test]
    fn a_number_for_a_text_setting_says_how_to_quote_it() {
        let numbers = Figment::new().merge(Toml::string("[nats]\npassword = 123456"));
        let err = format!(
            "{:#}",
            extract(&numbers).expect_err("a number for a password")
        );
        assert!(err.contains("quote it"), "{err}");
        let quoted = Figment::new().merge(Toml::string("[nats]\npassword = \"007\""));
        let cfg = extract(&quoted).expect("a quoted password");
        assert_eq!(
            cfg.nats.password.map(|p| p.expose().to_owned()).as_deref(),
            Some("007")
        );
        let other = Figment::new().merge(Toml::string("[gateway]\nmax_attempts = \"many\""));
        let err = format!("{:#}", extract(&other).expect_err("text for a number"));
        assert!(!err.contains("quote it"), "{err}");
    }

    /// A number for a secret is refused without its value in the message, which ends up
    /// in logs.
    #[test]
    fn a_number_for_a_secret_is_not_echoed() {
        for (toml, name) in [
            ("[nats]\npassword = 83710293", "password"),
            ("[nats]\ntoken = 83710293", "token"),
            ("[audit]\nsigning_key = 83710293", "signing_key"),
        ] {
            let err = format!(
                "{:#}",
                extract(&Figment::new().merge(Toml::string(toml))).expect_err("a number")
            );
            assert!(!err.contains("83710293"), "{err}");
            assert!(err.contains(name) && err.contains("quote it"), "{err}");
        }
    }

    /// An empty or placeholder signing key is refused: anyone could forge checkpoints
    /// with it.
    #[test]
    fn a_guessable_signing_key_is_refused() {
        for key in ["", "   ", SIGNING_KEY_PLACEHOLDER] {
            let toml = format!("[audit]\nsigning_key = {key:?}");
            let err = format!(
                "{:#}",
                extract(&Figment::new().merge(Toml::string(&toml))).expect_err(key)
            );
            assert!(err.contains("CRM_AUDIT__SIGNING_KEY"), "{err}");
        }
        // A short key is warned about, not refused: its checkpoints stay verifiable.
        for key in ["short", "a-long-random-test-key"] {
            let toml = format!("[audit]\nsigning_key = {key:?}");
            assert!(extract(&Figment::new().merge(Toml::string(&toml))).is_ok());
        }
    }

    #[test]
    fn a_missing_file_is_an_error() {
        assert!(load(Some(Path::new("/nonexistent/crm.toml"))).is_err());
    }
}
