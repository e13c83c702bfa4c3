//! Starting the parts from configuration.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crm_domain::policy::Policy;
use crm_gateway::{AppState, Auth};
use crm_log::lease::{LeaseSettings, PartitionLeases};
use crm_log::{Customers, EventLog};
use crm_projections::projector::PartitionShare;
use crm_projections::store::Location;
use crm_projections::{AnyProjection, Projection, Projector, ProjectorOptions, ReadStore};
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
    let log = EventLog::connect(&cfg.nats, &cfg.stream).await?;
    with_log(cfg, log).await
}

/// Like [`open`], but refuses a NATS server without the stream instead of creating it:
/// for the tools that read, verify or replay the log (`crm audit`, `crm status`,
/// `crm replay`), which must not leave a new stream on a server they were pointed at by
/// mistake.
pub async fn open_existing(cfg: &Config) -> anyhow::Result<Parts> {
    let log = connect_existing(cfg).await?;
    with_log(cfg, log).await
}

/// Like [`open_existing`], and the SQLite read store must exist too: for the tools that
/// only read it (`crm audit`, `crm status`). Pointed at the wrong path they would
/// otherwise create an empty store and report from it (no checkpoints to verify against,
/// every projection `never_ran`).
pub async fn open_existing_store(cfg: &Config) -> anyhow::Result<Parts> {
    let log = connect_existing(cfg).await?;
    store_must_exist(cfg, "")?;
    with_log(cfg, log).await
}

/// Refuses a configured SQLite read store that is not there (`hint` ends the message).
pub(crate) fn store_must_exist(cfg: &Config, hint: &str) -> anyhow::Result<()> {
    if let Location::Sqlite(path) = cfg.store.location() {
        anyhow::ensure!(
            path.exists(),
            "no read store at {}: point CRM_STORE__SQLITE_PATH (or the config's [store] \
             sqlite_path) at the store the gateway and projectors use{hint}",
            path.display()
        );
    }
    Ok(())
}

/// The event log's stream as it is: never created or updated here.
pub(crate) async fn connect_existing(cfg: &Config) -> anyhow::Result<EventLog> {
    EventLog::connect_existing(&cfg.nats, &cfg.stream)
        .await
        .with_context(|| {
            format!(
                "opening the event log at {}",
                crm_log::connect::redacted_url(&cfg.nats.url)
            )
        })
}

pub(crate) async fn with_log(cfg: &Config, log: EventLog) -> anyhow::Result<Parts> {
    let customers = Arc::new(Customers::new(
        log.clone(),
        cfg.gateway.cache_capacity,
        cfg.gateway.max_attempts,
    ));
    let location = cfg.store.location();
    let store = ReadStore::open_at(&location)
        .await
        .with_context(|| format!("opening read store {location}"))?;
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
        audit_key: cfg
            .audit
            .signing_key
            .as_ref()
            .map(|k| Arc::new(k.expose().as_bytes().to_vec())),
        rebuild: Some(crm_gateway::RebuildContext {
            policy: policy(cfg)?,
            batch_size: cfg.projector.batch_size,
        }),
    })
}

/// Every projection's name.
pub const PROJECTIONS: [&str; 5] = [
    crm_projections::audit::NAME,
    crm_projections::lifecycle::NAME,
    crm_projections::trust::NAME,
    crm_projections::health::NAME,
    crm_projections::renewals::NAME,
];

/// Loads the configured scoring policy.
pub fn policy(cfg: &Config) -> anyhow::Result<Arc<Policy>> {
    Ok(Arc::new(crm_projections::policy::load(
        cfg.policy.path.as_deref(),
    )?))
}

