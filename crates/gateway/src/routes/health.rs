//! Health, readiness, the OpenAPI document and the JSON 404.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: NATS and the read store answer.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let nats = state.customers.log().ping(Duration::from_secs(2)).await;
    let store = state.store.ping().await;
    let body = json!({
        "nats": if nats.is_ok() { "ok" } else { "unavailable" },
        "read_store": if store.is_ok() { "ok" } else { "unavailable" },
    });
    let status = if nats.is_ok() && store.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
        .into_response()
}

/// Any unknown route.
pub async fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "not_found",
        what: "route".into(),
    }
}

#[cfg(test)]
mod tests {
    /// Every route the router serves is documented.
    #[test]
    fn openapi_documents_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).expect("valid JSON");
        for path in [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/v1/customers/{customer_id}/commands",
            "/v1/customers/{customer_id}",
            "/v1/customers/{customer_id}/lifecycle/history",
            "/v1/stages",
            "/v1/customers/{customer_id}/trust/ledger",
            "/v1/customers/{customer_id}/alerts",
            "/v1/alerts",
            "/v1/renewals",
            "/metrics",
            "/v1/admin/projections",
            "/v1/audit/events",
            "/v1/audit/verify",
            "/v1/audit/checkpoints",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} undocumented");
        }
    }
}
