//! Ops: projection status and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use crm_projections::status::Status;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Role;
use crate::error::ApiError;

/// The projections a gateway reports on.
pub const PROJECTIONS: [&str; 5] = crm_projections::any::ALL;

/// Status of every projection, read from the store and the log.
pub async fn statuses(state: &AppState) -> Result<Vec<Status>, ApiError> {
    Ok(crm_projections::status::statuses(&state.store, state.customers.log()).await?)
}

/// Every projection's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Projections {
    pub projections: Vec<Status>,
}

/// Per projection: checkpoint, log head, lag in events and seconds, apply rate, state, and the
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
        (
            "crm_projection_apply_rate",
            "Events applied per second over the projector's last ten seconds.",
        ),
    ] {
        out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} gauge\n"));
        for s in &statuses {
            let v = match metric {
                "crm_projection_checkpoint" => s.checkpoint as f64,
                "crm_projection_lag_events" => s.lag_events as f64,
                "crm_projection_lag_seconds" => s.lag_seconds,
                _ => s.apply_rate,
            };
            out.push_str(&format!("{metric}{{projection=\"{}\"}} {v}\n", s.name));
        }
    }
    out.push_str(
        "# HELP crm_projection_state 1 for the projection's current state (live, stalled, \
         never_ran, rebuilding, failed, ahead_of_log, other_log).\n# TYPE crm_projection_state gauge\n",
    );
    for s in &statuses {
        out.push_str(&format!(
            "crm_projection_state{{projection=\"{}\",state=\"{}\"}} 1\n",
            s.name, s.state
        ));
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
    params(("name" = String, Path, description = "audit, lifecycle, trust, health, renewals, scored (lifecycle, trust and health in one swap) or all")),
    responses(
        (status = 202, description = "The rebuild started", body = RebuildAccepted),
        (status = 409, description = "A rebuild into this read store is already running (`rebuild_running`)"),
    ),
    security(("api_key" = []))
)]
pub async fn rebuild(
    State(state): State<AppState>,
    name: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Err(refused) = state.auth.authorize(&headers, Role::Ops) {
        return Ok(super::refused_unread(refused));
    }
    // A name that is not even text is no projection's (after the key is checked, and in
    // the JSON error shape).
    let name = name.map_or_else(|_| String::new(), |axum::extract::Path(n)| n);
    if name != "all" && name != "scored" && !PROJECTIONS.contains(&name.as_str()) {
        return Err(ApiError::NotFound {
            code: "projection_not_found",
            what: format!("projection {name:?}"),
        });
    }
    let Some(ctx) = state.rebuild.clone() else {
        return Err(ApiError::bad_request(
            "rebuild_unavailable",
            "this gateway has no rebuild policy configured",
        ));
    };
    // Claimed here, so a second call while one runs is refused with 409 at once.
    let claim = crm_projections::rebuild::RebuildClaim::take(&state.store).await?;
    let store = state.store.clone();
    let log = state.customers.log().clone();
    let which = name.clone();
    tokio::spawn(async move {
        let result = crm_projections::rebuild::rebuild_by_name(
            &claim,
            &which,
            ctx.policy,
            &store,
            &log,
            ctx.batch_size,
            &|_, _, _| {},
        )
        .await;
        match result {
            Ok(done) => tracing::info!(?done, "rebuild finished"),
            Err(e) => tracing::error!(projection = %which, error = %e, "rebuild failed"),
        }
        // Given up explicitly, so a rebuild asked for right after this one is not refused
        // while PostgreSQL has yet to notice a dropped connection.
        if let Err(e) = claim.release().await {
            tracing::warn!(error = %e, "giving up the rebuild claim failed; it ends with its connection");
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
