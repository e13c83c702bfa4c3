//! Customer views: the customer, its trust ledger, lifecycle history and alerts, and the
//! stage counts.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use crm_domain::CustomerId;
use crm_domain::health::Reason;
use crm_projections::health::AlertView;
use crm_projections::lifecycle::TransitionView;
use crm_projections::trust::{LedgerLine, TrustView};
use crm_projections::{health, lifecycle, trust};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::Role;
use crate::error::ApiError;

/// The views the customer read joins.
pub const CUSTOMER_VIEWS: [&str; 3] = [lifecycle::NAME, trust::NAME, health::NAME];

/// Waits (bounded by `read_wait`) until each of `views` (the ones the read answers from)
/// has applied this process's own latest write to the customer, so a client reads what it
/// just wrote. A view the read does not use, stalled or slow, holds nothing up.
pub(crate) async fn wait_for_own_writes(
    state: &AppState,
    id: &CustomerId,
    views: &[&str],
) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + state.read_wait;
    // A command of the customer in flight (this client's next one, the scheduler's) is
    // waited for, within the same bound, rather than taken as nothing to wait for.
    let known = tokio::time::timeout(state.read_wait, state.customers.known_sequence(id));
    let Some(wanted) = known.await.ok().flatten() else {
        return Ok(());
    };
    while state.store.min_checkpoint(views).await? < wanted {
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

/// Answers for a customer a view has not seen yet: the views may lag behind the log, so
/// the log decides whether the customer exists (an empty answer) or not (`404`).
async fn known_to_the_log(state: &AppState, id: &CustomerId) -> Result<(), ApiError> {
    match state.customers.load(*id).await? {
        Some(_) => Ok(()),
        None => Err(not_found(id)),
    }
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// A customer as the views show it. Sections appear once their projection has seen the
/// customer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CustomerView {
    pub customer_id: CustomerId,
    /// The customer's version (events applied) in the most advanced view.
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSection>,
    /// Value tier `A`, `B` or `C`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// The lifecycle section of a customer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LifecycleSection {
    /// acquisition, growth, maturity, decline or churned.
    pub stage: String,
    pub since: String,
    pub won_back: bool,
    /// The policy the health rules (decline on red, maturity in good health) ran under when
    /// the projector last wrote this customer; null for a stage written by a build that
    /// did not record it, until the customer's next event or `crm replay lifecycle`.
    pub policy_version: Option<String>,
}

/// The health section of a customer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthSection {
    /// green, yellow or red.
    pub color: String,
    /// 0-100.
    pub score: u32,
    #[schema(value_type = Vec<Reason>)]
    pub reasons: Value,
    pub policy_version: String,
}

/// The customer view (lifecycle, trust, health, tier), after waiting for this process's
/// own writes. Shared by every door.
pub async fn customer_view(state: &AppState, id: &CustomerId) -> Result<CustomerView, ApiError> {
    wait_for_own_writes(state, id, &CUSTOMER_VIEWS).await?;
    let mut view = CustomerView {
        customer_id: *id,
        version: 0,
        lifecycle: None,
        trust: trust::get(&state.store, id).await?,
        health: None,
        tier: None,
    };
    let mut version = None;
    if let Some(l) = lifecycle::get(&state.store, id).await? {
        version = Some(l.version);
        view.lifecycle = Some(LifecycleSection {
            stage: l.stage,
            since: l.since,
            won_back: l.won_back,
            policy_version: l.policy_version,
        });
    }
    if let Some(h) = health::get(&state.store, id).await? {
        version = version.max(Some(h.version));
        view.tier = Some(h.tier);
        view.health = Some(HealthSection {
            color: h.color,
            score: h.score,
            reasons: h.reasons,
            policy_version: h.policy_version,
        });
    }
    view.version = match version {
        Some(v) => v,
        // As in `known_to_the_log`.
        None => match state.customers.load(*id).await? {
            Some(loaded) => loaded.state.version,
            None => return Err(not_found(id)),
        },
    };
    Ok(view)
}

/// The customer: lifecycle stage, trust balance, health and tier.
///
/// Role: reader. Waits briefly for this gateway's own latest write to the customer.
#[utoipa::path(
    get, path = "/v1/customers/{customer_id}", tag = "customers",
    params(("customer_id" = String, Path, description = "The customer's UUID")),
    responses((status = 200, description = "The customer", body = CustomerView)),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(customer_id = %raw_id))]
pub async fn get_customer(
    State(state): State<AppState>,
    super::CustomerPath(raw_id): super::CustomerPath,
    headers: HeaderMap,
) -> Result<Json<CustomerView>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let id = super::customer_id(&raw_id)?;
    Ok(Json(customer_view(&state, &id).await?))
}

/// Paging by version.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionPage {
    /// Return transitions after this customer version.
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    pub after_version: Option<u64>,
    /// Page size, 1..=1000.
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    #[param(default = 100)]
    pub limit: Option<u32>,
}

/// Paging by stream sequence.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SequencePage {
    /// Return entries after this stream sequence.
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    pub after_sequence: Option<u64>,
    /// Page size, 1..=1000 (a ledger page ends with a whole event, so it can hold a line
    /// more).
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    #[param(default = 100)]
    pub limit: Option<u32>,
}

