//! `crm status`: per projection the checkpoint, log head, lag, apply rate and state, as a
//! table or as JSON.

use crm_projections::status::{Status, statuses};

use crate::config::Config;
use crate::services;

/// Arguments of `crm status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON (the body of `GET /v1/admin/projections`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints every projection's status.
pub async fn run(cfg: Config, args: StatusArgs) -> anyhow::Result<()> {
    let parts = services::open_existing_store(&cfg).await?;
    let all = statuses(&parts.store, &parts.log).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "projections": all }))?
        );
    } else {
        print!("{}", table(&all));
    }
    Ok(())
}

/// The status as an aligned text table.
pub fn table(all: &[Status]) -> String {
    let mut out = format!(
        "{:<10} {:>12} {:>12} {:>10} {:>9} {:>12}  {}\n",
        "PROJECTION", "CHECKPOINT", "LOG HEAD", "LAG", "LAG (s)", "RATE (ev/s)", "STATE"
    );
    for s in all {
        let mut state = s.state.to_owned();
        if let Some(r) = &s.rebuild {
            let (rs, done, total) = (&r["state"], &r["done"], &r["total"]);
            state.push_str(&format!(
                " (last rebuild: {} {done}/{total}",
                rs.as_str().unwrap_or("?")
            ));
            if let Some(e) = r["error"].as_str() {
                state.push_str(&format!(", error: {e}"));
            }
            state.push(')');
        }
        out.push_str(&format!(
            "{:<10} {:>12} {:>12} {:>10} {:>9.1} {:>12.0}  {}\n",
            s.name, s.checkpoint, s.log_head, s.lag_events, s.lag_seconds, s.apply_rate, state
        ));
    }
    out
}
