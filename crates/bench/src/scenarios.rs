//! The scenarios. Each starts a fresh nats-server, runs its workload, then measures the raw
//! baselines on the same server with the workload's mean message size and count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use crm_cli::config::Config;
use crm_cli::demo::{self, DemoArgs};
use crm_cli::services;
use crm_domain::{Command, CustomerId};
use crm_gateway::{ApiKeyConfig, Role};
use crm_log::repository::DEFAULT_MAX_ATTEMPTS;
use crm_log::server::NatsServer;
use crm_log::{Customers, EventLog, NatsConfig, StreamSettings, SubmitOptions};
use crm_projections::health::HealthProjection;
use crm_projections::lifecycle::LifecycleProjection;
use crm_projections::renewals::RenewalsProjection;
use crm_projections::store::Location;
use crm_projections::trust::TrustProjection;
use crm_projections::{AnyProjection, Projection, Projector, ProjectorOptions, ReadStore};
use futures::StreamExt;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::http1;
use crate::measure::{self, CpuMeter, CpuShare, Measured, peak_rss_mib, reset_peak_rss};
use crate::raw::{self, Baselines, RawPlan};
use crate::report::{
    RAW_ASYNC, RAW_CONSUME, RAW_CONSUME_BESIDE, RAW_SYNC, Row, Table, baseline_rows,
};
use crate::{Args, Scenario};

/// Runs the chosen scenario(s) and prints their tables.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let which: Vec<Scenario> = match args.scenario {
        Scenario::All => vec![
            Scenario::Append,
            Scenario::Http,
            Scenario::Project,
            Scenario::Rebuild,
        ],
        s => vec![s],
    };
    let mut out = machine().await?;
    println!("{out}");
    out.push('\n');
    for s in which {
        let table = match s {
            Scenario::Append => append(&args).await?,
            Scenario::Http => http(&args).await?,
            Scenario::Project => project(&args).await?,
            Scenario::Rebuild => rebuild(&args).await?,
            Scenario::Audit => crate::audit::run(&args).await?,
            Scenario::Memory => crate::memory::run(&args).await?,
            Scenario::All => unreachable!("expanded above"),
        };
        let text = table.render();
        println!("{text}");
        out.push_str(&text);
        out.push('\n');
        if let Some(path) = &args.output {
            std::fs::write(path, &out).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The machine, as a Markdown paragraph.
async fn machine() -> anyhow::Result<String> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let binary = crm_log::server::find_binary()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "nats-server (not found)".into());
    let version = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let gc = ["GOGC", "GOMEMLIMIT"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>();
    let gc = if gc.is_empty() {
        "Go's default GC".to_owned()
    } else {
        gc.join(" ")
    };
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    Ok(format!(
        "## crm-bench\n\nmachine: {cpus} CPUs ({model}), {mem_gib:.1} GiB memory; {version} ({binary}); \
         one nats-server per scenario ({gc}), file storage, one replica, temporary store; \
         the bench's runtime has {workers} worker thread{}\n",
        if workers == 1 { "" } else { "s" }
    ))
}

/// A nats-server of our own and a temporary directory for SQLite.
pub(crate) struct Env {
    nats: NatsServer,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) cpu: CpuMeter,
    load_before: String,
    /// [`Env::log`] reads through async-nats only (`--client-reads`).
    client_reads: bool,
}

impl Env {
    /// Raw publish-and-wait and the conditional publish (`raw::publish_and_wait`) of
    /// `--commands` messages in all from `--concurrency` publishers, paced at `rate` or in
    /// a closed loop: (row name, measured), unconditional first.
    async fn publish_and_wait_refs(
        &self,
        args: &Args,
        size: usize,
        rate: Option<f64>,
    ) -> anyhow::Result<Vec<(String, Measured)>> {
        let client = self.connect("crm-bench-raw-wait").await?;
        let (how, floor) = match rate {
            Some(rate) => (format!("paced at {rate:.0}/s"), " (latency floor)"),
            None => ("in a closed loop".to_string(), ""),
        };
        let mut out = Vec::new();
        for (conditional, name) in [
            (
                false,
                format!("{RAW_SYNC}, {} publishers {how}{floor}", args.concurrency),
            ),
            (
                true,
                format!(
                    "ref: conditional publish-and-wait (+ Crm-* headers, expected last subject sequence), {} publishers {how}",
                    args.concurrency
                ),
            ),
        ] {
            let m = raw::publish_and_wait(
                &client,
                size,
                args.commands,
                args.concurrency,
                rate,
                conditional,
                self.cpu,
            )
            .await?;
            out.push((name, m));
        }
        Ok(out)
    }

    pub(crate) async fn start() -> anyhow::Result<Self> {
        let nats = NatsServer::start()
            .await
            .context("starting nats-server (set CRM_NATS_SERVER or run scripts/dev.sh once)")?;
        let cpu = CpuMeter {
            nats_pid: measure::nats_server_pid(nats.port()),
        };
        Ok(Self {
            nats,
            dir: tempfile::tempdir().context("temporary directory")?,
            cpu,
            load_before: measure::load_average(),
            client_reads: false,
        })
    }

    /// The nats-server's client URL.
    pub(crate) fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// A new connection (each role in the bench gets its own, as separate processes would).
    async fn connect(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        let mut cfg = NatsConfig::url(self.nats.url());
        cfg.name = name.into();
        Ok(crm_log::connect(&cfg).await?)
    }

    /// The log as the `crm` processes open it: range reads on lean connections of their
    /// own, unless `--client-reads`.
    pub(crate) async fn log(&self) -> anyhow::Result<EventLog> {
        if self.client_reads {
            return self.client_log().await;
        }
        let mut cfg = NatsConfig::url(self.nats.url());
        cfg.name = "crm-bench-log".into();
        Ok(EventLog::connect(&cfg, &StreamSettings::default()).await?)
    }

    /// The log with every read through async-nats.
    pub(crate) async fn client_log(&self) -> anyhow::Result<EventLog> {
        let client = self.connect("crm-bench-log").await?;
        Ok(EventLog::open(client, &StreamSettings::default()).await?)
    }

    /// The closing notes: the server's peak RSS and the machine's load.
    pub(crate) fn closing_notes(&self) -> Vec<String> {
        let rss = match self.cpu.nats_pid.and_then(|p| peak_rss_mib(Some(p))) {
            Some(m) => format!("nats-server peak RSS: {m:.0} MiB"),
            None => "nats-server peak RSS: unavailable".into(),
        };
        vec![
            rss,
            format!(
                "load average (1/5/15 min) at start {} and end {} of the scenario: anything above \
                 what the bench itself adds means other work shared the machine",
                self.load_before,
                measure::load_average()
            ),
        ]
    }

    pub(crate) async fn baselines(
        &self,
        args: &Args,
        size: usize,
        count: u64,
    ) -> anyhow::Result<Baselines> {
        let client = self.connect("crm-bench-raw").await?;
        let dialer = crm_log::wire::Dialer::new(&NatsConfig::url(self.nats.url()));
        raw::measure(
            &client,
            dialer.as_ref(),
            RawPlan {
                size,
                count,
                sync_count: args.sync_count,
                window: args.window,
            },
            self.cpu,
        )
        .await
    }
}

