//! `crm dev`: the whole system in one process, for a laptop.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use crm_gateway::{ApiKeyConfig, Role};
use crm_log::server::{NatsServer, ServerOptions};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{config, services};

/// Arguments of `crm dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Address of the HTTP gateway (default: `gateway.http_addr` of the config file or
    /// `CRM_GATEWAY__HTTP_ADDR`, else 127.0.0.1:8080).
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Address of the gRPC door (default: `gateway.grpc_addr` when the config file or
    /// `CRM_GATEWAY__GRPC_ADDR` sets it, else a free port).
    #[arg(long)]
    pub grpc_addr: Option<SocketAddr>,
    /// Directory for the NATS store, the SQLite views and the dev key.
    #[arg(long, default_value = "./.crm")]
    pub data_dir: PathBuf,
    /// Port of the nats-server to start (a free one by default).
    #[arg(long, conflicts_with = "nats_url")]
    pub nats_port: Option<u16>,
    /// Use this NATS server instead of starting one.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Generate this many demo customers at start (idempotent: a restart adds nothing).
    #[arg(long)]
    pub demo: Option<u32>,
    /// Optional config file layered under the dev defaults.
    #[arg(long, env = "CRM_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The dev key with every role, kept in the data dir so a restart reuses it.
fn dev_key(data_dir: &Path) -> anyhow::Result<String> {
    secret_file(&data_dir.join("dev-api-key"))
}

/// A random secret kept in `path`, created readable by its owner alone (0600) on first
/// use. A file that exists but cannot be read as one is an error, never replaced: a
/// replaced audit key would make every earlier checkpoint look forged.
fn secret_file(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(existing) => {
            let key = existing.trim().to_owned();
            anyhow::ensure!(
                !key.is_empty(),
                "{} is empty: remove it to have a new key made",
                path.display()
            );
            return Ok(key);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "reading {} (remove it to have a new key made)",
                path.display()
            )));
        }
    }
    let key = services::new_api_key();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{key}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// Runs everything until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // Signals are taken over before anything starts: Ctrl-C while the embedded server
    // starts or demo data is written stops what has started, the server last, instead of
    // ending the process there and leaving the server behind.
    let signalled = CancellationToken::new();
    tokio::spawn({
        let signalled = signalled.clone();
        async move {
            services::shutdown_signal_or_hangup().await;
            signalled.cancel();
        }
    });
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    // One `crm dev` per data dir, for as long as it runs (the lock goes with the process,
    // however it ends): a second one would share the first's store and, finding its
    // nats-server's pid recorded, stop it as a leftover.
    let lock_path = data_dir.join("crm-dev.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another crm dev is running on {} (it holds {}): stop it first, or give this one \
             another --data-dir",
            data_dir.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(anyhow::Error::new(e).context(format!("locking {}", lock_path.display())));
        }
    }
    let mut cfg = config::load(args.config.as_deref())?;
    cfg.store.sqlite_path = data_dir.join("views.sqlite");
    if cfg.store.postgres_url.take().is_some() {
        // The dev store lives in the data dir, next to the dev log it was built from.
        eprintln!(
            "crm dev keeps its views in SQLite ({}); the PostgreSQL URL set in the config \
             or CRM_STORE__POSTGRES_URL is not used",
            cfg.store.sqlite_path.display()
        );
    }
    if let Some(addr) = args.http_addr {
        cfg.gateway.http_addr = addr;
    }
    // The configured gRPC address when one is set (even to the default); otherwise a free
    // port, so a second `crm dev` does not collide with the first.
    cfg.gateway.grpc_addr = match args.grpc_addr {
        Some(addr) => addr,
        None if config::is_set(args.config.as_deref(), "gateway.grpc_addr")? => {
            cfg.gateway.grpc_addr
        }
        None => SocketAddr::from(([127, 0, 0, 1], 0)),
    };

    let mut server = None;
    match &args.nats_url {
        Some(url) => cfg.nats.url = url.clone(),
        None => {
            let store_dir = data_dir.join("nats");
            let pid_file = data_dir.join(PID_FILE);
            stop_stale_server(&pid_file, &store_dir).await;
            let s = NatsServer::start_with(ServerOptions {
                port: args.nats_port,
                store_dir: Some(store_dir),
                binary: None,
                log_file: Some(data_dir.join("nats-server.log")),
                extra_args: Vec::new(),
            })
            .await
            .with_context(|| {
                format!(
                    "starting the embedded nats-server (its log: {})",
                    data_dir.join("nats-server.log").display()
                )
            })?;
            if let Some(pid) = s.pid()
                && let Err(e) = std::fs::write(&pid_file, format!("{pid}\n"))
            {
                tracing::warn!(error = %e, file = %pid_file.display(), "cannot record the nats-server's pid");
            }
            cfg.nats.url = s.url();
            server = Some(s);
        }
    }

    let key = dev_key(&data_dir)?;
    cfg.gateway.api_keys.push(ApiKeyConfig {
        name: "dev".into(),
        key_sha256: crm_gateway::auth::hash_key(&key),
        roles: Role::ALL.to_vec(),
    });

    if cfg.audit.signing_key.is_none() {
        cfg.audit.signing_key = Some(crm_log::connect::Secret::new(secret_file(
            &data_dir.join("audit-signing-key"),
        )?));
        if cfg.audit.checkpoint_interval_secs == 0 {
            cfg.audit.checkpoint_interval_secs = 3_600;
        }
    }

    let started = start(cfg, &args, &data_dir, &key);
    let result = tokio::select! {
        started = started => match started {
            Ok((tasks, shutdown)) => {
                services::supervise_until(tasks, shutdown, signalled.cancelled()).await
            }
            Err(e) => Err(e),
        },
        _ = signalled.cancelled() => {
            // Whatever had started is dropped with its tasks: a projector's open batch
            // rolls back, as after a crash.
            tracing::info!("stopping");
            Ok(())
        }
    };
    if let Some(mut s) = server {
        s.stop().await;
        let _ = std::fs::remove_file(data_dir.join(PID_FILE));
    }
    drop(lock);
    result
}

