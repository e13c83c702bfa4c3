//! Customer views: the customer, its trust ledger, lifecycle history and alerts, and the
//! stage counts.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use crm_domain::CustomerId;
use crm_projections::{health, lifecycle, trust};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::auth::Role;
use crate::error::ApiError;

/// Every projection a customer read may wait for.
pub const VIEWS: [&str; 4] = [
    lifecycle::NAME,
    trust::NAME,
    health::NAME,
    crm_projections::renewals::NAME,
];

/// Waits (bounded by `read_wait`) until every view has applied this process's own latest
/// write to the customer, so a client reads what it just wrote.
pub(crate) async fn wait_for_own_writes(state: &AppState, id: &CustomerId) -> Result<(), ApiError> {
    let Some(wanted) = state.customers.known_sequence(id) else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + state.read_wait;
    while state.store.min_checkpoint(&VIEWS).await? < wanted {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

pub(crate) fn not_found(id: &CustomerId) -> ApiError {
    ApiError::NotFound {
        code: "customer_not_found",
        what: format!("customer {id}"),
    }
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// The customer view (lifecycle, trust, health, tier), after waiting for this process's
/// own writes. Shared by every door.
pub async fn customer_view(state: &AppState, id: &CustomerId) -> Result<Value, ApiError> {
    wait_for_own_writes(state, id).await?;
    let mut body = Map::new();
    body.insert("customer_id".into(), json!(id));
    let mut version = None;
    if let Some(view) = lifecycle::get(&state.store, id).await? {
        version = Some(view.version);
        body.insert(
            "lifecycle".into(),
            json!({ "stage": view.stage, "since": view.since, "won_back": view.won_back }),
        );
    }
    if let Some(t) = trust::get(&state.store, id).await? {
        body.insert("trust".into(), json!(t));
    }
    if let Some(h) = health::get(&state.store, id).await? {
        version = version.max(Some(h.version));
        body.insert(
            "health".into(),
            json!({ "color": h.color, "score": h.score, "reasons": h.reasons, "policy_version": h.policy_version }),
        );
        body.insert("tier".into(), json!(h.tier));
    }
    let version = match version {
        Some(v) => v,
        // The views may lag behind the log: the log decides whether the customer exists.
        None => match state.customers.load(*id).await? {
            Some(loaded) => loaded.state.version,
            None => return Err(not_found(id)),
        },
    };
    body.insert("version".into(), json!(version));
    Ok(Value::Object(body))
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
    Ok(Json(customer_view(&state, &id).await?))
}

/// Paging by version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionPage {
    #[serde(default)]
    pub after_version: u64,
    #[serde(default = "default_limit")]
    pub limit: u32,
}

/// Paging by stream sequence.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequencePage {
    #[serde(default)]
    pub after_sequence: u64,
    #[serde(default = "default_limit")]
    pub limit: u32,
}

pub(crate) fn default_limit() -> u32 {
    100
}

/// `GET /v1/customers/{customer_id}/lifecycle/history`.
pub async fn lifecycle_history(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    page: Result<Query<VersionPage>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let id = super::customer_id(&raw_id)?;
    let page = query(page)?;
    let limit = page.limit.clamp(1, 1_000);
    wait_for_own_writes(&state, &id).await?;
    if lifecycle::get(&state.store, &id).await?.is_none() {
        return Err(not_found(&id));
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

/// `GET /v1/customers/{customer_id}/trust/ledger`.
pub async fn trust_ledger(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    page: Result<Query<SequencePage>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let id = super::customer_id(&raw_id)?;
    let page = query(page)?;
    let limit = page.limit.clamp(1, 1_000);
    wait_for_own_writes(&state, &id).await?;
    let Some(account) = trust::get(&state.store, &id).await? else {
        return Err(not_found(&id));
    };
    let entries = trust::ledger(&state.store, &id, page.after_sequence, limit).await?;
    let next = (entries.len() as u32 == limit)
        .then(|| entries.last().map(|e| e.stream_sequence))
        .flatten();
    Ok(Json(json!({
        "customer_id": id,
        "balance": account,
        "entries": entries,
        "next_after_sequence": next,
    })))
}

/// `GET /v1/customers/{customer_id}/alerts`: open and resolved alerts, oldest first.
pub async fn customer_alerts(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let id = super::customer_id(&raw_id)?;
    wait_for_own_writes(&state, &id).await?;
    if health::get(&state.store, &id).await?.is_none() {
        return Err(not_found(&id));
    }
    let alerts = health::customer_alerts(&state.store, &id).await?;
    Ok(Json(json!({ "customer_id": id, "alerts": alerts })))
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
