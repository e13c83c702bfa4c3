//! Command-line arguments and dispatch.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;
use crate::{config, dev, services};

/// Event-sourced customer-lifecycle backend.
#[derive(Debug, Parser)]
#[command(name = "crm", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Everything in one process: a pinned nats-server, the gateway and all projectors,
    /// SQLite read models in the data dir.
    Dev(dev::DevArgs),
    /// The HTTP gateway.
    Gateway {
        #[arg(long, env = "CRM_CONFIG")]
        config: Option<PathBuf>,
        /// Overrides gateway.http_addr.
        #[arg(long)]
        http_addr: Option<SocketAddr>,
    },
    /// Runs a projector until stopped.
    Project {
        /// Projection to run: audit (the audit index), lifecycle, trust, health, renewals,
        /// or all of them.
        #[arg(value_parser = ["all", "audit", "lifecycle", "trust", "health", "renewals"])]
        projection: String,
        #[arg(long, env = "CRM_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The scheduler: marks renewals due and flags inactivity on each tick.
    Schedule {
        #[arg(long, env = "CRM_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Generates believable customers over two years of business time.
    Demo {
        #[command(flatten)]
        args: crate::demo::DemoArgs,
        #[arg(long, env = "CRM_CONFIG")]
        config: Option<PathBuf>,
        /// NATS server to write to (overrides the config), e.g. the one `crm dev` printed.
        #[arg(long)]
        nats_url: Option<String>,
    },
    /// Rebuild a projection from the log into a shadow copy and swap it in atomically, or
    /// build a view as of a past position (`--as-of SEQ|TIME --into FILE`).
    Replay {
        #[command(flatten)]
        args: crate::replay::ReplayArgs,
        #[arg(long, env = "CRM_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Per projection: checkpoint, log head, lag (events and seconds), apply rate, state.
    Status {
        #[command(flatten)]
        args: crate::status::StatusArgs,
        #[arg(long, env = "CRM_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Auditors' tools: query, export, verify, checkpoint.
    Audit {
        #[command(subcommand)]
        command: crate::audit::AuditCommand,
        #[arg(long, env = "CRM_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generates a new random key and prints it with the hash to put in config.
    New,
    /// Prints the SHA-256 hash of a key for `gateway.api_keys[].key_sha256`.
    Hash { key: String },
}

/// Runs the chosen command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Commands::Dev(args) => dev::run(args).await,
        Commands::Gateway { config, http_addr } => {
            let mut cfg = config::load(config.as_deref())?;
            if let Some(addr) = http_addr {
                cfg.gateway.http_addr = addr;
            }
            services::run_gateway(cfg).await
        }
        Commands::Project { projection, config } => {
            let cfg = config::load(config.as_deref())?;
            services::run_projector(cfg, &projection).await
        }
        Commands::Schedule { config } => {
            services::run_scheduler(config::load(config.as_deref())?).await
        }
        Commands::Demo {
            args,
            config,
            nats_url,
        } => {
            let mut cfg = config::load(config.as_deref())?;
            if let Some(url) = nats_url {
                cfg.nats.url = url;
            }
            let log = crm_log::EventLog::connect(&cfg.nats, &cfg.stream).await?;
            let customers = std::sync::Arc::new(crm_log::Customers::new(
                log,
                args.customers as usize + 16,
                8,
            ));
            let started = std::time::Instant::now();
            let (written, replayed) = crate::demo::run(customers, &args).await?;
            println!(
                "demo: {} customers, {written} events written, {replayed} already present, in {:.1}s",
                args.customers,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Commands::Replay { args, config } => {
            crate::replay::run(config::load(config.as_deref())?, args).await
        }
        Commands::Status { args, config } => {
            crate::status::run(config::load(config.as_deref())?, args).await
        }
        Commands::Audit { command, config } => {
            crate::audit::run(config::load(config.as_deref())?, command).await
        }
        Commands::Key { command } => {
            match command {
                KeyCommand::New => {
                    let key = services::new_api_key();
                    println!("key: {key}");
                    println!("key_sha256: {}", crm_gateway::auth::hash_key(&key));
                }
                KeyCommand::Hash { key } => println!("{}", crm_gateway::auth::hash_key(&key)),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Commands};

    #[test]
    fn the_audit_index_can_run_as_a_projector_of_its_own() {
        let cli = Cli::try_parse_from(["crm", "project", "audit"]).expect("parses");
        assert!(
            matches!(cli.command, Commands::Project { ref projection, .. } if projection == "audit")
        );
        assert!(Cli::try_parse_from(["crm", "project", "audits"]).is_err());
    }

    #[test]
    fn replay_into_needs_as_of() {
        // Without --as-of a replay swaps the live view; --into alone would be ignored.
        let err = Cli::try_parse_from(["crm", "replay", "all", "--into", "q1.sqlite"])
            .expect_err("--into alone is refused");
        assert!(err.to_string().contains("--as-of"), "{err}");
        assert!(Cli::try_parse_from(["crm", "replay", "all", "--as-of", "5"]).is_err());
        Cli::try_parse_from([
            "crm",
            "replay",
            "all",
            "--as-of",
            "5",
            "--into",
            "q1.sqlite",
        ])
        .expect("both together");
        Cli::try_parse_from(["crm", "replay", "trust"]).expect("a live replay");
    }
}