/// Where `crm dev` records the pid of the nats-server it started, in its data dir.
const PID_FILE: &str = "nats-server.pid";

/// Stops the nats-server an earlier `crm dev` on this data dir left running (it was killed
/// without its clean-up: SIGKILL, the OOM killer), which would otherwise keep its port and
/// the store's lock, so the new server could not start. Called with the data dir's lock
/// held, so that `crm dev` is gone. Only a process that is still a nats-server on
/// `store_dir` is stopped: a pid reused since by anything else is left alone.
async fn stop_stale_server(pid_file: &Path, store_dir: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    if is_server_on(pid, store_dir) {
        eprintln!(
            "stopping the nats-server (pid {pid}) an earlier crm dev left running on {}",
            store_dir.display()
        );
        let signal = |sig| {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, sig);
            }
        };
        signal(rustix::process::Signal::TERM);
        for _ in 0..100 {
            if !is_server_on(pid, store_dir) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if is_server_on(pid, store_dir) {
            signal(rustix::process::Signal::KILL);
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Whether process `pid` is a nats-server running on `store_dir` (its command line, from
/// `/proc`; a process that has exited has none).
#[cfg(target_os = "linux")]
fn is_server_on(pid: i32, store_dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.first()
        .is_some_and(|program| program.ends_with(b"nats-server"))
        && args
            .windows(2)
            .any(|w| w[0] == b"-sd" && w[1] == store_dir.as_os_str().as_bytes())
}

/// Starts every service on `cfg` (its NATS URL set) and prints the addresses: the running
/// services and the token that stops them.
async fn start(
    cfg: config::Config,
    args: &DevArgs,
    data_dir: &Path,
    key: &str,
) -> anyhow::Result<(JoinSet<anyhow::Result<()>>, CancellationToken)> {
    let parts = services::open(&cfg).await?;
    let state = services::app_state(&cfg, &parts)?;
    let listener = TcpListener::bind(cfg.gateway.http_addr)
        .await
        .with_context(|| format!("binding {}", cfg.gateway.http_addr))?;
    let addr = listener.local_addr()?;
    let grpc = TcpListener::bind(cfg.gateway.grpc_addr)
        .await
        .with_context(|| format!("binding {}", cfg.gateway.grpc_addr))?;
    let grpc_addr = grpc.local_addr()?;

    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    services::spawn_projectors(&cfg, &parts, &["all"], &mut tasks, &shutdown)?;
    services::spawn_audit_checkpoints(&cfg, &parts, &mut tasks, &shutdown);
    services::spawn_scheduler(
        &cfg,
        &parts,
        std::sync::Arc::new(crm_scheduler::SystemClock),
        &mut tasks,
        &shutdown,
    )?;
    services::spawn_gateway(
        state,
        parts.log.client().clone(),
        listener,
        grpc,
        &mut tasks,
        &shutdown,
    );

    if let Some(n) = args.demo {
        let demo = crate::demo::DemoArgs {
            customers: n,
            seed: 1,
            until: None,
            concurrency: 16,
        };
        let (written, _) = crate::demo::run(parts.customers.clone(), &demo).await?;
        tracing::info!(customers = n, events = written, "demo data generated");
    }

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "http: http://{addr}")?;
        writeln!(
            out,
            "nats: {}",
            crm_log::connect::redacted_url(&cfg.nats.url)
        )?;
        writeln!(out, "grpc: http://{grpc_addr}")?;
        writeln!(out, "api key: {key}")?;
        writeln!(out, "data dir: {}", data_dir.display())?;
        writeln!(out, "ready")?;
        out.flush()?;
    }

    Ok((tasks, shutdown))
}

/// Without `/proc` no process is known to be one: nothing is stopped.
#[cfg(not(target_os = "linux"))]
fn is_server_on(_pid: i32, _store_dir: &Path) -> bool {
    false
}