impl Env {
    /// The paced rows' references, when a paced run happened: raw publish-and-wait from the
    /// same number of concurrent publishers at the same rate (counted from the schedule and
    /// from the issue), and the driver alone, the same workers doing nothing.
    async fn paced_floor(
        &self,
        args: &Args,
        size: usize,
        paced: Option<f64>,
    ) -> anyhow::Result<Vec<Row>> {
        let Some(rate) = paced else {
            return Ok(Vec::new());
        };
        // The driver alone: the same workers at the same rate, doing nothing. Its latency
        // from the schedule is the pacer's lateness plus the runtime waking a worker, a floor
        // under every paced row.
        eprintln!(
            "  reference: {} no-op workers paced at {rate:.0}/s",
            args.concurrency
        );
        let idle = measure::drive(args.commands, args.concurrency, Some(rate), |_, _| async {
            Ok(())
        })
        .await;
        let mut rows = Vec::new();
        for (name, m) in self.publish_and_wait_refs(args, size, Some(rate)).await? {
            rows.extend(Row::paced(&name, &m, None));
        }
        rows.extend(Row::paced(
            &format!(
                "ref: the driver alone, {} no-op workers paced at {rate:.0}/s (the pacer thread and the runtime waking the workers)",
                args.concurrency
            ),
            &idle,
            None,
        ));
        Ok(rows)
    }
}

pub(crate) fn customer_ids(n: u64) -> Arc<Vec<CustomerId>> {
    Arc::new((0..n).map(|_| CustomerId::new(Uuid::now_v7())).collect())
}

/// One keep-alive HTTP/1.1 connection per worker (each used by its worker only).
pub(crate) fn http_connections(
    addr: SocketAddr,
    workers: usize,
) -> Arc<Vec<tokio::sync::Mutex<http1::Connection>>> {
    Arc::new(
        (0..workers.max(1))
            .map(|_| tokio::sync::Mutex::new(http1::Connection::new(addr)))
            .collect(),
    )
}

/// POSTs a command body to `path` on the worker's connection; only `201 Created` counts as
/// done.
pub(crate) async fn post_command(
    connections: Arc<Vec<tokio::sync::Mutex<http1::Connection>>>,
    worker: usize,
    path: String,
    auth: Arc<str>,
    body: Bytes,
) -> Result<(), String> {
    let mut conn = connections[worker].lock().await;
    let resp = conn
        .post(&path, &auth, &body)
        .await
        .map_err(|e| e.to_string())?;
    if resp.status == 201 {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        ))
    }
}

pub(crate) fn register_body(k: u64) -> serde_json::Value {
    json!({"type": "register_customer", "name": format!("Bench customer {k}"),
           "segment": "software", "region": "north"})
}

/// The command path over `log` with the aggregate cache of `--cache`, and `--customers`
/// fresh customer ids.
fn command_path(log: &EventLog, args: &Args) -> (Arc<Customers>, Arc<Vec<CustomerId>>) {
    let customers = Arc::new(Customers::new(
        log.clone(),
        args.cache,
        DEFAULT_MAX_ATTEMPTS,
    ));
    (customers, customer_ids(args.customers))
}