/// A page of a customer's stage changes.
#[derive(Debug, Serialize, ToSchema)]
pub struct LifecycleHistory {
    pub customer_id: CustomerId,
    pub transitions: Vec<TransitionView>,
    /// Pass as `after_version` for the next page; absent on the last page.
    pub next_after_version: Option<u64>,
}

/// A page of a customer's trust ledger with the balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrustLedger {
    pub customer_id: CustomerId,
    pub balance: TrustView,
    pub entries: Vec<LedgerLine>,
    /// Pass as `after_sequence` for the next page; absent on the last page.
    pub next_after_sequence: Option<u64>,
}

/// A customer's alerts.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerAlerts {
    pub customer_id: CustomerId,
    pub alerts: Vec<AlertView>,
}

/// Customers per lifecycle stage.
#[derive(Debug, Serialize, ToSchema)]
pub struct StageCounts {
    pub stages: std::collections::BTreeMap<String, u64>,
    pub total: u64,
}

/// A page's size when the query names none.
pub(crate) const DEFAULT_LIMIT: u32 = 100;

/// A customer's lifecycle stage changes, oldest first.
///
/// Role: reader.
#[utoipa::path(
    get, path = "/v1/customers/{customer_id}/lifecycle/history", tag = "customers",
    params(("customer_id" = String, Path, description = "The customer's UUID"), VersionPage),
    responses((status = 200, description = "One page of transitions", body = LifecycleHistory)),
    security(("api_key" = []))
)]
pub async fn lifecycle_history(
    State(state): State<AppState>,
    super::CustomerPath(raw_id): super::CustomerPath,
    page: Result<Query<VersionPage>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<LifecycleHistory>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let id = super::customer_id(&raw_id)?;
    let page = query(page)?;
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, 1_000);
    wait_for_own_writes(&state, &id, &[lifecycle::NAME]).await?;
    if lifecycle::get(&state.store, &id).await?.is_none() {
        known_to_the_log(&state, &id).await?;
    }
    let items =
        lifecycle::history(&state.store, &id, page.after_version.unwrap_or(0), limit).await?;
    let next = (items.len() as u32 == limit)
        .then(|| items.last().map(|t| t.version))
        .flatten();
    Ok(Json(LifecycleHistory {
        customer_id: id,
        transitions: items,
        next_after_version: next,
    }))
}

/// A customer's trust account: every deposit and withdrawal with the event and the policy
/// rule that priced it, and the balance per tier.
///
/// Role: reader.
#[utoipa::path(
    get, path = "/v1/customers/{customer_id}/trust/ledger", tag = "customers",
    params(("customer_id" = String, Path, description = "The customer's UUID"), SequencePage),
    responses((status = 200, description = "The balance and one page of the ledger", body = TrustLedger)),
    security(("api_key" = []))
)]
pub async fn trust_ledger(
    State(state): State<AppState>,
    super::CustomerPath(raw_id): super::CustomerPath,
    page: Result<Query<SequencePage>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<TrustLedger>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let id = super::customer_id(&raw_id)?;
    let page = query(page)?;
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, 1_000);
    wait_for_own_writes(&state, &id, &[trust::NAME]).await?;
    let (account, entries) =
        trust::account_page(&state.store, &id, page.after_sequence.unwrap_or(0), limit).await?;
    let account = match account {
        Some(account) => account,
        None => {
            // Not priced yet: an empty account under the configured policy.
            known_to_the_log(&state, &id).await?;
            TrustView {
                balance: 0,
                basic: 0,
                value_added: 0,
                emotional: 0,
                policy_version: state
                    .rebuild
                    .as_ref()
                    .map(|r| r.policy.version.clone())
                    .unwrap_or_default(),
            }
        }
    };
    // Pages end with a whole event, so a full page can hold more lines than `limit`.
    let next = (entries.len() as u32 >= limit)
        .then(|| entries.last().map(|e| e.stream_sequence))
        .flatten();
    Ok(Json(TrustLedger {
        customer_id: id,
        balance: account,
        entries,
        next_after_sequence: next,
    }))
}

/// A customer's churn alerts, open and resolved, oldest first.
///
/// Role: reader.
#[utoipa::path(
    get, path = "/v1/customers/{customer_id}/alerts", tag = "customers",
    params(("customer_id" = String, Path, description = "The customer's UUID")),
    responses((status = 200, description = "The customer's alerts", body = CustomerAlerts)),
    security(("api_key" = []))
)]
pub async fn customer_alerts(
    State(state): State<AppState>,
    super::CustomerPath(raw_id): super::CustomerPath,
    headers: HeaderMap,
) -> Result<Json<CustomerAlerts>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let id = super::customer_id(&raw_id)?;
    wait_for_own_writes(&state, &id, &[health::NAME]).await?;
    if health::get(&state.store, &id).await?.is_none() {
        known_to_the_log(&state, &id).await?;
    }
    let alerts = health::customer_alerts(&state.store, &id).await?;
    Ok(Json(CustomerAlerts {
        customer_id: id,
        alerts,
    }))
}

/// How many customers are in each lifecycle stage.
///
/// Role: reader.
#[utoipa::path(
    get, path = "/v1/stages", tag = "views",
    responses((status = 200, description = "Customers per stage", body = StageCounts)),
    security(("api_key" = []))
)]
pub async fn stages(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<StageCounts>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let counts = lifecycle::stage_counts(&state.store).await?;
    let total: u64 = counts.values().sum();
    Ok(Json(StageCounts {
        stages: counts,
        total,
    }))
}
