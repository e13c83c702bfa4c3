//! `POST /v1/customers/{customer_id}/commands`, and the door-independent command handling
//! that the NATS intake shares.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crm_log::{Metadata, Receipt, SubmitOptions, Submitted};
use time::OffsetDateTime;

use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::intake::{self, MAX_BODY_BYTES};
use crate::openapi::CommandBody;

/// A command as any door received it.
#[derive(Debug, Clone, Copy)]
pub struct CommandRequest<'a> {
    pub authorization: Option<&'a str>,
    pub customer_id: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub if_match: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub causation_id: Option<&'a str>,
    pub body: &'a [u8],
}

/// `If-Match: <version>` (quotes and a weak prefix are tolerated, as ETags carry them).
fn if_match(raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let v = raw.trim().trim_start_matches("W/").trim_matches('"');
    v.parse::<u64>().map(Some).map_err(|_| {
        ApiError::bad_request(
            "invalid_if_match",
            "If-Match must be a customer version number",
        )
    })
}

/// Authenticates, parses, decides and appends. The one path every door uses.
pub async fn handle(state: &AppState, req: CommandRequest<'_>) -> Result<Submitted, ApiError> {
    let principal = state
        .auth
        .authorize_value(req.authorization, Role::Publisher)?;
    handle_as(state, principal, req).await
}

/// [`handle`] for a caller already authenticated as `principal`, a publisher
/// (`req.authorization` is not looked at again).
pub(crate) async fn handle_as(
    state: &AppState,
    principal: Principal,
    req: CommandRequest<'_>,
) -> Result<Submitted, ApiError> {
    let id = super::customer_id(req.customer_id)?;
    if req.body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let parsed = intake::parse_command(req.body)?;
    let opts = SubmitOptions {
        occurred_at: parsed.occurred_at,
        now: OffsetDateTime::now_utc(),
        expected_version: if_match(req.if_match)?,
        meta: Metadata {
            actor: principal.name,
            correlation_id: intake::trace_id("X-Correlation-Id", req.correlation_id)?,
            causation_id: intake::trace_id("X-Causation-Id", req.causation_id)?,
            idempotency_key: intake::idempotency_key(req.idempotency_key)?,
        },
    };
    let submitted = state.customers.submit(id, &parsed.command, &opts).await?;
    tracing::info!(
        customer_id = %id,
        event_type = %submitted.receipt.event_type,
        version = submitted.receipt.version,
        replayed = submitted.replayed,
        "command accepted"
    );
    Ok(submitted)
}

/// 201 for a new event, 200 for an idempotent replay.
pub fn status_of(s: &Submitted) -> StatusCode {
    if s.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_header", format!("{name} must be visible ASCII"))
            })
        })
        .transpose()
}

/// Validates one command against the customer's history and appends the event it
/// becomes. `201` with the receipt for a new event; `200` with the same receipt when the
/// `Idempotency-Key` was seen before (nothing new is written). Without `If-Match`, a
/// command that meets concurrent writers is retried a bounded number of times.
///
/// Role: publisher.
#[utoipa::path(
    post, path = "/v1/customers/{customer_id}/commands", tag = "commands",
    params(
        ("customer_id" = String, Path, description = "The customer's UUID"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key produce one event and the same response, also after the server's duplicate window and restarts"),
        ("If-Match" = Option<String>, Header, description = "The customer version the command was decided against; 409 `version_conflict` if it moved"),
        ("X-Correlation-Id" = Option<String>, Header, description = "Recorded on the event"),
        ("X-Causation-Id" = Option<String>, Header, description = "Recorded on the event"),
    ),
    request_body(content = CommandBody, description = "One command (at most 64 KiB)", content_type = "application/json"),
    responses(
        (status = 201, description = "The event was appended", body = Receipt,
            headers(("ETag" = String, description = "The customer's new version"))),
        (status = 200, description = "Idempotent replay: the receipt of the first submission", body = Receipt),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(customer_id = %raw_id))]
pub async fn submit(
    State(state): State<AppState>,
    super::CustomerPath(raw_id): super::CustomerPath,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    // An anonymous caller hears 401 whatever it sent (an oversized or unreadable body
    // included), and before its body is read: a client without a key cannot hold a
    // connection open by trickling one.
    let principal = match state.auth.authorize(&headers, Role::Publisher) {
        Ok(principal) => principal,
        Err(refused) => return Ok(super::refused_unread(refused)),
    };
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::bad_request("unreadable_body", rejection.body_text())
            }
        })?;
    let submitted = handle_as(
        &state,
        principal,
        CommandRequest {
            authorization: header_str(&headers, "authorization")?,
            customer_id: &raw_id,
            idempotency_key: header_str(&headers, "idempotency-key")?,
            if_match: header_str(&headers, "if-match")?,
            correlation_id: header_str(&headers, "x-correlation-id")?,
            causation_id: header_str(&headers, "x-causation-id")?,
            body: &body,
        },
    )
    .await?;
    let etag = format!("\"{}\"", submitted.receipt.version);
    let mut response = (status_of(&submitted), Json(&submitted.receipt)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}
