//! Router, shared state and the server loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use crm_log::Customers;
use crm_projections::ReadStore;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::auth::{ApiKeyConfig, Auth};
use crate::intake::MAX_BODY_BYTES;
use crate::routes::{admin, audit, commands, customers, health, views};

/// Gateway settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub http_addr: SocketAddr,
    /// Address of the gRPC door.
    pub grpc_addr: SocketAddr,
    pub api_keys: Vec<ApiKeyConfig>,
    /// How long a read waits for the views to reach this process's own latest write to
    /// the customer (read-your-writes), in milliseconds.
    pub read_your_writes_ms: u64,
    /// Customers kept in the aggregate cache.
    pub cache_capacity: usize,
    /// Attempts for a command without `If-Match` that meets concurrent writers.
    pub max_attempts: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            api_keys: Vec::new(),
            read_your_writes_ms: 2_000,
            cache_capacity: crm_log::repository::DEFAULT_CACHE_CAPACITY,
            max_attempts: crm_log::repository::DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub customers: Arc<Customers>,
    pub store: ReadStore,
    pub auth: Arc<Auth>,
    pub read_wait: Duration,
    /// Key for signing chain-head checkpoints (HMAC-SHA-256).
    pub audit_key: Option<Arc<Vec<u8>>>,
    /// What a rebuild requested over HTTP needs.
    pub rebuild: Option<RebuildContext>,
}

/// The policy and files a blue-green rebuild uses.
#[derive(Debug, Clone)]
pub struct RebuildContext {
    pub policy: Arc<crm_domain::policy::Policy>,
    pub live_file: std::path::PathBuf,
    pub batch_size: usize,
}

/// The HTTP router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(health::openapi))
        .route("/metrics", get(admin::metrics))
        .route("/v1/admin/projections", get(admin::projections))
        .route("/v1/admin/projections/{name}/rebuild", post(admin::rebuild))
        .route(
            "/v1/customers/{customer_id}/commands",
            post(commands::submit),
        )
        .route("/v1/customers/{customer_id}", get(customers::get_customer))
        .route(
            "/v1/customers/{customer_id}/lifecycle/history",
            get(customers::lifecycle_history),
        )
        .route(
            "/v1/customers/{customer_id}/trust/ledger",
            get(customers::trust_ledger),
        )
        .route(
            "/v1/customers/{customer_id}/alerts",
            get(customers::customer_alerts),
        )
        .route("/v1/stages", get(customers::stages))
        .route("/v1/alerts", get(views::alerts))
        .route("/v1/renewals", get(views::renewals))
        .route("/v1/audit/events", get(audit::events))
        .route("/v1/audit/verify", get(audit::verify))
        .route(
            "/v1/audit/checkpoints",
            get(audit::list_checkpoints).post(audit::create_checkpoint),
        )
        .fallback(health::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