/// One `register_customer` per id through `customers`, from `concurrency` submitters in
/// a closed loop.
async fn register_all(
    customers: &Arc<Customers>,
    ids: &Arc<Vec<CustomerId>>,
    concurrency: usize,
) -> Measured {
    let (customers, ids) = (customers.clone(), ids.clone());
    measure::drive(ids.len() as u64, concurrency, None, move |k, _| {
        let (customers, id) = (customers.clone(), ids[k as usize]);
        async move {
            // Built here rather than kept for every customer, so the bench's own memory
            // does not grow with --customers.
            let register: Command =
                serde_json::from_value(register_body(k)).map_err(|e| e.to_string())?;
            customers
                .submit(id, &register, &SubmitOptions::now("bench"))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

fn activity_body() -> serde_json::Value {
    let day = time::OffsetDateTime::now_utc().date().to_string();
    json!({"type": "record_activity", "day": day, "logins": 17, "active_users": 5})
}

pub(crate) fn row_rss() -> Option<f64> {
    peak_rss_mib(None)
}

pub(crate) fn common_notes(args: &Args, size: usize, b: &Baselines) -> Vec<String> {
    let mut notes = vec![format!(
        "baselines on the same server, same run: {} messages of {size} B payload (the mean CRM envelope \
         of this run) over {} subjects, no headers; publish-and-wait over {} messages; the `ref: … + 2 Crm-* headers` \
         rows add the headers every CRM event carries (appends also send Nats-Expected-Last-Subject-Sequence)",
        b.plan.count,
        raw::RAW_SUBJECTS,
        b.sync_publish.ok,
    )];
    if let Some(l) = b.sync_publish.latency {
        notes.push(format!(
            "one publish round trip (raw publish-and-wait) p50 {:.3} ms, p99 {:.3} ms: the latency floor of one append",
            l.p50, l.p99
        ));
    }
    notes.push(format!(
        "concurrency {}; peak RSS is this one bench process (driver + the path under test), reset before each row",
        args.concurrency
    ));
    notes
}

fn first_error(name: &str, m: &Measured) -> Option<String> {
    m.first_error
        .as_ref()
        .map(|e| format!("{name}: {} errors, first: {e}", m.errors))
}

/// `append`: `Customers::submit` in process.
async fn append(args: &Args) -> anyhow::Result<Table> {
    eprintln!("[append] starting nats-server");
    let env = Env::start().await?;
    let log = env.log().await?;
    let (customers, ids) = command_path(&log, args);
    let n = ids.len() as u64;
    let mut table = Table {
        scenario: format!(
            "append: Customers::submit (decide + conditional append), {} customers, {} submitters",
            n, args.concurrency
        ),
        ..Table::default()
    };

    eprintln!("[append] registering {n} customers");
    reset_peak_rss();
    let mark = env.cpu.mark();
    let reg = register_all(&customers, &ids, args.concurrency)
        .await
        .with_cpu(&mark);
    let reg_rss = row_rss();

    let activity: Arc<Command> = Arc::new(serde_json::from_value(activity_body())?);
    let submit_activity = |rate: Option<f64>| {
        let (customers, ids, activity) = (customers.clone(), ids.clone(), activity.clone());
        measure::drive(args.commands, args.concurrency, rate, move |k, _| {
            let (customers, activity) = (customers.clone(), activity.clone());
            let id = ids[(k % n) as usize];
            async move {
                customers
                    .submit(id, &activity, &SubmitOptions::now("bench"))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
    };
    let first = log.head().await? + 1;
    eprintln!(
        "[append] {} record_activity commands, closed loop",
        args.commands
    );
    reset_peak_rss();
    let mark = env.cpu.mark();
    let max = submit_activity(None).await.with_cpu(&mark);
    let max_rss = row_rss();
    let last = log.head().await?;
    let paced_rate = args.rate.or((!args.no_paced).then(|| max.rate() / 2.0));
    let paced = match paced_rate {
        Some(rate) => {
            eprintln!("[append] {} commands paced at {rate:.0}/s", args.commands);
            reset_peak_rss();
            let mark = env.cpu.mark();
            let m = submit_activity(Some(rate)).await.with_cpu(&mark);
            Some((rate, m, row_rss()))
        }
        None => None,
    };

    let size = raw::mean_payload(log.jetstream(), log.stream_name(), first, last, 2_000).await?;
    eprintln!("[append] baselines");
    let b = env.baselines(args, size, args.commands).await?;
    // What the same number of appends in flight carries without any CRM code: the
    // server's ceiling for conditional appends at this concurrency.
    let closed = env.publish_and_wait_refs(args, size, None).await?;
    let floor = env
        .paced_floor(args, size, paced.as_ref().map(|p| p.0))
        .await?;
    let raw_async = b.async_publish.rate();
    table.rows.push(
        Row::of(
            "append: register_customer (cache miss, first event)",
            &reg,
            reg_rss,
        )
        .vs(RAW_ASYNC, raw_async),
    );
    table.rows.push(
        Row::of("append: record_activity, closed loop (max)", &max, max_rss)
            .vs(RAW_ASYNC, raw_async),
    );
    if let Some((rate, m, rss)) = &paced {
        table.rows.extend(
            Row::paced(
                &format!("append: record_activity paced at {rate:.0}/s"),
                m,
                *rss,
            )
            .into_iter()
            .map(|r| r.vs(RAW_ASYNC, raw_async)),
        );
    }
    table.rows.extend(baseline_rows(&b));
    table.rows.extend(
        closed
            .iter()
            .map(|(name, m)| Row::of(name.as_str(), m, None).vs(RAW_ASYNC, raw_async)),
    );
    table.rows.extend(floor);
    table.notes = common_notes(args, size, &b);
    table.notes.extend(first_error("register", &reg));
    table.notes.extend(first_error("append", &max));
    if let Some((_, m, _)) = &paced {
        table.notes.extend(first_error("paced append", m));
    }
    table.notes.extend(env.closing_notes());
    Ok(table)
}

/// `http`: the real gateway in process, driven by keep-alive clients.
async fn http(args: &Args) -> anyhow::Result<Table> {
    eprintln!("[http] starting nats-server and the gateway");
    let env = Env::start().await?;
    let key = services::new_api_key();
    let mut cfg = Config::default();
    cfg.nats.url = env.nats.url();
    cfg.nats.name = "crm-bench-gateway".into();
    cfg.store.sqlite_path = env.dir.path().join("views.sqlite");
    cfg.projector.batch_size = args.batch_size;
    cfg.gateway.cache_capacity = args.cache;
    cfg.gateway.api_keys = vec![ApiKeyConfig {
        name: "bench".into(),
        key_sha256: crm_gateway::auth::hash_key(&key),
        roles: Role::ALL.to_vec(),
    }];
    let parts = services::open(&cfg).await?;
    let state = services::app_state(&cfg, &parts)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    if args.with_projectors {
        services::spawn_projectors(&cfg, &parts, &["all"], &mut tasks, &shutdown)?;
    }
    let token = shutdown.clone();
    tasks.spawn(async move {
        crm_gateway::serve(listener, state, token).await?;
        Ok(())
    });

    let ids = customer_ids(args.customers);
    let n = ids.len() as u64;
    let connections = http_connections(addr, args.concurrency);
    let auth: Arc<str> = Arc::from(format!("Bearer {key}"));
    let post = {
        let (connections, ids, auth) = (connections.clone(), ids.clone(), auth.clone());
        move |k: u64, worker: usize, body: Bytes| {
            let path = format!("/v1/customers/{}/commands", ids[(k % n) as usize]);
            post_command(connections.clone(), worker, path, auth.clone(), body)
        }
    };
    let mut table = Table {
        scenario: format!(
            "http: POST /v1/customers/{{id}}/commands through the gateway, {} customers, {} keep-alive clients{}",
            n,
            args.concurrency,
            if args.with_projectors {
                ", projectors running in the same process"
            } else {
                ""
            }
        ),
        ..Table::default()
    };

    eprintln!("[http] registering {n} customers");
    reset_peak_rss();
    let mark = env.cpu.mark();
    let reg = {
        let post = post.clone();
        measure::drive(n, args.concurrency, None, move |k, w| {
            post(k, w, Bytes::from(register_body(k).to_string()))
        })
        .await
        .with_cpu(&mark)
    };
    let reg_rss = row_rss();
    let body = Bytes::from(activity_body().to_string());
    let run = |rate: Option<f64>| {
        let (post, body) = (post.clone(), body.clone());
        measure::drive(args.commands, args.concurrency, rate, move |k, w| {
            post(k, w, body.clone())
        })
    };
    let first = parts.log.head().await? + 1;
    eprintln!(
        "[http] {} record_activity commands, closed loop",
        args.commands
    );
    reset_peak_rss();
    let mark = env.cpu.mark();
    let max = run(None).await.with_cpu(&mark);
    let max_rss = row_rss();
    let last = parts.log.head().await?;
    let paced_rate = args.rate.or((!args.no_paced).then(|| max.rate() / 2.0));
    let paced = match paced_rate {
        Some(rate) => {
            eprintln!("[http] {} commands paced at {rate:.0}/s", args.commands);
            reset_peak_rss();
            let mark = env.cpu.mark();
            let m = run(Some(rate)).await.with_cpu(&mark);
            Some((rate, m, row_rss()))
        }
        None => None,
    };
    drop(post);
    drop(connections);
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        anyhow::Ok(())
    })
    .await;
    match stopped {
        Ok(r) => r?,
        Err(_) => eprintln!("[http] gateway did not stop within 10 s; going on"),
    }

    let size = raw::mean_payload(
        parts.log.jetstream(),
        parts.log.stream_name(),
        first,
        last,
        2_000,
    )
    .await?;
    eprintln!("[http] baselines");
    let b = env.baselines(args, size, args.commands).await?;
    let floor = env
        .paced_floor(args, size, paced.as_ref().map(|p| p.0))
        .await?;
    let raw_async = b.async_publish.rate();
    table
        .rows
        .push(Row::of("http: register_customer", &reg, reg_rss).vs(RAW_ASYNC, raw_async));
    table.rows.push(
        Row::of("http: record_activity, closed loop (max)", &max, max_rss).vs(RAW_ASYNC, raw_async),
    );
    if let Some((rate, m, rss)) = &paced {
        table.rows.extend(
            Row::paced(
                &format!("http: record_activity paced at {rate:.0}/s"),
                m,
                *rss,
            )
            .into_iter()
            .map(|r| r.vs(RAW_ASYNC, raw_async)),
        );
    }
    table.rows.extend(baseline_rows(&b));
    table.rows.extend(floor);
    table.notes = common_notes(args, size, &b);
    table.notes.push(
        "the HTTP clients run in the bench process too, on the same 2 cores as gateway and nats-server"
            .into(),
    );
    table.notes.extend(first_error("register", &reg));
    table.notes.extend(first_error("http", &max));
    if let Some((_, m, _)) = &paced {
        table.notes.extend(first_error("paced http", m));
    }
    table.notes.extend(env.closing_notes());
    Ok(table)
}

/// Writes at least `events` events of demo histories through the command path; returns the
/// measured phase and the number of customers.
pub(crate) async fn preload(
    args: &Args,
    env: &Env,
    log: &EventLog,
    events: u64,
) -> anyhow::Result<(Measured, u32, Option<f64>)> {
    let until = (time::OffsetDateTime::now_utc().date() - time::Duration::days(1)).to_string();
    let until_date =
        time::Date::parse(&until, &time::format_description::well_known::Iso8601::DATE)?;
    let seed = 1;
    let (mut planned, mut n) = (0u64, 0u32);
    while planned < events {
        planned += demo::story(n, seed, until_date).2.len() as u64;
        n += 1;
    }
    eprintln!("  preload: {n} demo customers, {planned} commands, through Customers::submit");
    let customers = Arc::new(Customers::new(
        log.clone(),
        args.cache,
        DEFAULT_MAX_ATTEMPTS,
    ));
    let demo_args = DemoArgs {
        customers: n,
        seed,
        until: Some(until),
        concurrency: args.concurrency,
    };
    reset_peak_rss();
    let mark = env.cpu.mark();
    let t = Instant::now();
    let (written, replayed) = demo::run(customers, &demo_args).await?;
    let elapsed = t.elapsed();
    anyhow::ensure!(
        replayed == 0,
        "the fresh log already had demo events ({replayed})"
    );
    Ok((
        Measured {
            ok: written,
            errors: 0,
            first_error: None,
            elapsed,
            latency: None,
            issued: None,
            cpu: mark.share(),
        },
        n,
        row_rss(),
    ))
}

/// Consumes `count` events through `EventLog::read` (consume + decode envelopes).
async fn decode_all(log: &EventLog, count: u64) -> anyhow::Result<Measured> {
    let t = Instant::now();
    let stream = log.read(0, count);
    let mut stream = std::pin::pin!(stream);
    let mut n = 0u64;
    while n < count {
        let e = stream.next().await.context("subscription ended")??;
        std::hint::black_box(&e);
        n += 1;
    }
    Ok(Measured {
        ok: count,
        errors: 0,
        first_error: None,
        elapsed: t.elapsed(),
        latency: None,
        issued: None,
        cpu: None,
    })
}

/// A projection that keeps nothing: a projector running it still reads and decodes every
/// envelope and event, gathers them into batches and commits a checkpoint per batch. Its
/// rate is the ceiling of every projector row: what is left for the views themselves.
#[derive(Debug, Clone, Copy)]
struct NoViews;

impl Projection for NoViews {
    fn name(&self) -> &'static str {
        "no-views"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    async fn apply_batch(
        &self,
        _tx: &mut sqlx::AnyConnection,
        events: &[crm_log::StoredEvent],
        _cache: &mut crm_projections::cache::StateCache,
    ) -> Result<(), crm_projections::ProjectionError> {
        // The reader decoded every event ahead; a decoding error still fails the batch,
        // as in a real view.
        for e in events {
            e.event().map_err(|err| crm_log::LogError::Decode {
                sequence: e.sequence,
                reason: err.to_string(),
            })?;
        }
        Ok(())
    }
}

/// The row of [`NoViews`] over the log up to `head`, into a fresh SQLite file.
async fn no_views_row(env: &Env, log: &EventLog, args: &Args, head: u64) -> anyhow::Result<Row> {
    let store = ReadStore::open_file(&env.dir.path().join("no-views.sqlite")).await?;
    reset_peak_rss();
    let mark = env.cpu.mark();
    let elapsed = project_one(NoViews, store, log.clone(), args.projector(), head).await?;
    Ok(timed_row(
        "ref: a projector keeping no view (read, decode envelopes and events, batch, commit checkpoints): the ceiling of the rows below".into(),
        head,
        elapsed,
        mark.share(),
        row_rss(),
    ))
}

/// Runs one projection from scratch to `head`; returns its wall time.
pub(crate) async fn project_one<P: Projection>(
    projection: P,
    store: ReadStore,
    log: EventLog,
    options: ProjectorOptions,
    head: u64,
) -> anyhow::Result<Duration> {
    let name = projection.name();
    let projector = Projector::new(projection, store.clone(), log, options);
    let t = Instant::now();
    projector.run_until(head).await?;
    let elapsed = t.elapsed();
    let checkpoint = store.checkpoint(name).await?;
    anyhow::ensure!(
        checkpoint >= head,
        "{name} stopped at {checkpoint}, not {head}"
    );
    Ok(elapsed)
}

/// The projections, each constructed as `crm project all` does: the four views and the
/// audit index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    Lifecycle,
    Trust,
    Health,
    Renewals,
    Audit,
}

const VIEWS: [View; 4] = [View::Lifecycle, View::Trust, View::Health, View::Renewals];

impl View {
    fn name(self) -> &'static str {
        match self {
            View::Lifecycle => crm_projections::lifecycle::NAME,
            View::Trust => crm_projections::trust::NAME,
            View::Health => crm_projections::health::NAME,
            View::Renewals => crm_projections::renewals::NAME,
            View::Audit => crm_projections::audit::NAME,
        }
    }

    async fn run(
        self,
        store: ReadStore,
        log: EventLog,
        batch: ProjectorOptions,
        head: u64,
    ) -> anyhow::Result<Duration> {
        let policy = Arc::new(crm_projections::policy::default_policy());
        match self {
            View::Lifecycle => {
                project_one(LifecycleProjection::new(policy), store, log, batch, head).await
            }
            View::Trust => project_one(TrustProjection::new(policy), store, log, batch, head).await,
            View::Health => {
                project_one(HealthProjection::new(policy), store, log, batch, head).await
            }
            View::Renewals => project_one(RenewalsProjection, store, log, batch, head).await,
            View::Audit => {
                project_one(
                    crm_projections::audit::AuditProjection,
                    store,
                    log,
                    batch,
                    head,
                )
                .await
            }
        }
    }
}

/// All four views concurrently from scratch, into one shared SQLite file (`shared`, as
/// `crm project all` deploys them) or one file each. Returns the wall time until the last
/// one reached `head`.
async fn project_all(
    env: &Env,
    log: &EventLog,
    args: &Args,
    head: u64,
    tag: &str,
    shared: bool,
) -> anyhow::Result<Duration> {
    let shared_store = if shared {
        Some(ReadStore::open_file(&env.dir.path().join(format!("{tag}-all.sqlite"))).await?)
    } else {
        None
    };
    let mut stores = Vec::new();
    for v in VIEWS {
        stores.push(match &shared_store {
            Some(s) => s.clone(),
            None => {
                ReadStore::open_file(&env.dir.path().join(format!("{tag}-{}.sqlite", v.name())))
                    .await?
            }
        });
    }
    let t = Instant::now();
    let mut set = JoinSet::new();
    for (v, store) in VIEWS.into_iter().zip(stores) {
        let log = log.clone();
        let options = args.projector();
        set.spawn(async move { v.run(store, log, options, head).await });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(t.elapsed())
}

/// A fresh read store for one row, called `tag`: a SQLite file in the bench's temporary
/// directory, or (with `postgres_url`) a schema of that database, which [`drop_store`]
/// removes afterwards.
pub(crate) fn fresh_location(env: &Env, tag: &str, postgres_url: Option<&str>) -> Location {
    match postgres_url {
        None => Location::Sqlite(env.dir.path().join(format!("{tag}.sqlite"))),
        Some(url) => Location::Postgres {
            url: url.to_owned(),
            schema: format!(
                "bench_{}_{}",
                tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                    .to_ascii_lowercase(),
                std::process::id()
            ),
        },
    }
}

/// Removes a PostgreSQL schema [`fresh_location`] made, and any shadow of it (SQLite files
/// go with the temporary directory).
pub(crate) async fn drop_store(at: &Location) -> anyhow::Result<()> {
    if let Location::Postgres { url, schema } = at {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(url).await?;
        for s in [schema.clone(), format!("{schema}_rebuild_all")] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {s} CASCADE"
            )))
            .execute(&mut conn)
            .await?;
        }
    }
    Ok(())
}

