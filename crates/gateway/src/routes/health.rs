//! Health, readiness, the OpenAPI document and the JSON 404.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::ApiError;

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Healthz {
    /// Always `ok`.
    pub status: String,
}

/// Readiness of each dependency: `ok` or `unavailable`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readyz {
    pub nats: String,
    pub read_store: String,
}

/// The process is up.
#[utoipa::path(
    get, path = "/healthz", tag = "system",
    responses((status = 200, description = "Up", body = Healthz))
)]
pub async fn healthz() -> Json<Healthz> {
    Json(Healthz {
        status: "ok".into(),
    })
}

/// NATS and the read store answer.
#[utoipa::path(
    get, path = "/readyz", tag = "system",
    responses(
        (status = 200, description = "Ready", body = Readyz),
        (status = 503, description = "A dependency is unavailable", body = Readyz),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let nats = state.customers.log().ping(Duration::from_secs(2)).await;
    let store = state.store.ping().await;
    let word = |ok: bool| if ok { "ok" } else { "unavailable" }.to_owned();
    let body = Readyz {
        nats: word(nats.is_ok()),
        read_store: word(store.is_ok()),
    };
    let status = if nats.is_ok() && store.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// This document, generated from the code at start-up.
#[utoipa::path(
    get, path = "/openapi.json", tag = "system",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
        .into_response()
}

/// A known route with a method it does not serve.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Any unknown route.
pub async fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "not_found",
        what: "route".into(),
    }
}
