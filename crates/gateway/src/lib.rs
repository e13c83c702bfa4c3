//! The gateway: command intake and query APIs over HTTP.
//!
//! - [`intake`] turns a JSON body into a validated [`Command`](crm_domain::Command) with
//!   stable error codes; every door (HTTP today, NATS and gRPC later) shares it.
//! - [`auth`] checks bearer API keys (stored as SHA-256 hashes) and roles.
//! - [`error`] is the one place where errors become HTTP status codes and JSON bodies.
//! - [`nats_intake`] serves the same commands as NATS requests on `crm.commands.<type>`.
//! - [`routes`] holds one module per resource; [`app`] wires them into a router.
//! - [`openapi`] generates `/openapi.json` from the router, the handlers' annotations and
//!   the wire types.

pub mod app;
pub mod auth;
pub mod error;
pub mod intake;
pub mod nats_intake;
pub mod openapi;
pub mod routes;

pub use app::{
    AppState, GatewayConfig, RebuildContext, SHUTDOWN_GRACE, router, serve, within_grace,
};
pub use auth::{ApiKeyConfig, Auth, Role};
pub use error::ApiError;