/// The four views through one combined projector into a fresh PostgreSQL schema at
/// `url` (dropped afterwards), as a row called `label`.
/// With `--postgres-url`, the four views through one combined projector into a fresh
/// PostgreSQL schema (dropped afterwards); `label` is `"<scenario>: <row>"`.
async fn postgres_combined_row(
    env: &Env,
    log: &EventLog,
    args: &Args,
    head: u64,
    tag: &str,
    label: &str,
) -> anyhow::Result<Option<Row>> {
    let Some(url) = args.postgres_url.as_deref() else {
        return Ok(None);
    };
    match label.split_once(": ") {
        Some((scenario, row)) => eprintln!("[{scenario}] {row}"),
        None => eprintln!("{label}"),
    }
    reset_peak_rss();
    let mark = env.cpu.mark();
    let at = fresh_location(env, tag, Some(url));
    let elapsed = project_combined(log, args, head, &at, &FOUR_VIEWS).await?;
    drop_store(&at).await?;
    Ok(Some(timed_row(
        label.into(),
        head,
        elapsed,
        mark.share(),
        row_rss(),
    )))
}

/// `names` (as `crm project` takes them) applied by one combined projector (one consumer,
/// one transaction per batch for all), from scratch to `head` into the fresh store `at`.
async fn project_combined(
    log: &EventLog,
    args: &Args,
    head: u64,
    at: &Location,
    names: &[&str],
) -> anyhow::Result<Duration> {
    let store = ReadStore::open_at(at).await?;
    let projector = combined_projector(&store, log, args, names)?;
    let t = Instant::now();
    projector.run_until(head).await?;
    let elapsed = t.elapsed();
    for n in names {
        let cp = store.checkpoint(n).await?;
        anyhow::ensure!(cp >= head, "{n} stopped at {cp}, not {head}");
    }
    store.pool().close().await;
    Ok(elapsed)
}

