//! Processes of their own: the gateway, a projector and a rebuild each run as the real `crm`
//! command in a child process (this binary re-executed with [`AS_CRM`] set), so the peak
//! RSS printed is that process's alone, not the bench's with its preloads and clients.
//!
//! `memory` runs the gateway and a projector at several numbers of customers: their peak
//! RSS should follow the cache and batch bounds, not the customers or the log's length.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use crm_projections::ReadStore;
use crm_projections::any::ALL;
use crm_projections::store::Location;

use crate::Args;
use crate::measure::{self, Measured, peak_rss_mib};
use crate::raw;
use crate::report::{RAW_ASYNC, RAW_CONSUME, Row, Table, baseline_rows};
use crate::scenarios::{
    Env, common_notes, customer_ids, http_connections, post_command, register_body, timed_row,
};

/// Set in a child's environment: the bench binary then runs as `crm` with its arguments.
pub const AS_CRM: &str = "CRM_BENCH_AS_CRM";

/// A `crm` process started by the bench, with its peak RSS sampled while it lives.
pub(crate) struct CrmProcess {
    child: tokio::process::Child,
    peak: Arc<Mutex<Option<f64>>>,
    log: PathBuf,
}

impl CrmProcess {
    /// Starts `crm <args> --config <config>`; its stderr goes to `log`.
    pub(crate) fn spawn(config: &Path, args: &[&str], log: PathBuf) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = tokio::process::Command::new(exe)
            .env(AS_CRM, "1")
            .args(args)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting crm {}", args.join(" ")))?;
        let pid = child.id().context("the child has no pid")?;
        let peak = Arc::new(Mutex::new(None));
        let sampled = peak.clone();
        // VmHWM is itself a high-water mark; sampling only keeps the last reading before
        // the process goes, so a process that exits on its own loses at most 50 ms.
        tokio::spawn(async move {
            while let Some(mib) = peak_rss_mib(Some(pid)) {
                if let Ok(mut p) = sampled.lock() {
                    *p = Some(mib);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Ok(Self { child, peak, log })
    }

    /// Peak RSS so far, MiB (read now while the process lives).
    pub(crate) fn peak_mib(&self) -> Option<f64> {
        let now = self.child.id().and_then(|pid| peak_rss_mib(Some(pid)));
        now.or_else(|| self.peak.lock().ok().and_then(|p| *p))
    }

    /// Fails with the tail of the process's log if it has exited.
    pub(crate) fn ensure_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("crm exited early ({status}){}", self.log_tail());
        }
        Ok(())
    }

    /// Waits for the process to exit on its own; fails unless it succeeded.
    pub(crate) async fn wait(&mut self) -> anyhow::Result<()> {
        let status = self.child.wait().await?;
        anyhow::ensure!(status.success(), "crm failed ({status}){}", self.log_tail());
        Ok(())
    }

    /// Stops the process (it is measured; how it stops does not matter).
    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "; last lines of {}:\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }
}

/// Writes a config file for child `crm` processes on `env`'s nats-server, with the read
/// store at `sqlite` and one API key of every role; returns the file and the key.
pub(crate) fn write_config(
    env: &Env,
    args: &Args,
    sqlite: &Path,
    http_addr: &str,
) -> anyhow::Result<(PathBuf, String)> {
    write_config_at(env, args, &Location::Sqlite(sqlite.to_owned()), http_addr)
}

/// [`write_config`] for a read store at any location.
pub(crate) fn write_config_at(
    env: &Env,
    args: &Args,
    store: &Location,
    http_addr: &str,
) -> anyhow::Result<(PathBuf, String)> {
    let key = crm_cli::services::new_api_key();
    let hash = crm_gateway::auth::hash_key(&key);
    let (store_toml, stem) = match store {
        Location::Sqlite(file) => (
            format!("sqlite_path = \"{}\"", file.display()),
            file.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        ),
        Location::Postgres { url, schema } => (
            format!("postgres_url = \"{url}\"\npostgres_schema = \"{schema}\""),
            schema.clone(),
        ),
    };
    let text = format!(
        "[nats]\nurl = \"{url}\"\n\n[store]\n{store_toml}\n\n\
         [gateway]\nhttp_addr = \"{http_addr}\"\ncache_capacity = {cache}\n\n\
         [[gateway.api_keys]]\nname = \"bench\"\nkey_sha256 = \"{hash}\"\n\
         roles = [\"publisher\", \"reader\", \"ops\", \"auditor\"]\n\n\
         [projector]\nbatch_size = {batch}\nstate_cache = {state_cache}\n",
        url = env.nats_url(),
        cache = args.cache,
        batch = args.batch_size,
        state_cache = args.state_cache,
    );
    let path = env.dir.path().join(format!("crm-{stem}.toml"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok((path, key))
}

/// Waits until every projection of `all` has applied `head` in the store at `sqlite`.
async fn wait_for_views(sqlite: &Path, head: u64, process: &mut CrmProcess) -> anyhow::Result<()> {
    let store = ReadStore::open_file(sqlite).await?;
    loop {
        process.ensure_alive()?;
        if store.min_checkpoint(&ALL).await? >= head {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `memory`: for each customer count, a gateway process takes one registration per
/// customer over HTTP, then a projector process applies the log to every view.
pub async fn run(args: &Args) -> anyhow::Result<Table> {
    let mut table = Table {
        scenario: format!(
            "memory: the gateway and `crm project all` each in a process of their own, at {} customers; aggregate cache {}, batch {}, projector state cache {} per view",
            args.memory_customers
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" and "),
            args.cache,
            args.batch_size,
            args.state_cache
        ),
        ..Table::default()
    };
    for &n in &args.memory_customers {
        eprintln!("[memory] {n} customers: starting nats-server");
        let env = Env::start().await?;
        let log = env.log().await?;
        let sqlite = env.dir.path().join(format!("views-{n}.sqlite"));
        let port = free_port()?;
        let (config, key) = write_config(&env, args, &sqlite, &format!("127.0.0.1:{port}"))?;
        let base = format!("http://127.0.0.1:{port}");

        eprintln!("[memory] {n} customers: gateway process, one registration each");
        let mut gateway =
            CrmProcess::spawn(&config, &["gateway"], env.dir.path().join("gateway.log"))?;
        let probe = reqwest::Client::new();
        let ready = Instant::now();
        while !probe
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            gateway.ensure_alive()?;
            anyhow::ensure!(
                ready.elapsed() < Duration::from_secs(60),
                "the gateway was not ready within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let registered =
            register_over_http(args, SocketAddr::from(([127, 0, 0, 1], port)), &key, n).await?;
        gateway.ensure_alive()?;
        let gateway_peak = gateway.peak_mib();
        gateway.stop().await;
        anyhow::ensure!(
            registered.errors == 0,
            "registrations failed: {:?}",
            registered.first_error
        );
        let head = log.head().await?;

        eprintln!("[memory] {n} customers: projector process over {head} events");
        let t = Instant::now();
        let mut projector = CrmProcess::spawn(
            &config,
            &["project", "all"],
            env.dir.path().join("projector.log"),
        )?;
        wait_for_views(&sqlite, head, &mut projector).await?;
        let elapsed = t.elapsed();
        let projector_peak = projector.peak_mib();
        projector.stop().await;

        eprintln!("[memory] {n} customers: baselines");
        let size = raw::mean_payload(log.jetstream(), log.stream_name(), 1, head, 2_000).await?;
        let b = env.baselines(args, size, head.min(200_000)).await?;
        table.rows.push(
            Row::of(
                format!("gateway process: register_customer over HTTP, {n} customers"),
                &registered,
                gateway_peak,
            )
            .vs(RAW_ASYNC, b.async_publish.rate()),
        );
        table.rows.push(
            timed_row(
                format!(
                    "projector process: `crm project all` from scratch, {head} events of {n} customers"
                ),
                head,
                elapsed,
                None,
                projector_peak,
            )
            .vs(RAW_CONSUME, b.consume.rate()),
        );
        if table.notes.is_empty() {
            table.notes = common_notes(args, size, &b);
        }
        table
            .rows
            .extend(baseline_rows(&b).into_iter().map(|mut r| {
                r.name = format!("{} ({n}-customer run)", r.name);
                r
            }));
        table.notes.extend(
            env.closing_notes()
                .into_iter()
                .map(|s| format!("{n} customers: {s}")),
        );
    }
    table.notes.push(
        "peak RSS of the gateway and projector rows is the VmHWM of that `crm` process alone \
         (the bench re-executes itself as `crm gateway` / `crm project all` with a config \
         file); the HTTP clients run in the bench process; the projector's time runs from \
         its start until every view's checkpoint reaches the head (polled every 100 ms)"
            .into(),
    );
    Ok(table)
}

async fn register_over_http(
    args: &Args,
    addr: SocketAddr,
    key: &str,
    n: u64,
) -> anyhow::Result<Measured> {
    let ids = customer_ids(n);
    let connections = http_connections(addr, args.concurrency);
    let auth: Arc<str> = Arc::from(format!("Bearer {key}"));
    Ok(measure::drive(n, args.concurrency, None, move |k, worker| {
        let path = format!("/v1/customers/{}/commands", ids[k as usize]);
        let body = Bytes::from(register_body(k).to_string());
        post_command(connections.clone(), worker, path, auth.clone(), body)
    })
    .await)
}
