//! `POST /v1/customers/{customer_id}/commands`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crm_log::{Metadata, SubmitOptions};
use time::OffsetDateTime;

use crate::app::AppState;
use crate::auth::Role;
use crate::error::ApiError;
use crate::intake::{self, MAX_BODY_BYTES};

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

/// `If-Match: <version>` (quotes and a weak prefix are tolerated, as ETags carry them).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(raw) = header_str(headers, "if-match")? else {
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

/// Accepts one command and answers with the event it became.
#[tracing::instrument(skip_all, fields(customer_id = %raw_id))]
pub async fn submit(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = state.auth.authorize(&headers, Role::Publisher)?;
    let id = super::customer_id(&raw_id)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            }
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })?;
    let parsed = intake::parse_command(&body)?;
    let opts = SubmitOptions {
        occurred_at: parsed.occurred_at,
        now: OffsetDateTime::now_utc(),
        expected_version: if_match(&headers)?,
        meta: Metadata {
            actor: principal.name,
            correlation_id: header_str(&headers, "x-correlation-id")?.map(str::to_owned),
            causation_id: header_str(&headers, "x-causation-id")?.map(str::to_owned),
            idempotency_key: intake::idempotency_key(header_str(&headers, "idempotency-key")?)?,
        },
    };
    let submitted = state.customers.submit(id, &parsed.command, &opts).await?;
    let status = if submitted.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let etag = format!("\"{}\"", submitted.receipt.version);
    let mut response = (status, Json(&submitted.receipt)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    tracing::info!(
        event_type = %submitted.receipt.event_type,
        version = submitted.receipt.version,
        replayed = submitted.replayed,
        "command accepted"
    );
    Ok(response)
}