/// Spawns one projector for the named projections (`all` for every one) into `tasks`:
/// one consumer of the log and one transaction per batch for all of them.
pub fn spawn_projectors(
    cfg: &Config,
    parts: &Parts,
    names: &[&str],
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let policy = policy(cfg)?;
    let mut projections = Vec::new();
    for name in names {
        for p in AnyProjection::named(name, &policy)? {
            if !projections
                .iter()
                .any(|q: &AnyProjection| q.name() == p.name())
            {
                projections.push(p);
            }
        }
    }
    let options = ProjectorOptions {
        batch_size: cfg.projector.batch_size,
        state_cache: cfg.projector.state_cache,
        ..ProjectorOptions::default()
    };
    let (store, log) = (parts.store.clone(), parts.log.clone());
    let token = shutdown.clone();
    if cfg.projector.partitioned {
        let settings = LeaseSettings {
            bucket: format!("crm_leases_{}", names.join("_")),
            ttl: Duration::from_millis(cfg.projector.lease_ttl_ms.max(300)),
            // As the stream itself is replicated, whatever this process's config says:
            // a bucket on fewer nodes than the log stalls every projector when its node
            // restarts.
            replicas: parts.log.replicas().max(1),
        };
        let group = names.join("+");
        tasks.spawn(async move {
            run_partitioned(projections, store, log, options, settings, group, token).await
        });
    } else {
        let projector = Projector::combined(projections, store, log, options);
        tasks.spawn(async move {
            projector.run(token).await?;
            Ok(())
        });
    }
    Ok(())
}

/// A member of a partitioned projector group: holds partition leases and runs one
/// combined projector over the held partitions, restarted whenever they change.
async fn run_partitioned(
    projections: Vec<AnyProjection>,
    store: ReadStore,
    log: EventLog,
    options: ProjectorOptions,
    settings: LeaseSettings,
    group: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let owner = format!(
        "{}-{}-{:08x}",
        group.replace('+', "_"),
        std::process::id(),
        rand::random::<u32>()
    );
    let total = log.partitions();
    let membership = shutdown.child_token();
    let leases = PartitionLeases::join(
        log.jetstream(),
        &settings,
        owner.clone(),
        total,
        membership.clone(),
    )
    .await?;
    let mut held = leases.watch();
    tracing::info!(%owner, group, partitions = total, "partitioned projector joined");
    let result: anyhow::Result<()> = async {
        loop {
            let share = PartitionShare {
                group: group.clone(),
                total,
                held: held.borrow_and_update().clone(),
            };
            tracing::info!(%owner, partitions = ?share.held.keys().collect::<Vec<_>>(), "applying partitions");
            let projector = Projector::combined(
                projections.clone(),
                store.clone(),
                log.clone(),
                ProjectorOptions {
                    share: Some(share),
                    ..options.clone()
                },
            );
            let token = shutdown.child_token();
            let outcome = tokio::select! {
                r = projector.run(token.clone()) => Some(r),
                changed = held.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    None
                }
            };
            token.cancel();
            match outcome {
                None => {}
                Some(Ok(())) => return Ok(()),
                Some(Err(e @ crm_projections::ProjectionError::LeaseLost { .. })) => {
                    tracing::warn!(%owner, error = %e, "a lease moved; waiting for the new share");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = held.changed() => {}
                        _ = tokio::time::sleep(settings.ttl / 3) => {}
                    }
                }
                Some(Err(e)) => return Err(e.into()),
            }
            if shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }
    .await;
    // Give the leases back before the process goes, so the others take over at once.
    membership.cancel();
    // Bounded: with NATS unreachable the leases expire on their own, and a stop must not
    // outlast the orchestrator's grace period waiting on them.
    if tokio::time::timeout(Duration::from_secs(5), leases.left())
        .await
        .is_err()
    {
        tracing::warn!("could not give the partition leases back in 5 s; they expire on their own");
    }
    result
}

/// Spawns the scheduler with `clock` into `tasks`; it flags inactivity at the configured
/// policy's threshold.
pub fn spawn_scheduler(
    cfg: &Config,
    parts: &Parts,
    clock: Arc<dyn crm_scheduler::Clock>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let scheduler =
        crm_scheduler::Scheduler::new(parts.customers.clone(), parts.store.clone(), clock)
            .flag_inactivity_after(policy(cfg)?.health.no_activity_days)
            .lapse_after(cfg.scheduler.lapse_grace_days)
            .lapse_when_quiet_for(Duration::from_secs(cfg.scheduler.lapse_quiet_secs));
    let interval = Duration::from_secs(cfg.scheduler.interval_secs.max(1));
    let token = shutdown.clone();
    tasks.spawn(async move {
        scheduler.run(interval, token).await;
        Ok(())
    });
    Ok(())
}

