//! Cross-customer views: open alerts and upcoming renewals.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use crm_projections::{health, renewals};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::customers::{default_limit, query};
use crate::app::AppState;
use crate::auth::Role;
use crate::error::ApiError;

/// Query of `GET /v1/alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// `red` or `yellow`; both when absent.
    pub color: Option<String>,
    /// Cursor from the previous page's `next_after`.
    pub after: Option<String>,
    #[serde(default = "default_limit")]
    pub limit: u32,
}

/// `GET /v1/alerts`: open alerts with reasons and the recommended action.
pub async fn alerts(
    State(state): State<AppState>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
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
    let limit = q.limit.clamp(1, 1_000);
    let items = health::open_alerts(&state.store, q.color.as_deref(), after, limit).await?;
    let next = (items.len() as u32 == limit)
        .then(|| {
            items
                .last()
                .map(|a| format!("{}/{}", a.customer_id, a.alert_id))
        })
        .flatten();
    Ok(Json(json!({ "alerts": items, "next_after": next })))
}

/// Query of `GET /v1/renewals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewalsQuery {
    #[serde(default = "default_within")]
    pub within_days: u32,
    /// The day to count from (`YYYY-MM-DD`); today when absent.
    pub as_of: Option<String>,
    #[serde(default)]
    pub offset: u32,
    #[serde(default = "default_limit")]
    pub limit: u32,
}

fn default_within() -> u32 {
    90
}

/// `GET /v1/renewals`: contracts ending within the window, soonest first.
pub async fn renewals(
    State(state): State<AppState>,
    q: Result<Query<RenewalsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.authorize(&headers, Role::Reader)?;
    let q = query(q)?;
    let today = match &q.as_of {
        None => OffsetDateTime::now_utc().date(),
        Some(s) => time::Date::parse(s, &time::format_description::well_known::Iso8601::DATE)
            .map_err(|_| ApiError::bad_request("invalid_query", "as_of must be YYYY-MM-DD"))?,
    };
    let within = i64::from(q.within_days.min(3_650));
    let limit = q.limit.clamp(1, 1_000);
    let items = renewals::upcoming(&state.store, today, within, q.offset, limit).await?;
    let next = (items.len() as u32 == limit).then_some(q.offset + limit);
    Ok(Json(
        json!({ "as_of": today.to_string(), "within_days": within, "renewals": items, "next_offset": next }),
    ))
}
