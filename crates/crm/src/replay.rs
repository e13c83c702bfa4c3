//! `crm replay`: blue-green rebuilds and point-in-time views, with a progress bar.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use crm_projections::ReadStore;
use crm_projections::rebuild;
use crm_projections::store::Location;
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;
use crate::services;

/// Arguments of `crm replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// audit, lifecycle, trust, health, renewals, scored (lifecycle, trust and health
    /// together: the views the scoring policy decides) or all.
    #[arg(value_parser = ["all", "scored", "audit", "lifecycle", "trust", "health", "renewals"])]
    pub projection: String,
    /// Build the view as it stood at this stream sequence or RFC 3339 recording time,
    /// into `--into` instead of swapping it live.
    #[arg(long, requires = "into")]
    pub as_of: Option<String>,
    /// Where an as-of view goes: a SQLite file, or `postgres:SCHEMA` for a schema of the
    /// configured PostgreSQL database. Only with `--as-of`: without it a replay swaps the
    /// live view.
    #[arg(long, requires = "as_of")]
    pub into: Option<String>,
    /// Build the read store at the configured SQLite path when there is none (a first
    /// deployment). Without it a missing store is refused: pointed at a mistyped path, a
    /// replay would fill a new store that nothing reads and report success.
    #[arg(long, conflicts_with = "as_of")]
    pub create: bool,
}

/// The store an as-of view goes into: `postgres:SCHEMA` (in the configured PostgreSQL
/// database) or a SQLite file; never the live store.
fn into_location(cfg: &Config, into: &str) -> anyhow::Result<Location> {
    let live = cfg.store.location();
    let target = match into.strip_prefix("postgres:") {
        Some(schema) => {
            let url =
                cfg.store.postgres_url.clone().context(
                    "--into postgres:SCHEMA needs a PostgreSQL store (store.postgres_url)",
                )?;
            Location::Postgres {
                url,
                schema: schema.to_owned(),
            }
        }
        None => Location::Sqlite(PathBuf::from(into)),
    };
    let same = match (&target, &live) {
        (Location::Sqlite(a), Location::Sqlite(b)) => {
            a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
        }
        (a, b) => a == b,
    };
    anyhow::ensure!(!same, "--into must not be the live read store");
    Ok(target)
}

/// `crm replay NAME --as-of AT --into TARGET`: the view as it stood at `as_of` (a stream
/// sequence or an RFC 3339 recording time), built into `--into`.
async fn as_of_into(
    cfg: &Config,
    log: &crm_log::EventLog,
    policy: std::sync::Arc<crm_domain::policy::Policy>,
    args: &ReplayArgs,
    as_of: &str,
) -> anyhow::Result<()> {
    let at = match as_of.parse::<u64>() {
        Ok(seq) => seq,
        Err(_) => {
            let t = OffsetDateTime::parse(as_of, &Rfc3339)
                .with_context(|| format!("--as-of {as_of:?} is neither a sequence nor RFC 3339"))?;
            rebuild::sequence_at(log, t).await?
        }
    };
    let into = args.into.as_deref().context("--as-of needs --into FILE")?;
    let into = into_location(cfg, into)?;
    // Refused before the target is made, so a mistyped sequence leaves no empty file.
    let head = log.head().await?;
    if at > head {
        return Err(crm_projections::ProjectionError::AsOfPastHead { at, head }.into());
    }
    let target = ReadStore::open_at(&into).await?;
    let started = Instant::now();
    rebuild::as_of(
        &args.projection,
        policy,
        &target,
        log,
        at,
        cfg.projector.batch_size,
    )
    .await?;
    println!(
        "{} as of sequence {at} written to {into} in {:.1}s",
        args.projection,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs a replay.
pub async fn run(cfg: Config, args: ReplayArgs) -> anyhow::Result<()> {
    let log = services::connect_existing(&cfg).await?;
    let policy = services::policy(&cfg)?;
    if let Some(as_of) = &args.as_of {
        // The live store is not read, nor created: the view goes into `--into`.
        return as_of_into(&cfg, &log, policy, &args, as_of).await;
    }
    if !args.create {
        services::store_must_exist(&cfg, ", or pass --create to build a new one there")?;
    }
    let parts = services::with_log(&cfg, log).await?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} {prefix:>10} [{bar:40}] {pos}/{len} events {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let progress = |name: &str, done: u64, total: u64| {
        bar.set_prefix(name.to_owned());
        bar.set_length(total);
        bar.set_position(done);
    };
    let claim = rebuild::RebuildClaim::take(&parts.store).await?;
    let done = rebuild::rebuild_by_name(
        &claim,
        &args.projection,
        policy,
        &parts.store,
        &parts.log,
        cfg.projector.batch_size,
        &progress,
    )
    .await?;
    bar.finish_and_clear();
    for (name, at) in done {
        println!("{name}: rebuilt to sequence {at} and swapped in");
    }
    println!("done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_is_a_file_or_a_postgres_schema_and_never_the_live_store() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut cfg = Config::default();
        cfg.store.sqlite_path = dir.path().join("views.sqlite");
        std::fs::write(&cfg.store.sqlite_path, b"")?;

        let other = dir.path().join("q1.sqlite");
        assert_eq!(
            into_location(&cfg, &other.display().to_string())?,
            Location::Sqlite(other)
        );
        let live = cfg.store.sqlite_path.display().to_string();
        assert!(into_location(&cfg, &live).is_err());
        // The same file by another path is still the live store.
        let roundabout = dir.path().join(".").join("views.sqlite");
        assert!(into_location(&cfg, &roundabout.display().to_string()).is_err());
        // A schema needs a configured PostgreSQL store.
        assert!(into_location(&cfg, "postgres:q1").is_err());

        cfg.store.postgres_url = Some("postgres://u@h/db".into());
        cfg.store.postgres_schema = "crm".into();
        assert_eq!(
            into_location(&cfg, "postgres:q1")?,
            Location::Postgres {
                url: "postgres://u@h/db".into(),
                schema: "q1".into()
            }
        );
        assert!(into_location(&cfg, "postgres:crm").is_err());
        Ok(())
    }
}