/// Spawns periodic signed checkpoints of the chain heads, if a key and an interval are set.
pub fn spawn_audit_checkpoints(
    cfg: &Config,
    parts: &Parts,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) {
    let (Some(key), interval) = (
        cfg.audit.signing_key.clone(),
        cfg.audit.checkpoint_interval_secs,
    ) else {
        return;
    };
    if interval == 0 {
        return;
    }
    let store = parts.store.clone();
    let log = parts.log.clone();
    let token = shutdown.clone();
    tasks.spawn(async move {
        let mut timer = tokio::time::interval(Duration::from_secs(interval));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = timer.tick() => {}
            }
            match crm_projections::audit::create_checkpoint(&store, &log, key.expose().as_bytes())
                .await
            {
                Ok(Some(c)) => tracing::info!(
                    head_sequence = c.head_sequence,
                    customers = c.customers,
                    "signed chain-head checkpoint"
                ),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "signing a chain-head checkpoint failed"),
            }
        }
    });
}

/// `crm schedule`.
pub async fn run_scheduler(cfg: Config) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let parts = open(&cfg).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    spawn_scheduler(
        &cfg,
        &parts,
        Arc::new(crm_scheduler::SystemClock),
        &mut tasks,
        &shutdown,
    )?;
    // Deployments run exactly one scheduler, so it is the process that signs the periodic
    // chain-head checkpoints (`audit.checkpoint_interval_secs`, with a signing key).
    spawn_audit_checkpoints(&cfg, &parts, &mut tasks, &shutdown);
    tracing::info!(
        interval_secs = cfg.scheduler.interval_secs,
        checkpoint_interval_secs = cfg.audit.checkpoint_interval_secs,
        "scheduler running"
    );
    supervise_until(tasks, shutdown, stop).await
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: call it before spawning the services, so
/// a signal that arrives while they start stops them instead of killing the process.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        async move {
            match handlers {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// [`shutdown_signal`], or SIGHUP: for `crm dev`, which a closed terminal then stops
/// cleanly, its nats-server (in a process group of its own) included, instead of leaving
/// that server running. The services keep SIGHUP's default, so `nohup` still works.
pub async fn shutdown_signal_or_hangup() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = hup.recv() => {}
            }
            return;
        }
    }
    shutdown_signal().await;
}

/// Waits for `stop` (or a task's end), cancels `shutdown`, then waits for every task to
/// drain.
pub async fn supervise_until(
    mut tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut result = Ok(());
    tokio::select! {
        _ = stop => tracing::info!("stopping"),
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

/// Spawns the gateway's doors: HTTP on `listener`, gRPC on `grpc`, and NATS requests on
/// `crm.commands.*`.
pub fn spawn_gateway(
    state: AppState,
    client: async_nats::Client,
    listener: TcpListener,
    grpc: TcpListener,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) {
    let token = shutdown.clone();
    let grpc_state = state.clone();
    tasks.spawn(async move {
        crm_grpc::serve(grpc, grpc_state, token)
            .await
            .map_err(|e| anyhow::anyhow!("gRPC server: {e}"))
    });
    let token = shutdown.clone();
    let http_state = state.clone();
    tasks.spawn(async move {
        crm_gateway::serve(listener, http_state, token).await?;
        Ok(())
    });
    let token = shutdown.clone();
    tasks.spawn(async move {
        crm_gateway::nats_intake::serve(client, state, token)
            .await
            .map_err(|e| anyhow::anyhow!("NATS command intake: {e}"))
    });
}

/// `crm gateway`.
pub async fn run_gateway(cfg: Config) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let parts = open(&cfg).await?;
    let state = app_state(&cfg, &parts)?;
    let listener = TcpListener::bind(cfg.gateway.http_addr)
        .await
        .with_context(|| format!("binding {}", cfg.gateway.http_addr))?;
    let grpc = TcpListener::bind(cfg.gateway.grpc_addr)
        .await
        .with_context(|| format!("binding {}", cfg.gateway.grpc_addr))?;
    tracing::info!(http = %listener.local_addr()?, grpc = %grpc.local_addr()?, "gateway listening");
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    spawn_gateway(
        state,
        parts.log.client().clone(),
        listener,
        grpc,
        &mut tasks,
        &shutdown,
    );
    supervise_until(tasks, shutdown, stop).await
}

/// `crm project <name|all>`.
pub async fn run_projector(cfg: Config, name: &str) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let parts = open(&cfg).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    spawn_projectors(&cfg, &parts, &[name], &mut tasks, &shutdown)?;
    tracing::info!(projection = name, "projector running");
    supervise_until(tasks, shutdown, stop).await
}

/// A new random API key.
pub fn new_api_key() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("crm_{}", hex::encode(bytes))
}
