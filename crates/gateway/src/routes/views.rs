//! Cross-customer views: open alerts and upcoming renewals.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use crm_projections::health::AlertView;
use crm_projections::renewals::{RenewalCursor, RenewalView};
use crm_projections::{health, renewals};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::customers::{DEFAULT_LIMIT, query};
use crate::app::AppState;
use crate::auth::Role;
use crate::error::ApiError;

/// Query of `GET /v1/alerts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// `red` or `yellow`; both when absent.
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    pub color: Option<String>,
    /// Cursor from the previous page's `next_after`.
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    pub after: Option<String>,
    /// Page size, 1..=1000.
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    #[param(default = 100)]
    pub limit: Option<u32>,
}

/// A page of open alerts.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsPage {
    pub alerts: Vec<AlertView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// Open churn alerts across customers, with reasons and the recommended action.
///
/// Role: reader.
#[utoipa::path(
    get, path = "/v1/alerts", tag = "views",
    params(AlertsQuery),
    responses((status = 200, description = "One page of open alerts", body = AlertsPage)),
    security(("api_key" = []))
)]
pub async fn alerts(
    State(state): State<AppState>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<AlertsPage>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let q = query(q)?;
    if let Some(c) = &q.color
        && c != "red"
        && c != "yellow"
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "color must be red or yellow",
        ));
    }
    let after = match &q.after {
        None => None,
        Some(cursor) => Some(
            cursor
                .split_once('/')
                .map(|(c, a)| (c.to_owned(), a.to_owned()))
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_query", "after must be a cursor from next_after")
                })?,
        ),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, 1_000);
    let items = health::open_alerts(&state.store, q.color.as_deref(), after, limit).await?;
    let next = (items.len() as u32 == limit)
        .then(|| {
            items
                .last()
                .map(|a| format!("{}/{}", a.customer_id, a.alert_id))
        })
        .flatten();
    Ok(Json(AlertsPage {
        alerts: items,
        next_after: next,
    }))
}

/// Query of `GET /v1/renewals`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RenewalsQuery {
    /// Contracts ending within this many days (at most 3650).
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    #[param(default = 90)]
    pub within_days: Option<u32>,
    /// The day to count from (`YYYY-MM-DD`); today when absent.
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    pub as_of: Option<String>,
    /// Also list contracts that ended within the window before `as_of` without renewal
    /// (status `lapsed`, negative `days_left`).
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    #[param(default = true)]
    pub include_lapsed: Option<bool>,
    /// Continue after this contract: the `next_after` of the previous page.
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    pub after: Option<String>,
    /// Page size, 1..=1000.
    #[serde(default, deserialize_with = "crate::routes::empty_is_absent")]
    #[param(default = 100)]
    pub limit: Option<u32>,
}

/// A page of upcoming renewals.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenewalsPage {
    pub as_of: String,
    pub within_days: i64,
    pub renewals: Vec<RenewalView>,
    /// Pass as `after` (with the same `as_of`) for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// The renewals window when the query names none.
const DEFAULT_WITHIN_DAYS: u32 = 90;

/// Contracts ending within `within_days` after `as_of`, and those that lapsed within
/// `within_days` before it (unless `include_lapsed=false`), by end date.
///
/// Role: reader.
#[utoipa::path(
    get, path = "/v1/renewals", tag = "views",
    params(RenewalsQuery),
    responses((status = 200, description = "One page of renewals", body = RenewalsPage)),
    security(("api_key" = []))
)]
pub async fn renewals(
    State(state): State<AppState>,
    q: Result<Query<RenewalsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<RenewalsPage>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let q = query(q)?;
    let today = match &q.as_of {
        None => OffsetDateTime::now_utc().date(),
        Some(s) => time::Date::parse(s, &time::format_description::well_known::Iso8601::DATE)
            .map_err(|_| ApiError::bad_request("invalid_query", "as_of must be YYYY-MM-DD"))?,
    };
    let within = i64::from(q.within_days.unwrap_or(DEFAULT_WITHIN_DAYS).min(3_650));
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, 1_000);
    let after = match q.after.as_deref() {
        None => None,
        Some(raw) => Some(RenewalCursor::parse(raw).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "after must be the next_after of a previous page",
            )
        })?),
    };
    let items = renewals::upcoming(
        &state.store,
        today,
        within,
        q.include_lapsed.unwrap_or(true),
        after.as_ref(),
        limit,
    )
    .await?;
    let next = (items.len() as u32 == limit)
        .then(|| items.last().map(|r| RenewalCursor::after(r).to_string()))
        .flatten();
    Ok(Json(RenewalsPage {
        as_of: today.to_string(),
        within_days: within,
        renewals: items,
        next_after: next,
    }))
}
