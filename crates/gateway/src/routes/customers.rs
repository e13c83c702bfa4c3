//! Customer views: `GET /v1/customers/{id}`, its lifecycle history, and stage counts.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use crm_domain::CustomerId;
use crm_projections::lifecycle::{self, LifecycleView};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::Role;
use crate::error::ApiError;

/// Reads the lifecycle view, first waiting (bounded) until it reflects this process's own
/// latest write to the customer, so a client sees what it just wrote.
async fn lifecycle_view(
    state: &AppState,
    id: &CustomerId,
) -> Result<Option<LifecycleView>, ApiError> {
    let wanted = state.customers.known_sequence(id);
    let deadline = tokio::time::Instant::now() + state.read_wait;
    loop {
        let view = lifecycle::get(&state.store, id).await?;
        let fresh = match (wanted, &view) {
            (None, _) => true,
            (Some(seq), Some(v)) => v.last_sequence >= seq,
            (Some(_), None) => false,
        };
        if fresh || tokio::time::Instant::now() >= deadline {
            return Ok(view);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `GET /v1/customers/{customer_id}`.
#[tracing::instrument(skip_all, fields(customer_id = %raw_id))]
pub async fn get_customer(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let id = super::customer_id(&raw_id)?;
    match lifecycle_view(&state, &id).await? {
        Some(view) => Ok(Json(json!({
            "customer_id": id,
            "version": view.version,
            "lifecycle": {
                "stage": view.stage,
                "since": view.since,
                "won_back": view.won_back,
            },
        }))),
        None => {
            // The projection may lag behind the log: the log decides whether it exists.
            match state.customers.load(id).await? {
                Some(loaded) => Ok(Json(json!({
                    "customer_id": id,
                    "version": loaded.state.version,
                }))),
                None => Err(ApiError::NotFound {
                    code: "customer_not_found",
                    what: format!("customer {id}"),
                }),
            }
        }
    }
}

/// Paging for history lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Return entries after this version.
    #[serde(default)]
    pub after_version: u64,
    #[serde(default = "default_limit")]
    pub limit: u32,
}

fn default_limit() -> u32 {
    100
}

/// `GET /v1/customers/{customer_id}/lifecycle/history`.
pub async fn lifecycle_history(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let id = super::customer_id(&raw_id)?;
    let Query(page) = page.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = page.limit.clamp(1, 1_000);
    if lifecycle_view(&state, &id).await?.is_none() {
        return Err(ApiError::NotFound {
            code: "customer_not_found",
            what: format!("customer {id}"),
        });
    }
    let items = lifecycle::history(&state.store, &id, page.after_version, limit).await?;
    let next = (items.len() as u32 == limit)
        .then(|| items.last().map(|t| t.version))
        .flatten();
    Ok(Json(json!({
        "customer_id": id,
        "transitions": items,
        "next_after_version": next,
    })))
}

/// `GET /v1/stages`.
pub async fn stages(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let counts = lifecycle::stage_counts(&state.store).await?;
    let total: u64 = counts.values().sum();
    Ok(Json(json!({ "stages": counts, "total": total })))
}
