//! Auditors' doors: the event log by filter (JSON pages or NDJSON streams), chain
//! verification, and signed checkpoints of the chain heads.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crm_domain::CustomerId;
use crm_log::audit::{self, SignedHeads};
use crm_log::{Envelope, StoredEvent};
use crm_projections::audit::{self as index, AuditFilter, ChainCheckpoint};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use super::customers::query;
use crate::app::AppState;
use crate::auth::Role;
use crate::error::ApiError;
use crate::routes::empty_is_absent;

/// Query of `GET /v1/audit/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// One customer's events (UUID).
    #[serde(default, deserialize_with = "empty_is_absent")]
    pub customer_id: Option<String>,
    /// Event type, e.g. `contract_signed`.
    #[serde(rename = "type", default, deserialize_with = "empty_is_absent")]
    pub event_type: Option<String>,
    /// The principal that sent the command.
    #[serde(default, deserialize_with = "empty_is_absent")]
    pub actor: Option<String>,
    /// Business time (`occurred_at`) from, RFC 3339, inclusive.
    #[serde(default, deserialize_with = "empty_is_absent")]
    pub from: Option<String>,
    /// Business time up to, RFC 3339, inclusive.
    #[serde(default, deserialize_with = "empty_is_absent")]
    pub to: Option<String>,
    /// Recording time from, RFC 3339, inclusive.
    #[serde(default, deserialize_with = "empty_is_absent")]
    pub recorded_from: Option<String>,
    /// Recording time up to, RFC 3339, inclusive.
    #[serde(default, deserialize_with = "empty_is_absent")]
    pub recorded_to: Option<String>,
    /// Return events after this stream sequence.
    #[serde(default, deserialize_with = "empty_is_absent")]
    pub after_sequence: Option<u64>,
    /// Page size, 1..=1000 (default 100); with NDJSON, the total to stream (all when absent
    /// or 0, as over gRPC).
    #[serde(default, deserialize_with = "empty_is_absent")]
    pub limit: Option<u32>,
}

/// The `customer_id` parameter of an audit query (every door answers a bad one alike).
pub fn customer_param(raw: &str) -> Result<CustomerId, ApiError> {
    CustomerId::parse(raw)
        .map_err(|_| ApiError::bad_request("invalid_query", "customer_id must be a UUID"))
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
            customer_param(c)?;
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

/// One event in audit results: the envelope exactly as stored, plus its stream sequence.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent<'a> {
    pub stream_sequence: u64,
    #[serde(flatten)]
    pub envelope: &'a Envelope,
}

impl<'a> From<&'a StoredEvent> for AuditEvent<'a> {
    fn from(e: &'a StoredEvent) -> Self {
        Self {
            stream_sequence: e.sequence,
            envelope: &e.envelope,
        }
    }
}

/// A page of audit results.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage<'a> {
    pub events: Vec<AuditEvent<'a>>,
    /// Pass as `after_sequence` for the next page; absent on the last page.
    pub next_after_sequence: Option<u64>,
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

