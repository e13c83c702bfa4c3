//! Auditors' doors: the event log by filter (JSON pages or NDJSON streams), chain
//! verification, and signed checkpoints of the chain heads.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crm_domain::CustomerId;
use crm_log::StoredEvent;
use crm_log::audit::{self, SignedHeads};
use crm_projections::audit::{self as index, AuditFilter};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::customers::query;
use crate::app::AppState;
use crate::auth::Role;
use crate::error::ApiError;

/// Query of `GET /v1/audit/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub customer_id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub actor: Option<String>,
    /// Business time (`occurred_at`) from, RFC 3339.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Recording time from, RFC 3339.
    pub recorded_from: Option<String>,
    pub recorded_to: Option<String>,
    #[serde(default)]
    pub after_sequence: u64,
    pub limit: Option<u32>,
}

fn time_param(name: &str, v: &Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    v.as_deref()
        .map(|s| {
            OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("{name} must be an RFC 3339 timestamp"),
                )
            })
        })
        .transpose()
}

impl EventsQuery {
    fn filter(&self) -> Result<AuditFilter, ApiError> {
        if let Some(c) = &self.customer_id {
            CustomerId::parse(c).map_err(|_| {
                ApiError::bad_request("invalid_query", "customer_id must be a UUID")
            })?;
        }
        Ok(AuditFilter {
            customer_id: self.customer_id.clone(),
            event_type: self.event_type.clone(),
            actor: self.actor.clone(),
            from: time_param("from", &self.from)?,
            to: time_param("to", &self.to)?,
            recorded_from: time_param("recorded_from", &self.recorded_from)?,
            recorded_to: time_param("recorded_to", &self.recorded_to)?,
        })
    }
}

/// The JSON of one event in audit results: the envelope as stored plus its sequence.
pub fn event_json(e: &StoredEvent) -> Value {
    let mut v = serde_json::to_value(&e.envelope).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("stream_sequence".into(), json!(e.sequence));
    }
    v
}

/// One page of matching events (see [`index::page`]).
pub async fn page(
    state: &AppState,
    filter: &AuditFilter,
    after: u64,
    limit: u32,
) -> Result<Vec<StoredEvent>, ApiError> {
    Ok(index::page(&state.store, state.customers.log(), filter, after, limit).await?)
}

/// `GET /v1/audit/events`.
pub async fn events(
    State(state): State<AppState>,
    q: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.authorize(&headers, Role::Auditor)?;
    let q = query(q)?;
    let filter = q.filter()?;
    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    if !ndjson {
        let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
        let items = page(&state, &filter, q.after_sequence, limit).await?;
        let next = (items.len() as u32 == limit)
            .then(|| items.last().map(|e| e.sequence))
            .flatten();
        let events: Vec<Value> = items.iter().map(event_json).collect();
        return Ok(Json(json!({ "events": events, "next_after_sequence": next })).into_response());
    }
    // NDJSON: stream page after page, so a large result never sits in memory.
    let total = q.limit.map(u64::from);
    let stream = futures::stream::unfold(
        (state, filter, q.after_sequence, 0u64, false),
        move |(state, filter, after, sent, done)| async move {
            if done || total.is_some_and(|t| sent >= t) {
                return None;
            }
            let want = total.map_or(500, |t| (t - sent).min(500)) as u32;
            match page(&state, &filter, after, want).await {
                Ok(items) if items.is_empty() => None,
                Ok(items) => {
                    let last = items.last().map_or(after, |e| e.sequence);
                    let short = (items.len() as u32) < want;
                    let n = items.len() as u64;
                    let mut buf = String::new();
                    for e in &items {
                        buf.push_str(&event_json(e).to_string());
                        buf.push('\n');
                    }
                    Some((
                        Ok::<_, std::io::Error>(buf),
                        (state, filter, last, sent + n, short),
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit stream failed");
                    Some((
                        Err(std::io::Error::other(e.to_string())),
                        (state, filter, after, sent, true),
                    ))
                }
            }
        },
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Query of `GET /v1/audit/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    pub customer_id: Option<String>,
}

/// `GET /v1/audit/verify`: recomputes hash chains (one customer or all) and compares the
/// chain heads with every signed checkpoint.
pub async fn verify(
    State(state): State<AppState>,
    q: Result<Query<VerifyQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<audit::Report>, ApiError> {
    state.auth.authorize(&headers, Role::Auditor)?;
    let q = query(q)?;
    let log = state.customers.log();
    let report = match q.customer_id {
        Some(c) => {
            let id = CustomerId::parse(&c).map_err(|_| {
                ApiError::bad_request("invalid_query", "customer_id must be a UUID")
            })?;
            audit::verify_customer(log, &id).await?
        }
        None => {
            let checkpoints: Vec<SignedHeads> = index::checkpoints(&state.store)
                .await?
                .iter()
                .map(SignedHeads::from)
                .collect();
            let key = state.audit_key.as_deref().map(Vec::as_slice);
            audit::verify_all(log, &checkpoints, key, |_, _| {}).await?
        }
    };
    Ok(Json(report))
}

/// `POST /v1/audit/checkpoints`: signs the current chain heads.
pub async fn create_checkpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.authorize(&headers, Role::Auditor)?;
    let Some(key) = state.audit_key.clone() else {
        return Err(ApiError::bad_request(
            "audit_key_not_configured",
            "no audit signing key is configured ([audit] signing_key)",
        ));
    };
    match index::create_checkpoint(&state.store, &key).await? {
        Some(c) => Ok((StatusCode::CREATED, Json(c)).into_response()),
        None => Err(ApiError::bad_request(
            "nothing_to_checkpoint",
            "the audit index is empty",
        )),
    }
}

/// `GET /v1/audit/checkpoints`.
pub async fn list_checkpoints(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.authorize(&headers, Role::Auditor)?;
    let all = index::checkpoints(&state.store).await?;
    Ok(Json(json!({ "checkpoints": all })))
}
