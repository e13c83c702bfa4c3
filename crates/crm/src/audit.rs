//! `crm audit`: query, export, verify and checkpoint the event log from the command line.

use std::io::Write;

use anyhow::Context;
use crm_domain::CustomerId;
use crm_log::audit::{self, SignedHeads};
use crm_projections::audit::{self as index, AuditFilter};
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;
use crate::services;

/// Audit sub-commands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Events in log order, filtered.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        /// Most events to print; 0 prints every match (as `limit=0` over HTTP and gRPC).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Every matching event, as NDJSON or CSV, to stdout.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, value_parser = ["ndjson", "csv"], default_value = "ndjson")]
        format: String,
    },
    /// Recomputes every hash chain (or one customer's) and checks signed checkpoints.
    /// Exits non-zero when anything is broken.
    Verify {
        #[arg(long)]
        customer: Option<String>,
    },
    /// Signs the current chain heads ([audit] signing_key).
    Checkpoint,
}

/// Filters shared by query and export.
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    #[arg(long)]
    pub customer: Option<String>,
    #[arg(long = "type")]
    pub event_type: Option<String>,
    #[arg(long)]
    pub actor: Option<String>,
    /// Business time from (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Business time to (RFC 3339).
    #[arg(long)]
    pub to: Option<String>,
    /// Recording time from (RFC 3339): when the log stored the event.
    #[arg(long)]
    pub recorded_from: Option<String>,
    /// Recording time to (RFC 3339).
    #[arg(long)]
    pub recorded_to: Option<String>,
    /// Only events after this stream sequence.
    #[arg(long, default_value_t = 0)]
    pub after_sequence: u64,
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<AuditFilter> {
        let t = |s: &Option<String>, name: &str| -> anyhow::Result<Option<OffsetDateTime>> {
            s.as_deref()
                .map(|v| {
                    OffsetDateTime::parse(v, &Rfc3339)
                        .with_context(|| format!("--{name} {v:?} is not RFC 3339"))
                })
                .transpose()
        };
        if let Some(c) = &self.customer {
            CustomerId::parse(c).with_context(|| format!("--customer {c:?} is not a UUID"))?;
        }
        Ok(AuditFilter {
            customer_id: self.customer.clone(),
            event_type: self.event_type.clone(),
            actor: self.actor.clone(),
            from: t(&self.from, "from")?,
            to: t(&self.to, "to")?,
            recorded_from: t(&self.recorded_from, "recorded-from")?,
            recorded_to: t(&self.recorded_to, "recorded-to")?,
        })
    }
}

const CSV_HEADER: &str =
    "stream_sequence,event_id,customer_id,type,version,occurred_at,recorded_at,actor,payload,hash";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_line(e: &crm_log::StoredEvent) -> String {
    let env = &e.envelope;
    let t = |x: OffsetDateTime| x.format(&Rfc3339).unwrap_or_default();
    [
        e.sequence.to_string(),
        env.event_id.to_string(),
        env.customer_id.to_string(),
        env.event_type.clone(),
        env.version.to_string(),
        t(env.occurred_at),
        t(env.recorded_at),
        env.actor.clone(),
        env.payload.to_string(),
        env.hash.clone(),
    ]
    .iter()
    .map(|f| csv_field(f))
    .collect::<Vec<_>>()
    .join(",")
}

fn ndjson_line(e: &crm_log::StoredEvent) -> String {
    let mut v = serde_json::to_value(&e.envelope).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("stream_sequence".into(), e.sequence.into());
    }
    v.to_string()
}

/// Runs an audit command.
pub async fn run(cfg: Config, command: AuditCommand) -> anyhow::Result<()> {
    // A customer's verify reads the log alone; everything else reads the store too.
    let parts = match &command {
        AuditCommand::Verify {
            customer: Some(_), ..
        } => services::open_existing(&cfg).await?,
        _ => services::open_existing_store(&cfg).await?,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match command {
        AuditCommand::Query { filter, limit } => {
            let f = filter.filter()?;
            let mut after = filter.after_sequence;
            let mut sent = 0;
            let limit = if limit == 0 { u64::MAX } else { limit };
            while sent < limit {
                let want = (limit - sent).min(500) as u32;
                let page = index::page(&parts.store, &parts.log, &f, after, want).await?;
                for e in &page {
                    writeln!(out, "{}", ndjson_line(e))?;
                }
                sent += page.len() as u64;
                match page.last() {
                    Some(last) if page.len() as u32 == want => after = last.sequence,
                    _ => break,
                }
            }
        }
        AuditCommand::Export { filter, format } => {
            let f = filter.filter()?;
            let head = parts.log.head().await?;
            let bar = ProgressBar::new(head).with_style(
                ProgressStyle::with_template(
                    "{spinner} export [{bar:40}] seq {pos}/{len} {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            if format == "csv" {
                writeln!(out, "{CSV_HEADER}")?;
            }
            let mut after = filter.after_sequence;
            loop {
                let page = index::page(&parts.store, &parts.log, &f, after, 1_000).await?;
                for e in &page {
                    let line = if format == "csv" {
                        csv_line(e)
                    } else {
                        ndjson_line(e)
                    };
                    writeln!(out, "{line}")?;
                }
                match page.last() {
                    Some(last) => {
                        after = last.sequence;
                        bar.set_position(after);
                    }
                    None => break,
                }
            }
            bar.finish_and_clear();
        }
        AuditCommand::Verify { customer } => {
            let report = match customer {
                Some(c) => {
                    let id = CustomerId::parse(&c)
                        .with_context(|| format!("--customer {c:?} is not a UUID"))?;
                    let report = audit::verify_customer(&parts.log, &id).await?;
                    anyhow::ensure!(
                        report.events_checked > 0,
                        "customer {id} has no events in the log: nothing to verify"
                    );
                    report
                }
                None => {
                    let checkpoints: Vec<SignedHeads> = index::checkpoints(&parts.store)
                        .await?
                        .iter()
                        .map(SignedHeads::from)
                        .collect();
                    let key = cfg
                        .audit
                        .signing_key
                        .as_ref()
                        .map(|k| k.expose().as_bytes().to_vec());
                    let bar = ProgressBar::new(0).with_style(
                        ProgressStyle::with_template(
                            "{spinner} verify [{bar:40}] {pos}/{len} events {per_sec} eta {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    let r = audit::verify_all(
                        &parts.log,
                        &checkpoints,
                        key.as_deref(),
                        |done, head| {
                            bar.set_length(head);
                            bar.set_position(done);
                        },
                    )
                    .await?;
                    bar.finish_and_clear();
                    let mut r = r;
                    index::check_index_against_head(&parts.store, &parts.log, &mut r).await?;
                    r
                }
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            out.flush()?;
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            anyhow::ensure!(report.ok, "the event log failed verification");
        }
        AuditCommand::Checkpoint => {
            let key = cfg
                .audit
                .signing_key
                .as_ref()
                .context("no [audit] signing_key configured (CRM_AUDIT__SIGNING_KEY)")?;
            match index::create_checkpoint(&parts.store, &parts.log, key.expose().as_bytes())
                .await?
            {
                Some(c) => writeln!(out, "{}", serde_json::to_string_pretty(&c)?)?,
                None => anyhow::bail!("the audit index is empty: run the audit projector first"),
            }
        }
    }
    out.flush()?;
    Ok(())
}
