//! API errors and their one mapping to HTTP.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crm_domain::DomainError;
use crm_log::{LogError, SubmitError};
use crm_projections::ProjectionError;
use serde_json::json;

/// Everything a handler can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input: `code` is stable, `message` is for humans.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("missing or invalid API key")]
    Unauthenticated,
    #[error("the key's roles do not allow this call (needs {needed})")]
    Forbidden { needed: &'static str },
    #[error("{what} not found")]
    NotFound { code: &'static str, what: String },
    #[error("this route does not serve that method")]
    MethodNotAllowed,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// Too many commands in flight on this door; this one was not taken.
    #[error(
        "this gateway has {in_flight} commands in flight and took none more: nothing was written, retry later"
    )]
    Overloaded { in_flight: usize },
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error(transparent)]
    Log(#[from] LogError),
}

impl ApiError {
    /// A 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// Status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::Submit(e) => match e {
                SubmitError::Rejected(d) => (StatusCode::UNPROCESSABLE_ENTITY, domain_code(d)),
                SubmitError::VersionConflict { .. } => (StatusCode::CONFLICT, "version_conflict"),
                SubmitError::Contention { .. } => (StatusCode::CONFLICT, "concurrent_modification"),
                SubmitError::IdempotencyKeyReused { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
                }
                SubmitError::Log(l) => log_status(l),
            },
            ApiError::Log(l) => log_status(l),
            ApiError::Projection(ProjectionError::Log(l)) => log_status(l),
            ApiError::Projection(ProjectionError::RebuildRunning { .. }) => {
                (StatusCode::CONFLICT, "rebuild_running")
            }
            ApiError::Projection(e) if e.is_unavailable() => {
                (StatusCode::SERVICE_UNAVAILABLE, "read_store_unavailable")
            }
            ApiError::Projection(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

fn domain_code(d: &DomainError) -> &'static str {
    d.code()
}

fn log_status(e: &LogError) -> (StatusCode, &'static str) {
    match e {
        LogError::Conflict { .. } => (StatusCode::CONFLICT, "concurrent_modification"),
        LogError::Connect { .. } | LogError::Nats(_) | LogError::Server(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "log_unavailable")
        }
        LogError::ServerTooOld { .. }
        | LogError::StreamMisconfigured { .. }
        | LogError::StreamMissing { .. }
        | LogError::Decode { .. }
        | LogError::Immutable(_)
        | LogError::Encode(_)
        | LogError::PartialAppend { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
    }
}

impl ApiError {
    /// Status and the JSON error body, for every door. Server errors are logged here with
    /// their cause chain; clients get only the code and a generic message.
    pub fn into_status_and_body(self) -> (StatusCode, serde_json::Value) {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, ?self, code, "request failed");
        }
        self.public_body()
    }

    /// Status and the JSON body a client sees, without logging (the OpenAPI examples are
    /// made with it).
    pub fn public_body(&self) -> (StatusCode, serde_json::Value) {
        let (status, code) = self.status_and_code();
        let message = match (status, code) {
            (StatusCode::SERVICE_UNAVAILABLE, "read_store_unavailable") => {
                "the read store is unavailable; retry later".to_owned()
            }
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded") => self.to_string(),
            (StatusCode::SERVICE_UNAVAILABLE, _) => {
                "the event log is unavailable; retry later".to_owned()
            }
            (s, _) if s.is_server_error() => "internal error".to_owned(),
            _ => self.to_string(),
        };
        (
            status,
            json!({ "error": { "code": code, "message": message } }),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.into_status_and_body();
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read store that cannot be reached answers 503 with its own code, so a client knows
    /// to retry; the body says nothing of the cause.
    #[tokio::test]
    async fn an_unreachable_read_store_is_503_read_store_unavailable() -> Result<(), String> {
        let path = std::env::temp_dir().join(format!("crm-gw-{}.sqlite", uuid::Uuid::new_v4()));
        let store = crm_projections::ReadStore::open_file(&path)
            .await
            .map_err(|e| e.to_string())?;
        store.pool().close().await;
        let err = match store.ping().await {
            Ok(()) => return Err("a closed store answered".into()),
            Err(e) => ApiError::from(e),
        };
        let (status, body) = err.public_body();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "read_store_unavailable");
        assert_eq!(
            body["error"]["message"],
            "the read store is unavailable; retry later"
        );
        Ok(())
    }
}
