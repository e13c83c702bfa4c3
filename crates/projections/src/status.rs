//! What ops see about each projection: checkpoint, log head, lag, apply rate, state and
//! the progress of a rebuild. One computation for `crm status`, `GET /v1/admin/projections`
//! and `/metrics`.

use crm_log::EventLog;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::any::ALL;
use crate::error::ProjectionError;
use crate::rebuild::rebuild_status;
use crate::store::ReadStore;

/// A projection counts as stalled when it is behind and has not committed for this long.
const STALLED_AFTER_SECS: i64 = 60;

/// The apply rate a projector last wrote is reported while it is this fresh; an older one
/// means nothing was applied lately, so the rate is 0.
const RATE_FRESH_SECS: f64 = 15.0;

/// One projection's status (the body of `GET /v1/admin/projections` and `crm status --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = ProjectionStatus))]
pub struct Status {
    pub name: &'static str,
    /// Last stream sequence applied.
    pub checkpoint: u64,
    /// Last stream sequence of the log.
    pub log_head: u64,
    /// Events in the log not yet applied.
    pub lag_events: u64,
    /// Age of the oldest event not yet applied (0 when caught up).
    pub lag_seconds: f64,
    /// Events applied per second over the projector's last ten seconds of commits (0 when
    /// nothing was applied in the last 15 s).
    pub apply_rate: f64,
    /// `live` (caught up or moving), `stalled` (behind and not written for 60 s),
    /// `never_ran`, `rebuilding` (a shadow copy is being built; reads use the live one),
    /// `failed` (the last rebuild failed; the live copy is untouched and otherwise live),
    /// `ahead_of_log` (its checkpoint is past the head: the store was built from another
    /// log) or `other_log` (built from another log, by the log's first event); the
    /// projector refuses to run in the last two.
    pub state: &'static str,
    /// When the projection last committed a batch (RFC 3339).
    pub updated_at: Option<String>,
    /// The latest blue-green rebuild, if any: `{state, done, total, started_at,
    /// updated_at, error}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub rebuild: Option<Value>,
}

/// The status of every projection, read from the store and the log.
pub async fn statuses(store: &ReadStore, log: &EventLog) -> Result<Vec<Status>, ProjectionError> {
    // Checkpoints first, then the head: a projector that commits an event appended in
    // between must not look ahead of the log (that state says "built from another log").
    let rows = store.checkpoint_rows().await?;
    let head = log.head().await?;
    let origins = crate::origin::recorded(store).await?;
    // An undecodable first event leaves the check out rather than the whole status.
    let first_event = crate::origin::first_event_id(log).await.ok().flatten();
    let now = OffsetDateTime::now_utc();
    let mut out = Vec::with_capacity(ALL.len());
    for name in ALL {
        let row = rows.iter().find(|r| r.name == name);
        let checkpoint = row.map_or(0, |r| r.last_sequence);
        let updated = row.and_then(|r| OffsetDateTime::parse(&r.updated_at, &Rfc3339).ok());
        let lag_events = head.saturating_sub(checkpoint);
        let lag_seconds = if lag_events == 0 {
            0.0
        } else {
            match log.get(checkpoint + 1).await {
                Ok(Some(e)) => (now - e.envelope.recorded_at).as_seconds_f64().max(0.0),
                _ => 0.0,
            }
        };
        let apply_rate = match (row, updated) {
            (Some(r), Some(u)) if (now - u).as_seconds_f64() <= RATE_FRESH_SECS => r.apply_rate,
            _ => 0.0,
        };
        let other_log = first_event.as_ref().is_some_and(|first| {
            origins
                .iter()
                .any(|(n, recorded)| n == name && recorded != first)
        });
        let mut state = match (row, updated) {
            // Built from another log: its projector refuses to run on this one.
            (Some(r), _) if r.last_sequence > head => "ahead_of_log",
            _ if other_log => "other_log",
            (None, _) if head > 0 => "never_ran",
            (None, _) => "live",
            (Some(_), Some(u))
                if lag_events > 0 && (now - u).whole_seconds() > STALLED_AFTER_SECS =>
            {
                "stalled"
            }
            _ => "live",
        };
        let rebuild = rebuild_status(store, name).await?;
        if let Some((s, _, _, _, up, _)) = &rebuild {
            let fresh = OffsetDateTime::parse(up, &Rfc3339)
                .is_ok_and(|u| (now - u).whole_seconds() <= STALLED_AFTER_SECS);
            if s == "rebuilding" && fresh {
                state = "rebuilding";
            } else if s == "failed" && state == "live" {
                // A failed rebuild left the live copy as it was: a stall, a projector that
                // never ran or one ahead of the log says more about the live copy.
                state = "failed";
            }
        }
        let rebuild = rebuild.map(|(s, done, total, started, updated, error)| {
            json!({ "state": s, "done": done, "total": total, "started_at": started, "updated_at": updated, "error": error })
        });
        out.push(Status {
            name,
            checkpoint,
            log_head: head,
            lag_events,
            lag_seconds,
            apply_rate,
            state,
            updated_at: row.map(|r| r.updated_at.clone()),
            rebuild,
        });
    }
    Ok(out)
}