/// One combined projector of `names` (as `crm project` takes them, built as `crm project
/// all` builds them) from `log` into `store`.
fn combined_projector(
    store: &ReadStore,
    log: &EventLog,
    args: &Args,
    names: &[&str],
) -> anyhow::Result<Projector<AnyProjection>> {
    let policy = Arc::new(crm_projections::policy::default_policy());
    let projections = names
        .iter()
        .map(|n| AnyProjection::by_name(n, &policy))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Projector::combined(
        projections,
        store.clone(),
        log.clone(),
        args.projector(),
    ))
}

const FOUR_VIEWS: [&str; 4] = [
    crm_projections::lifecycle::NAME,
    crm_projections::trust::NAME,
    crm_projections::health::NAME,
    crm_projections::renewals::NAME,
];

/// Every projection, as `crm project all` runs them: the four views and the audit index.
const FIVE_PROJECTIONS: [&str; 5] = crm_projections::any::ALL;

/// What a combined projector's row runs over: the scenario's server and log, its
/// arguments, and the head to project up to.
#[derive(Clone, Copy)]
struct Over<'a> {
    env: &'a Env,
    log: &'a EventLog,
    args: &'a Args,
    head: u64,
}

impl<'a> Over<'a> {
    fn of(env: &'a Env, log: &'a EventLog, args: &'a Args, head: u64) -> Self {
        Self {
            env,
            log,
            args,
            head,
        }
    }
}

/// One row: `names` through one combined projector into a fresh SQLite file called `tag`,
/// from checkpoint 0 to `head`, timed, with the process's CPU share and peak RSS.
async fn combined_sqlite_row(
    over: Over<'_>,
    tag: &str,
    names: &[&str],
    row_name: &str,
) -> anyhow::Result<Row> {
    let Over {
        env,
        log,
        args,
        head,
    } = over;
    reset_peak_rss();
    let mark = env.cpu.mark();
    let at = fresh_location(env, tag, None);
    let elapsed = project_combined(log, args, head, &at, names).await?;
    Ok(timed_row(
        row_name.into(),
        head,
        elapsed,
        mark.share(),
        row_rss(),
    ))
}

/// [`combined_sqlite_row`] of every projection ([`FIVE_PROJECTIONS`], as `crm project all`
/// runs them), against the raw ordered consume measured up front.
async fn five_projections_row(
    over: Over<'_>,
    tag: &str,
    row_name: &str,
    raw_consume: f64,
) -> anyhow::Result<Row> {
    let row = combined_sqlite_row(over, tag, &FIVE_PROJECTIONS, row_name).await?;
    Ok(row.vs(RAW_CONSUME, raw_consume))
}