/// Events from the log by customer, type, actor and business or recording time, in stream
/// order. The audit index finds them; the events themselves are read from the log.
/// `Accept: application/x-ndjson` streams every match, one event per line.
///
/// Role: auditor.
#[utoipa::path(
    get, path = "/v1/audit/events", tag = "audit",
    params(EventsQuery),
    responses((status = 200, description = "A page of events (JSON), or every match (NDJSON)",
        content(
            (AuditPage<'_> = "application/json"),
            (AuditEvent<'_> = "application/x-ndjson"),
        ))),
    security(("api_key" = []))
)]
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
        let limit = q
            .limit
            .unwrap_or(super::customers::DEFAULT_LIMIT)
            .clamp(1, 1_000);
        let items = page(&state, &filter, q.after_sequence.unwrap_or(0), limit).await?;
        let next = (items.len() as u32 == limit)
            .then(|| items.last().map(|e| e.sequence))
            .flatten();
        let events = items.iter().map(AuditEvent::from).collect();
        return Ok(Json(AuditPage {
            events,
            next_after_sequence: next,
        })
        .into_response());
    }
    // NDJSON: stream page after page, so a large result never sits in memory. No limit,
    // or 0, streams every match (as over gRPC, whose 0 is every match).
    let total = q.limit.filter(|&l| l > 0).map(u64::from);
    let want = move |sent: u64| total.map_or(500, |t| (t - sent).min(500)) as u32;
    let after = q.after_sequence.unwrap_or(0);
    // The first page is read before the status is sent: a read store or log that is
    // down answers 503 with its error code, as the JSON form does, instead of a 200
    // whose body breaks off. (A failure after it can only cut the stream short.)
    let first = page(&state, &filter, after, want(0)).await?;
    let stream = futures::stream::unfold(
        (state, filter, after, 0u64, false, Some(first)),
        move |(state, filter, after, sent, done, fetched)| async move {
            if done || total.is_some_and(|t| sent >= t) {
                return None;
            }
            let want = want(sent);
            let items = match fetched {
                Some(items) => Ok(items),
                None => page(&state, &filter, after, want).await,
            };
            match items {
                Ok(items) if items.is_empty() => None,
                Ok(items) => {
                    let last = items.last().map_or(after, |e| e.sequence);
                    let short = (items.len() as u32) < want;
                    let n = items.len() as u64;
                    let mut buf = String::new();
                    for e in &items {
                        let line = serde_json::to_string(&AuditEvent::from(e))
                            .map_err(std::io::Error::other);
                        match line {
                            Ok(line) => buf.push_str(&line),
                            Err(e) => {
                                return Some((Err(e), (state, filter, after, sent, true, None)));
                            }
                        }
                        buf.push('\n');
                    }
                    Some((
                        Ok::<_, std::io::Error>(buf),
                        (state, filter, last, sent + n, short, None),
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit stream failed");
                    Some((
                        Err(std::io::Error::other(e.to_string())),
                        (state, filter, after, sent, true, None),
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
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// Verify one customer's chain only (UUID); the whole log when absent or empty.
    #[serde(default, deserialize_with = "empty_is_absent")]
    pub customer_id: Option<String>,
}

/// Recomputes the hash chains (one customer or all), checks per-customer versions for
/// gaps, and compares the chain heads with every signed checkpoint; reports the first
/// break.
///
/// Role: auditor.
#[utoipa::path(
    get, path = "/v1/audit/verify", tag = "audit",
    params(VerifyQuery),
    responses((status = 200, description = "The verification report (`ok` false names the break)", body = audit::Report)),
    security(("api_key" = []))
)]
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
            let id = customer_param(&c)?;
            let report = audit::verify_customer(log, &id).await?;
            // No events is no chain to vouch for: an unknown customer, not a verified one.
            if report.events_checked == 0 {
                return Err(crate::routes::customers::not_found(&id));
            }
            report
        }
        None => {
            let checkpoints: Vec<SignedHeads> = index::checkpoints(&state.store)
                .await?
                .iter()
                .map(SignedHeads::from)
                .collect();
            let key = state.audit_key.as_deref().map(Vec::as_slice);
            let mut report = audit::verify_all(log, &checkpoints, key, |_, _| {}).await?;
            index::check_index_against_head(&state.store, log, &mut report).await?;
            report
        }
    };
    Ok(Json(report))
}

/// Signs (HMAC-SHA-256) the digest of every customer's chain head at the current log
/// position and stores it, so a later rewrite of the stream is detected.
///
/// Role: auditor.
#[utoipa::path(
    post, path = "/v1/audit/checkpoints", tag = "audit",
    responses((status = 201, description = "The new checkpoint", body = ChainCheckpoint)),
    security(("api_key" = []))
)]
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
    match index::create_checkpoint(&state.store, state.customers.log(), &key).await? {
        Some(c) => Ok((StatusCode::CREATED, Json(c)).into_response()),
        None => Err(ApiError::bad_request(
            "nothing_to_checkpoint",
            "the audit index is empty",
        )),
    }
}

/// Stored checkpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checkpoints {
    pub checkpoints: Vec<ChainCheckpoint>,
}

/// Every signed checkpoint of the chain heads, oldest first.
///
/// Role: auditor.
#[utoipa::path(
    get, path = "/v1/audit/checkpoints", tag = "audit",
    responses((status = 200, description = "Every checkpoint", body = Checkpoints)),
    security(("api_key" = []))
)]
pub async fn list_checkpoints(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Checkpoints>, ApiError> {
    state.auth.authorize(&headers, Role::Auditor)?;
    let checkpoints = index::checkpoints(&state.store).await?;
    Ok(Json(Checkpoints { checkpoints }))
}
