//! Starting the parts from configuration.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crm_gateway::{AppState, Auth};
use crm_log::{Customers, EventLog};
use crm_projections::lifecycle::LifecycleProjection;
use crm_projections::{Projector, ProjectorOptions, ReadStore};
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The log, the repository over it, and the read store.
#[derive(Debug, Clone)]
pub struct Parts {
    pub log: EventLog,
    pub customers: Arc<Customers>,
    pub store: ReadStore,
}

/// Connects to NATS, opens the stream and the read store.
pub async fn open(cfg: &Config) -> anyhow::Result<Parts> {
    let client = crm_log::connect(&cfg.nats).await?;
    let log = EventLog::open(client, &cfg.stream).await?;
    let customers = Arc::new(Customers::new(
        log.clone(),
        cfg.gateway.cache_capacity,
        cfg.gateway.max_attempts,
    ));
    let store = ReadStore::open_file(&cfg.store.sqlite_path)
        .await
        .with_context(|| format!("opening read store {}", cfg.store.sqlite_path.display()))?;
    Ok(Parts {
        log,
        customers,
        store,
    })
}

/// The gateway's shared state.
pub fn app_state(cfg: &Config, parts: &Parts) -> anyhow::Result<AppState> {
    let auth = Auth::new(&cfg.gateway.api_keys).map_err(anyhow::Error::msg)?;
    if cfg.gateway.api_keys.is_empty() {
        tracing::warn!("no API keys configured: every call will be refused with 401");
    }
    Ok(AppState {
        customers: parts.customers.clone(),
        store: parts.store.clone(),
        auth: Arc::new(auth),
        read_wait: Duration::from_millis(cfg.gateway.read_your_writes_ms),
    })
}

/// Spawns every projector into `tasks`.
pub fn spawn_projectors(
    cfg: &Config,
    parts: &Parts,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) {
    let projector = Projector::new(
        LifecycleProjection,
        parts.store.clone(),
        parts.log.clone(),
        ProjectorOptions {
            batch_size: cfg.projector.batch_size,
            ..ProjectorOptions::default()
        },
    );
    let token = shutdown.clone();
    tasks.spawn(async move {
        projector.run(token).await?;
        Ok(())
    });
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Waits for a signal, cancels `shutdown`, then waits for every task to drain.
pub async fn supervise(
    mut tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut result = Ok(());
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("stopping"),
        Some(done) = tasks.join_next() => {
            result = flatten(done);
            if result.is_err() {
                tracing::error!("a service stopped; shutting down the others");
            }
        }
    }
    shutdown.cancel();
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = flatten(done) {
            tracing::error!(error = %e, "service failed while stopping");
        }
    }
    result
}

fn flatten(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    r.map_err(anyhow::Error::from).and_then(|inner| inner)
}

/// `crm gateway`.
pub async fn run_gateway(cfg: Config) -> anyhow::Result<()> {
    let parts = open(&cfg).await?;
    let state = app_state(&cfg, &parts)?;
    let listener = TcpListener::bind(cfg.gateway.http_addr)
        .await
        .with_context(|| format!("binding {}", cfg.gateway.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let token = shutdown.clone();
    tasks.spawn(async move {
        crm_gateway::serve(listener, state, token).await?;
        Ok(())
    });
    supervise(tasks, shutdown).await
}

/// `crm project <name>`.
pub async fn run_projector(cfg: Config, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(name == "lifecycle", "unknown projection {name:?}");
    let parts = open(&cfg).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    spawn_projectors(&cfg, &parts, &mut tasks, &shutdown);
    tracing::info!(projection = name, "projector running");
    supervise(tasks, shutdown).await
}

/// A new random API key.
pub fn new_api_key() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("crm_{}", hex::encode(bytes))
}