/// The deployed projector (all five, one combined projector, as `crm project all` runs
/// it) following the command path live: caught up to `head` first, then running while
/// `args.commands` `record_activity` commands are appended through `Customers::submit` by
/// `args.concurrency` submitters, in a closed loop (`rate` `None`) or paced. The row's
/// throughput is the appended events per second over the time from the first command to
/// the commit that applies the last, and its latency, per event, the time from the
/// append's acknowledgement to the commit of the projector's batch holding it (its
/// checkpoint reaching the event): how stale the views are behind the writes.
async fn live_row(over: Over<'_>, rate: Option<f64>, name: &str) -> anyhow::Result<Row> {
    let (env, log, args) = (over.env, over.log, over.args);
    let store = ReadStore::open_at(&fresh_location(env, "project5-live", None)).await?;
    let projector = Arc::new(combined_projector(&store, log, args, &FIVE_PROJECTIONS)?);
    projector.run_until(over.head).await?;

    // Every change of the projector's checkpoint, with when it was seen.
    let mut status = projector.status();
    let commits = tokio::spawn(async move {
        let mut seen = Vec::new();
        while status.changed().await.is_ok() {
            let checkpoint = status.borrow_and_update().checkpoint;
            seen.push((checkpoint, Instant::now()));
        }
        seen
    });
    let shutdown = CancellationToken::new();
    let running = {
        let (projector, shutdown) = (projector.clone(), shutdown.clone());
        tokio::spawn(async move { projector.run(shutdown).await })
    };

    // Customers of their own, registered first (live too, not measured).
    let (customers, ids) = command_path(log, args);
    let n = ids.len() as u64;
    let reg = register_all(&customers, &ids, args.concurrency).await;
    anyhow::ensure!(
        reg.errors == 0,
        "live: registering failed: {:?}",
        reg.first_error
    );

    // Each appended event's stream sequence and when its append was acknowledged.
    let acks = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
        args.commands as usize,
    )));
    let activity: Arc<Command> = Arc::new(serde_json::from_value(activity_body())?);
    reset_peak_rss();
    let mark = env.cpu.mark();
    let start = Instant::now();
    let appended = {
        let (customers, ids, acks) = (customers.clone(), ids.clone(), acks.clone());
        measure::drive(args.commands, args.concurrency, rate, move |k, _| {
            let (customers, activity, acks) = (customers.clone(), activity.clone(), acks.clone());
            let id = ids[(k % n) as usize];
            async move {
                let done = customers
                    .submit(id, &activity, &SubmitOptions::now("bench"))
                    .await
                    .map_err(|e| e.to_string())?;
                let at = Instant::now();
                if let Ok(mut acks) = acks.lock() {
                    acks.push((done.receipt.stream_sequence, at));
                }
                Ok(())
            }
        })
        .await
    };
    anyhow::ensure!(
        appended.errors == 0,
        "live: appending failed: {:?}",
        appended.first_error
    );
    let last = log.head().await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.checkpoint(crm_projections::audit::NAME).await? < last
        || projector.status().borrow().checkpoint < last
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "live: the projector did not reach {last} within 120 s of the last append"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    let cpu = mark.share();
    let rss = row_rss();
    shutdown.cancel();
    running.await??;
    drop(projector);
    let commits = commits.await?;
    store.pool().close().await;

    // The lag of each event: from its ack to the first checkpoint at or past it.
    let mut acks = std::mem::take(&mut *acks.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    acks.sort_unstable_by_key(|(seq, _)| *seq);
    let mut lags = Vec::with_capacity(acks.len());
    let mut next = commits.iter().peekable();
    for (seq, acked) in &acks {
        while next.peek().is_some_and(|(cp, _)| cp < seq) {
            next.next();
        }
        let (_, committed) = next
            .peek()
            .with_context(|| format!("live: no checkpoint seen at or past {seq}"))?;
        let lag = committed.saturating_duration_since(*acked);
        lags.push(u32::try_from(lag.as_micros()).unwrap_or(u32::MAX));
    }
    Ok(Row::of(
        name,
        &Measured {
            ok: appended.ok,
            errors: 0,
            first_error: None,
            elapsed,
            latency: measure::Latency::of(lags),
            issued: None,
            cpu,
        },
        rss,
    ))
}

/// [`combined_sqlite_row`] measured `args.pairs` times, each right after the raw ordered
/// consume of the same count on the same server (each into a fresh file). The row is the
/// pair with the median ratio, compared with its own baseline; the note lists every pair.
async fn paired_combined_row(
    over: Over<'_>,
    tag: &str,
    names: &[&str],
    row_name: &str,
    up_front: f64,
) -> anyhow::Result<(Row, String)> {
    let Over {
        env, args, head, ..
    } = over;
    let client = env.connect("crm-bench-raw-pairs").await?;
    let n = args.pairs.max(1);
    let mut pairs = Vec::with_capacity(n);
    for i in 1..=n {
        eprintln!("  pair {i}/{n}: raw ordered consume, then the row");
        let consume = raw::consume_again(&client, head, env.cpu).await?;
        let row = combined_sqlite_row(over, &format!("{tag}-{i}"), names, row_name)
            .await?
            .vs(RAW_CONSUME_BESIDE, consume.rate());
        pairs.push(row);
    }
    let (row, listed) = median_pair(pairs);
    let note = format!(
        "`{row_name}`: {n} pairs, each the raw ordered consume of the same {head} messages and then the row, \
         in run order: {listed}; the row shows the pair with the median ratio. Against the raw ordered \
         consume measured up front, right after the messages were published (while the server still \
         holds the blocks it just wrote), the same row is {:.1} %",
        100.0 * row.rate / up_front.max(1e-9)
    );
    Ok((row, note))
}

