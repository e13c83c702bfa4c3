//! Ops: projection status and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Role;
use crate::error::ApiError;

/// The projections a gateway reports on.
pub const PROJECTIONS: [&str; 5] = ["audit", "lifecycle", "trust", "health", "renewals"];

/// One projection's status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectionStatus {
    pub name: &'static str,
    pub checkpoint: u64,
    pub log_head: u64,
    pub lag_events: u64,
    /// Age of the oldest event not yet applied (0 when caught up).
    pub lag_seconds: f64,
    /// `live` (caught up or moving), `stalled` (behind and not written for 60 s),
    /// `never_ran`, `rebuilding` (a shadow copy is being built; reads use the live one) or
    /// `failed` (the last rebuild failed; the live copy is untouched).
    pub state: &'static str,
    pub updated_at: Option<String>,
    /// The latest blue-green rebuild, if any: `{state, done, total, started_at,
    /// updated_at, error}`.
    #[schema(value_type = Option<Object>)]
    pub rebuild: Option<Value>,
}

/// Status of every projection, read from the store and the log.
pub async fn statuses(state: &AppState) -> Result<Vec<ProjectionStatus>, ApiError> {
    let log = state.customers.log();
    let head = log.head().await?;
    let store = &state.store;
    let rows = store.checkpoints().await?;
    let now = OffsetDateTime::now_utc();
    let mut out = Vec::new();
    for name in PROJECTIONS {
        let row = rows.iter().find(|(n, _, _)| n == name);
        let checkpoint = row.map_or(0, |(_, s, _)| *s);
        let updated = row.and_then(|(_, _, u)| OffsetDateTime::parse(u, &Rfc3339).ok());
        let lag_events = head.saturating_sub(checkpoint);
        let lag_seconds = if lag_events == 0 {
            0.0
        } else {
            match log.get(checkpoint + 1).await {
                Ok(Some(e)) => (now - e.envelope.recorded_at).as_seconds_f64().max(0.0),
                _ => 0.0,
            }
        };
        let state = match (row, updated) {
            (None, _) if head > 0 => "never_ran",
            (None, _) => "live",
            (Some(_), Some(u)) if lag_events > 0 && (now - u).whole_seconds() > 60 => "stalled",
            _ => "live",
        };
        let rebuild = crm_projections::rebuild::rebuild_status(store, name).await?;
        let rebuilding = rebuild.as_ref().is_some_and(|r| {
            r.0 == "rebuilding"
                && OffsetDateTime::parse(&r.4, &Rfc3339)
                    .is_ok_and(|u| (now - u).whole_seconds() <= 60)
        });
        let failed = rebuild.as_ref().is_some_and(|r| r.0 == "failed");
        let state = if rebuilding {
            "rebuilding"
        } else if failed {
            "failed"
        } else {
            state
        };
        let rebuild = rebuild.map(|(s, done, total, started, updated, error)| {
            json!({ "state": s, "done": done, "total": total, "started_at": started, "updated_at": updated, "error": error })
        });
        out.push(ProjectionStatus {
            name,
            rebuild,
            checkpoint,
            log_head: head,
            lag_events,
            lag_seconds,
            state,
            updated_at: row.map(|(_, _, u)| u.clone()),
        });
    }
    Ok(out)
}

/// Every projection's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Projections {
    pub projections: Vec<ProjectionStatus>,
}

/// Per projection: checkpoint, log head, lag in events and seconds, state, and the
/// progress of a running rebuild.
///
/// Role: ops.
#[utoipa::path(
    get, path = "/v1/admin/projections", tag = "admin",
    responses((status = 200, description = "Every projection", body = Projections)),
    security(("api_key" = []))
)]
pub async fn projections(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Projections>, ApiError> {
    state.auth.authorize(&headers, Role::Ops)?;
    Ok(Json(Projections {
        projections: statuses(&state).await?,
    }))
}

/// Prometheus metrics: log head, and per projection checkpoint and lag.
///
/// No key needed (scrapers), like `/healthz`.
#[utoipa::path(
    get, path = "/metrics", tag = "admin",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let statuses = statuses(&state).await?;
    let mut out = String::new();
    let head = statuses.first().map_or(0, |s| s.log_head);
    out.push_str("# HELP crm_log_head_sequence Last stream sequence of the event log.\n");
    out.push_str("# TYPE crm_log_head_sequence gauge\n");
    out.push_str(&format!("crm_log_head_sequence {head}\n"));
    for (metric, help) in [
        (
            "crm_projection_checkpoint",
            "Last stream sequence applied by the projection.",
        ),
        (
            "crm_projection_lag_events",
            "Events in the log not yet applied by the projection.",
        ),
        (
            "crm_projection_lag_seconds",
            "Age of the oldest event not yet applied.",
        ),
    ] {
        out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} gauge\n"));
        for s in &statuses {
            let v = match metric {
                "crm_projection_checkpoint" => s.checkpoint as f64,
                "crm_projection_lag_events" => s.lag_events as f64,
                _ => s.lag_seconds,
            };
            out.push_str(&format!("{metric}{{projection=\"{}\"}} {v}\n", s.name));
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// A rebuild that started.
#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildAccepted {
    pub projection: String,
    /// Always `rebuilding`.
    pub state: String,
    /// Where to follow the progress.
    pub status: String,
}

/// Starts a blue-green rebuild in the background: a shadow copy is built from the first
/// event, caught up and swapped in atomically; reads use the live copy until then.
/// Progress shows in `GET /v1/admin/projections`.
///
/// Role: ops.
#[utoipa::path(
    post, path = "/v1/admin/projections/{name}/rebuild", tag = "admin",
    params(("name" = String, Path, description = "audit, lifecycle, trust, health, renewals or all")),
    responses((status = 202, description = "The rebuild started", body = RebuildAccepted)),
    security(("api_key" = []))
)]
pub async fn rebuild(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.authorize(&headers, Role::Ops)?;
    if name != "all" && !PROJECTIONS.contains(&name.as_str()) {
        return Err(ApiError::NotFound {
            code: "projection_not_found",
            what: format!("projection {name:?}"),
        });
    }
    let Some(ctx) = state.rebuild.clone() else {
        return Err(ApiError::bad_request(
            "rebuild_unavailable",
            "this gateway has no read-store file to rebuild into",
        ));
    };
    let store = state.store.clone();
    let log = state.customers.log().clone();
    let which = name.clone();
    tokio::spawn(async move {
        let result = crm_projections::rebuild::rebuild_by_name(
            &which,
            ctx.policy,
            &store,
            &ctx.live_file,
            &log,
            ctx.batch_size,
            &|_, _, _| {},
        )
        .await;
        match result {
            Ok(done) => tracing::info!(?done, "rebuild finished"),
            Err(e) => tracing::error!(projection = %which, error = %e, "rebuild failed"),
        }
    });
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(RebuildAccepted {
            projection: name,
            state: "rebuilding".into(),
            status: "/v1/admin/projections".into(),
        }),
    )
        .into_response())
}
