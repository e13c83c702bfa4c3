//! Router, shared state and the server loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use crm_log::Customers;
use crm_projections::ReadStore;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// The policy and batch size a blue-green rebuild uses (into the state's read store).
#[derive(Debug, Clone)]
pub struct RebuildContext {
    pub policy: Arc<crm_domain::policy::Policy>,
    pub batch_size: usize,
}

/// Every route with its handler's `#[utoipa::path]`: the router and `/openapi.json` are
/// both made from this, so a route cannot go undocumented.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::openapi))
        .routes(routes!(admin::metrics))
        .routes(routes!(admin::projections))
        .routes(routes!(admin::rebuild))
        .routes(routes!(commands::submit))
        .routes(routes!(customers::get_customer))
        .routes(routes!(customers::lifecycle_history))
        .routes(routes!(customers::trust_ledger))
        .routes(routes!(customers::customer_alerts))
        .routes(routes!(customers::stages))
        .routes(routes!(views::alerts))
        .routes(routes!(views::renewals))
        .routes(routes!(audit::events))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::list_checkpoints, audit::create_checkpoint))
}

/// The HTTP router.
pub fn router(state: AppState) -> Router {
    let (routes, _) = api_routes().split_for_parts();
    routes
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// How long a stopping gateway waits for requests in flight (an audit export streaming
/// the whole log, a client that stopped reading) before it stops waiting for them and
/// exits (the connections end with the process).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown` is cancelled, then drains in-flight requests for at most
/// [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Responses are written whole; without TCP_NODELAY a response written while the
    // previous one is still unacknowledged can wait for the client's delayed ACK (Nagle).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY on an accepted connection");
        }
    });
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    within_grace("HTTP", server, &shutdown, Ok(())).await
}

/// Runs a server that drains its requests once `shutdown` is cancelled, but stops waiting
/// for them [`SHUTDOWN_GRACE`] after it (answering `cut_off`): a request that never ends (a
/// stalled upload, a stream nobody reads) must not keep the process from stopping. Their
/// connection tasks end when the runtime does.
pub async fn within_grace<T>(
    door: &str,
    serving: impl std::future::Future<Output = T>,
    shutdown: &CancellationToken,
    cut_off: T,
) -> T {
    tokio::select! {
        served = serving => served,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(
                door,
                grace = ?SHUTDOWN_GRACE,
                "requests still in flight at shutdown were cut off"
            );
            cut_off
        }
    }
}