/// Of rows each compared with its own baseline, the one with the median ratio (for an even
/// count the upper of the middle two), and every row's rate, baseline and ratio in the
/// order given.
fn median_pair(mut rows: Vec<Row>) -> (Row, String) {
    let baseline = |r: &Row| r.baseline.as_ref().map_or(0.0, |(_, b)| *b);
    let ratio = |r: &Row| r.rate / baseline(r).max(1e-9);
    let listed = rows
        .iter()
        .map(|r| {
            format!(
                "{:.0}/s against {:.0}/s = {:.1} %",
                r.rate,
                baseline(r),
                100.0 * ratio(r)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    rows.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let middle = rows.len() / 2;
    (rows.swap_remove(middle), listed)
}

pub(crate) fn timed_row(
    name: String,
    count: u64,
    elapsed: Duration,
    cpu: Option<CpuShare>,
    rss: Option<f64>,
) -> Row {
    Row::of(
        name,
        &Measured {
            ok: count,
            errors: 0,
            first_error: None,
            elapsed,
            latency: None,
            issued: None,
            cpu,
        },
        rss,
    )
}

/// `project`: each projection alone, then all together.
async fn project(args: &Args) -> anyhow::Result<Table> {
    eprintln!("[project] starting nats-server");
    let mut env = Env::start().await?;
    env.client_reads = args.client_reads;
    let log = env.log().await?;
    let (pre, demo_customers, pre_rss) = preload(args, &env, &log, args.events).await?;
    let head = log.head().await?;
    let size = raw::mean_payload(log.jetstream(), log.stream_name(), 1, head, 2_000).await?;
    eprintln!("[project] baselines");
    let b = env.baselines(args, size, head).await?;
    let raw_async = b.async_publish.rate();
    let raw_consume = b.consume.rate();
    let mut table = Table {
        scenario: format!(
            "project: projectors from checkpoint 0 to the head ({head} events of {demo_customers} demo customers), batch {}",
            args.batch_size
        ),
        ..Table::default()
    };
    table.rows.push(
        Row::of(
            format!("preload: demo histories via Customers::submit ({demo_customers} customers)"),
            &pre,
            pre_rss,
        )
        .vs(RAW_ASYNC, raw_async),
    );
    eprintln!("[project] reference reads of CRM_EVENTS");
    let crm_stream = log
        .jetstream()
        .get_stream(log.stream_name())
        .await
        .context("get CRM_EVENTS")?;
    let mark = env.cpu.mark();
    let same = raw::consume_ordered(&crm_stream, head)
        .await?
        .with_cpu(&mark);
    table.rows.push(
        Row::of(
            "ref: ordered consume of CRM_EVENTS itself (no decode)",
            &same,
            None,
        )
        .vs(RAW_CONSUME, raw_consume),
    );
    let mark = env.cpu.mark();
    let decoded = decode_all(&log, head).await?.with_cpu(&mark);
    let read_row = if args.client_reads {
        "ref: EventLog::read through async-nats (consume + decode envelopes, as a projector catches up)"
    } else {
        "ref: EventLog::read on a lean connection (consume + decode envelopes, as a projector catches up)"
    };
    table
        .rows
        .push(Row::of(read_row, &decoded, None).vs(RAW_CONSUME, raw_consume));
    if !args.client_reads {
        let mark = env.cpu.mark();
        let through_client = decode_all(&env.client_log().await?, head)
            .await?
            .with_cpu(&mark);
        table.rows.push(
            Row::of(
                "ref: EventLog::read through async-nats (the same, without the lean connection)",
                &through_client,
                None,
            )
            .vs(RAW_CONSUME, raw_consume),
        );
    }
    eprintln!("[project] a projector keeping no view");
    let row = no_views_row(&env, &log, args, head).await?;
    table.rows.push(row.vs(RAW_CONSUME, raw_consume));
    // Each projection alone, the audit index too.
    for v in VIEWS.into_iter().chain([View::Audit]) {
        eprintln!("[project] {} alone", v.name());
        let store =
            ReadStore::open_file(&env.dir.path().join(format!("alone-{}.sqlite", v.name())))
                .await?;
        reset_peak_rss();
        let mark = env.cpu.mark();
        let elapsed = v.run(store, log.clone(), args.projector(), head).await?;
        table.rows.push(
            timed_row(
                format!("project: {} alone", v.name()),
                head,
                elapsed,
                mark.share(),
                row_rss(),
            )
            .vs(RAW_CONSUME, raw_consume),
        );
    }
    eprintln!("[project] all four, one combined projector");
    let (row, paired) = paired_combined_row(
        Over::of(&env, &log, args, head),
        "project-combined",
        &FOUR_VIEWS,
        "project: the four views, one combined projector, one SQLite file",
        raw_consume,
    )
    .await?;
    table.rows.push(row);
    // What `crm project all` and `crm dev` deploy: the audit index in the same projector.
    eprintln!("[project] all five, one combined projector");
    let row = five_projections_row(
        Over::of(&env, &log, args, head),
        "project5-combined",
        "project: all five (the four views and the audit index), one combined projector, one SQLite file (as `crm project all` and `crm dev` run)",
        raw_consume,
    )
    .await?;
    table.rows.push(row);
    // What would take the audit index off the views' serial writer: a file of its own,
    // written by a projector of its own on the other core.
    eprintln!("[project] all five, the audit index in a file of its own");
    reset_peak_rss();
    let mark = env.cpu.mark();
    let views_at = fresh_location(&env, "project5-split-views", None);
    let audit_at = fresh_location(&env, "project5-split-audit", None);
    let t = Instant::now();
    tokio::try_join!(
        project_combined(&log, args, head, &views_at, &FOUR_VIEWS),
        project_combined(&log, args, head, &audit_at, &[crm_projections::audit::NAME]),
    )?;
    table.rows.push(
        timed_row(
            "project: all five, the four views combined in one SQLite file and the audit index in a file of its own, two concurrent projectors".into(),
            head,
            t.elapsed(),
            mark.share(),
            row_rss(),
        )
        .vs(RAW_CONSUME, raw_consume),
    );
    let row = postgres_combined_row(
        &env,
        &log,
        args,
        head,
        "project-combined",
        "project: all four, one combined projector, PostgreSQL (same machine)",
    )
    .await?;
    table
        .rows
        .extend(row.map(|r| r.vs(RAW_CONSUME, raw_consume)));
    eprintln!("[project] all four, one shared file");
    reset_peak_rss();
    let mark = env.cpu.mark();
    let elapsed = project_all(&env, &log, args, head, "shared", true).await?;
    table.rows.push(
        timed_row(
            "project: all four, four concurrent projectors, one SQLite file".into(),
            head,
            elapsed,
            mark.share(),
            row_rss(),
        )
        .vs(RAW_CONSUME, raw_consume),
    );
    eprintln!("[project] all four, one file each");
    reset_peak_rss();
    let mark = env.cpu.mark();
    let elapsed = project_all(&env, &log, args, head, "separate", false).await?;
    table.rows.push(
        timed_row(
            "project: all four concurrently, one SQLite file each".into(),
            head,
            elapsed,
            mark.share(),
            row_rss(),
        )
        .vs(RAW_CONSUME, raw_consume),
    );
    // Last, as they append to the log: the deployed projector live, behind the command
    // path at its maximum and at half of it.
    eprintln!("[project] all five live, behind a closed-loop append");
    let max = live_row(
        Over::of(&env, &log, args, head),
        None,
        &format!(
            "project: all five live behind the append closed loop ({} submitters), latency = append ack to the commit applying it",
            args.concurrency
        ),
    )
    .await?;
    let half = max.rate / 2.0;
    table.rows.push(max);
    eprintln!("[project] all five live, behind appends paced at {half:.0}/s");
    // The log has grown by the rows above: the next one catches up with all of it first.
    let head = log.head().await?;
    table.rows.push(
        live_row(
            Over::of(&env, &log, args, head),
            Some(half),
            &format!(
                "project: all five live behind appends paced at {half:.0}/s, latency = append ack to the commit applying it"
            ),
        )
        .await?,
    );
    table.rows.extend(baseline_rows(&b));
    table.notes = common_notes(args, size, &b);
    table.notes.push(
        "project rows: events of the log applied per second (each view reads every event); \
         fresh SQLite files (WAL, synchronous=NORMAL) in a temporary directory"
            .into(),
    );
    table.notes.push(paired);
    table.notes.extend(env.closing_notes());
    Ok(table)
}

/// `rebuild`: all four views from scratch over a larger log.
async fn rebuild(args: &Args) -> anyhow::Result<Table> {
    eprintln!("[rebuild] starting nats-server");
    let mut env = Env::start().await?;
    env.client_reads = args.client_reads;
    let log = env.log().await?;
    let (pre, demo_customers, pre_rss) = preload(args, &env, &log, args.rebuild_events).await?;
    let head = log.head().await?;
    let size = raw::mean_payload(log.jetstream(), log.stream_name(), 1, head, 2_000).await?;
    eprintln!("[rebuild] baselines");
    let b = env.baselines(args, size, head).await?;
    let raw_consume = b.consume.rate();
    let mut table = Table {
        scenario: format!(
            "rebuild: all four views from scratch, {head} events of {demo_customers} demo customers, batch {}",
            args.batch_size
        ),
        ..Table::default()
    };
    table.rows.push(
        Row::of(
            format!("preload: demo histories via Customers::submit ({demo_customers} customers)"),
            &pre,
            pre_rss,
        )
        .vs(RAW_ASYNC, b.async_publish.rate()),
    );
    if !args.combined_only {
        eprintln!("[rebuild] all four views, one shared file");
        reset_peak_rss();
        let mark = env.cpu.mark();
        let elapsed = project_all(&env, &log, args, head, "rebuild", true).await?;
        let row = timed_row(
            "rebuild: lifecycle + trust + health + renewals, four concurrent projectors, one SQLite file".into(),
            head,
            elapsed,
            mark.share(),
            row_rss(),
        )
        .vs(RAW_CONSUME, raw_consume);
        table.rows.push(row);
    }
    eprintln!("[rebuild] a projector keeping no view");
    let row = no_views_row(&env, &log, args, head).await?;
    table.rows.push(row.vs(RAW_CONSUME, raw_consume));
    eprintln!("[rebuild] all four views, one combined projector");
    let (row, paired) = paired_combined_row(
        Over::of(&env, &log, args, head),
        "rebuild-combined",
        &FOUR_VIEWS,
        "rebuild: lifecycle + trust + health + renewals, one combined projector, one SQLite file (as `crm replay all` runs)",
        raw_consume,
    )
    .await?;
    let rate = row.rate;
    table.rows.push(row);
    if !args.combined_only {
        eprintln!("[rebuild] the audit index too");
        let row = five_projections_row(
            Over::of(&env, &log, args, head),
            "rebuild5-combined",
            "rebuild: all four views and the audit index, one combined projector",
            raw_consume,
        )
        .await?;
        table.rows.push(row);
        let row = postgres_combined_row(
            &env,
            &log,
            args,
            head,
            "rebuild-combined",
            "rebuild: lifecycle + trust + health + renewals, one combined projector, PostgreSQL (same machine)",
        )
        .await?;
        table
            .rows
            .extend(row.map(|r| r.vs(RAW_CONSUME, raw_consume)));
        let mut stores = vec![(
            fresh_location(&env, "replay-process", None),
            "rebuild: `crm replay all` (all views and the audit index, shadow then swap) in a process of its own, SQLite; peak RSS is that process's",
        )];
        if let Some(url) = args.postgres_url.as_deref() {
            stores.push((
                fresh_location(&env, "replay-process", Some(url)),
                "rebuild: `crm replay all` (all views and the audit index, shadow then swap) in a process of its own, PostgreSQL; peak RSS is that process's (the server's is not counted)",
            ));
        }
        for (at, name) in stores {
            eprintln!("[rebuild] `crm replay all` in a process of its own into {at}");
            let (config, _) = crate::memory::write_config_at(&env, args, &at, "127.0.0.1:0")?;
            let t = Instant::now();
            let mut replay = crate::memory::CrmProcess::spawn(
                &config,
                &["replay", "all", "--create"],
                env.dir.path().join("replay.log"),
            )?;
            replay.wait().await?;
            let elapsed = t.elapsed();
            let store = ReadStore::open_at(&at).await?;
            let lowest = store.min_checkpoint(&crm_projections::any::ALL).await?;
            store.pool().close().await;
            drop_store(&at).await?;
            anyhow::ensure!(
                lowest >= head,
                "`crm replay all` stopped at {lowest}, not {head}"
            );
            table.rows.push(
                timed_row(name.into(), head, elapsed, None, replay.peak_mib())
                    .vs(RAW_CONSUME, raw_consume),
            );
        }
    }
    table.rows.extend(baseline_rows(&b));
    table.notes = common_notes(args, size, &b);
    table.notes.push(paired);
    table.notes.push(format!(
        "projected time for 1,000,000 events at this rate: {:.1} s (target ≤ 15 s); at the raw consume rate: {:.1} s",
        1_000_000.0 / rate.max(1e-9),
        1_000_000.0 / raw_consume.max(1e-9),
    ));
    table.notes.extend(env.closing_notes());
    Ok(table)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The paired row is the one with the median ratio to its own baseline, whatever its
    /// own rate, and the note lists every pair in run order.
    #[test]
    fn the_paired_row_is_the_one_with_the_median_ratio() {
        let row = |rate: f64, base: f64| {
            timed_row(
                format!("{rate}"),
                1_000,
                Duration::from_secs_f64(1_000.0 / rate),
                None,
                None,
            )
            .vs(RAW_CONSUME_BESIDE, base)
        };
        // Ratios 50 %, 25 %, 40 %: the median is the third row, not the middle rate.
        let (picked, listed) =
            median_pair(vec![row(100.0, 200.0), row(50.0, 200.0), row(80.0, 200.0)]);
        assert_eq!(picked.name, "80");
        assert_eq!(
            listed,
            "100/s against 200/s = 50.0 %; 50/s against 200/s = 25.0 %; 80/s against 200/s = 40.0 %"
        );
        // Two pairs: the upper of the two.
        let (picked, _) = median_pair(vec![row(90.0, 100.0), row(60.0, 100.0)]);
        assert_eq!(picked.name, "90");
        // One pair: itself.
        let (picked, _) = median_pair(vec![row(70.0, 140.0)]);
        assert_eq!(picked.name, "70");
    }

    /// The ceiling row reads and decodes the whole log, commits only its checkpoint, and
    /// fails like any projector on an event it cannot decode.
    #[tokio::test]
    async fn a_projector_keeping_no_view_reaches_the_head_and_writes_only_its_checkpoint()
    -> anyhow::Result<()> {
        let env = Env::start().await?;
        let log = env.log().await?;
        let args = Args::parse_from(["crm-bench", "project", "--concurrency", "8"]);
        preload(&args, &env, &log, 1_000).await?;
        let head = log.head().await?;
        anyhow::ensure!(head >= 1_000, "preloaded only {head} events");

        let row = no_views_row(&env, &log, &args, head).await?;
        assert_eq!(row.count, head);
        let store = ReadStore::open_file(&env.dir.path().join("no-views.sqlite")).await?;
        assert_eq!(store.checkpoint(NoViews.name()).await?, head);
        let rows = store.checkpoint_rows().await?;
        assert_eq!(
            rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            [NoViews.name()]
        );
        assert!(crm_projections::trust::dump(&store).await?.is_empty());
        assert!(
            crm_projections::trust::ledger_sums(&store)
                .await?
                .is_empty()
        );
        store.pool().close().await;

        // An undecodable event after the head: the next run (from the checkpoint) stops on
        // it instead of skipping it.
        log.jetstream()
            .publish(
                format!("{}.00.{}", crm_log::subject::EVENTS_PREFIX, Uuid::nil()),
                "not json".into(),
            )
            .await?
            .await?;
        let err = no_views_row(&env, &log, &args, head + 1)
            .await
            .expect_err("an undecodable event must fail the row");
        assert!(err.to_string().contains("undecodable"), "{err:#}");
        Ok(())
    }
}
