//! The `crm` binary as a user runs it: `crm dev` prints its addresses and key, serves the
//! API, stops on a signal and resumes on the same data dir; a projector process killed with
//! SIGKILL resumes to the view a rebuild produces.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

struct Dev {
    child: Child,
    http: String,
    grpc: String,
    key: String,
    nats: String,
}

/// A test that fails midway still stops its `crm dev` (and so the nats-server `crm dev`
/// started, which lives in a process group of its own): SIGTERM, then SIGKILL after 10 s.
impl Drop for Dev {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = rustix::process::kill_process(pid(&self.child), rustix::process::Signal::TERM);
            for _ in 0..100 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `crm dev` in a process group of its own, as a shell starts a foreground job.
fn start_dev(data_dir: &std::path::Path) -> Dev {
    start_dev_with(data_dir, &["--http-addr", "127.0.0.1:0"], &[])
}

/// `crm dev --data-dir <data_dir> <args>` with `envs` set.
fn start_dev_with(data_dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crm"))
        .arg("dev")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .envs(envs.iter().copied())
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut http, mut key, mut nats, mut grpc) =
        (String::new(), String::new(), String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix("http: ") {
            http = v.to_owned();
        } else if let Some(v) = line.strip_prefix("api key: ") {
            key = v.to_owned();
        } else if let Some(v) = line.strip_prefix("nats: ") {
            nats = v.to_owned();
        } else if let Some(v) = line.strip_prefix("grpc: ") {
            grpc = v.to_owned();
        } else if line.contains("ready") {
            break;
        }
    }
    assert!(http.starts_with("http://127.0.0.1:"), "{http}");
    assert!(nats.starts_with("nats://127.0.0.1:"), "{nats}");
    assert!(!key.is_empty());
    Dev {
        child,
        http,
        grpc,
        key,
        nats,
    }
}

/// A child process killed when the test lets go of it, panics included, so a failing test
/// leaves no projector running behind it.
struct Reaped(Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    use rustix::process::Signal;
    let sig = match sig {
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        other => panic!("no signal {other} in these tests"),
    };
    rustix::process::kill_process(pid(child), sig).unwrap();
}

fn pid(child: &Child) -> rustix::process::Pid {
    rustix::process::Pid::from_child(child)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    wait_exit_within(child, Duration::from_secs(10))
}

fn wait_exit_within(child: &mut Child, patience: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + patience;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("process did not exit within {patience:?}");
}

/// `writers` concurrent writers, each taking `per_writer` new customers through register,
/// sign, renew and terminate: 4 events per customer.
async fn write_load(
    customers: std::sync::Arc<crm_log::Customers>,
    writers: usize,
    per_writer: usize,
) {
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let customers = customers.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let c = crm_domain::CustomerId::new(Uuid::now_v7());
                let cmds: Vec<Value> = vec![
                    json!({"type": "register_customer", "name": format!("C{i}")}),
                    json!({"type": "sign_contract", "contract_id": "c1", "value_minor": 10,
                           "currency": "EUR", "starts_on": "2025-01-01", "ends_on": "2025-12-31"}),
                    json!({"type": "renew_contract", "contract_id": "c1", "new_ends_on": "2026-12-31"}),
                    json!({"type": "terminate_contract", "contract_id": "c1"}),
                ];
                for cmd in cmds {
                    let cmd: crm_domain::Command = serde_json::from_value(cmd).unwrap();
                    customers
                        .submit(c, &cmd, &crm_log::SubmitOptions::now("gen"))
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn post(dev: &Dev, c: Uuid, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/customers/{c}/commands", dev.http))
        .bearer_auth(&dev.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

async fn get(dev: &Dev, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", dev.http))
        .bearer_auth(&dev.key)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// `crm dev` on `data_dir`, with one customer registered through its API.
async fn dev_with_a_customer(data_dir: &std::path::Path, name: &str) -> (Dev, Uuid) {
    let dev = start_dev(data_dir);
    let c = Uuid::now_v7();
    post(&dev, c, json!({"type": "register_customer", "name": name})).await;
    (dev, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_dev_quickstart_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, c) = dev_with_a_customer(dir.path(), "Acme").await;
    post(
        &dev,
        c,
        json!({"type": "sign_contract", "contract_id": "c1", "value_minor": 100000,
               "currency": "EUR", "starts_on": "2025-01-01", "ends_on": "2025-12-31"}),
    )
    .await;
    post(
        &dev,
        c,
        json!({"type": "delay_service", "contract_id": "c1", "service_id": "s1",
               "promised_on": "2025-03-01", "days_late": 2}),
    )
    .await;
    let (status, v) = get(&dev, &format!("/v1/customers/{c}")).await;
    assert_eq!(status, 200);
    assert_eq!(v["lifecycle"]["stage"], "growth");
    assert_eq!(v["version"], 3);
    let (status, _) = get(&dev, "/readyz").await;
    assert_eq!(status, 200);

    // An independent NATS client sees the three events on the stream.
    let client = async_nats::connect(dev.nats.as_str()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("CRM_EVENTS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 3);

    signal(&dev.child, "INT");
    assert!(wait_exit(&mut dev.child).success());

    // The keys are readable by their owner alone.
    for key_file in ["dev-api-key", "audit-signing-key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(key_file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key_file}");
    }

    let mut again = start_dev(dir.path());
    assert_eq!(again.key, dev.key, "the dev key is reused");
    let (status, v) = get(&again, &format!("/v1/customers/{c}")).await;
    assert_eq!(status, 200);
    assert_eq!(v["version"], 3);
    assert_eq!(v["lifecycle"]["stage"], "growth");

    // A client that never finishes its request (a stalled upload, an export nobody reads)
    // holds the stop up for the grace period at most.
    let addr = again.http.trim_start_matches("http://").to_owned();
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(
        &mut stalled,
        format!(
            "POST /v1/customers/{c}/commands HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: 1000\r\n\r\n{{\"type\":",
            again.key
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let asked = std::time::Instant::now();
    // Ctrl-C in a terminal: SIGINT to the whole foreground process group.
    rustix::process::kill_process_group(pid(&again.child), rustix::process::Signal::INT).unwrap();
    // The embedded nats-server is not in that group: it keeps serving the services that
    // are still draining, and is stopped last.
    std::thread::sleep(Duration::from_millis(1_000));
    let client = async_nats::connect(again.nats.as_str()).await.unwrap();
    client
        .flush()
        .await
        .expect("nats-server still up while crm drains");
    drop(client);
    assert!(wait_exit_within(&mut again.child, Duration::from_secs(25)).success());
    assert!(
        asked.elapsed() >= Duration::from_secs(5),
        "the stop did not wait for the request in flight: {:?}",
        asked.elapsed()
    );
    drop(stalled);
    let nats_addr = again.nats.trim_start_matches("nats://").to_owned();
    assert!(
        std::net::TcpStream::connect(&nats_addr).is_err(),
        "nats-server left running after crm dev stopped"
    );
}

/// `crm dev` killed without its clean-up (SIGKILL, the OOM killer) leaves its nats-server
/// running, holding the store's lock; the next `crm dev` on that data dir stops it and
/// starts, with the data kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_dev_after_a_sigkill_stops_the_server_it_left_and_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, c) = dev_with_a_customer(dir.path(), "Left").await;
    rustix::process::kill_process(pid(&dev.child), rustix::process::Signal::KILL).unwrap();
    let _ = dev.child.wait();
    let left = dev.nats.trim_start_matches("nats://").to_owned();
    assert!(
        std::net::TcpStream::connect(&left).is_ok(),
        "the killed crm dev's nats-server is still running (the case under test)"
    );

    let mut again = start_dev(dir.path());
    let (status, v) = get(&again, &format!("/v1/customers/{c}")).await;
    assert_eq!((status, v["version"].as_u64()), (200, Some(1)), "{v}");
    // A second `crm dev` on the data dir in use is refused, and leaves the first's
    // nats-server alone.
    let second = Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(["dev", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another crm dev is running on"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let (status, _) = get(&again, "/readyz").await;
    assert_eq!(status, 200, "the first crm dev still serves");
    if again.nats != dev.nats {
        assert!(
            std::net::TcpStream::connect(&left).is_err(),
            "the left-over nats-server still runs"
        );
    }
    signal(&again.child, "INT");
    assert!(wait_exit(&mut again.child).success());
    assert!(
        !dir.path().join("nats-server.pid").exists(),
        "a clean stop removes the pid file"
    );
}

/// Without `--http-addr`, `crm dev` listens where the configuration says (here
/// `CRM_GATEWAY__HTTP_ADDR`), like `crm gateway`; the flag wins over it.
#[tokio::test]
async fn crm_dev_takes_its_http_address_from_the_environment_unless_flagged() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let from_env = free();
    let grpc_from_env = free();
    let mut dev = start_dev_with(
        dir.path(),
        &[],
        &[
            ("CRM_GATEWAY__HTTP_ADDR", from_env.as_str()),
            ("CRM_GATEWAY__GRPC_ADDR", grpc_from_env.as_str()),
        ],
    );
    assert_eq!(dev.http, format!("http://{from_env}"));
    assert_eq!(dev.grpc, format!("http://{grpc_from_env}"), "gRPC too");
    let (status, _) = get(&dev, "/readyz").await;
    assert_eq!(status, 200);
    signal(&dev.child, "INT");
    assert!(wait_exit(&mut dev.child).success());

    let flagged = free();
    let mut dev = start_dev_with(
        dir.path(),
        &["--http-addr", flagged.as_str()],
        &[("CRM_GATEWAY__HTTP_ADDR", from_env.as_str())],
    );
    assert_eq!(dev.http, format!("http://{flagged}"));
    // A closed terminal (SIGHUP) stops it cleanly too.
    signal(&dev.child, "HUP");
    assert!(wait_exit(&mut dev.child).success());
}

/// `crm schedule` (one per deployment) signs chain-head checkpoints every
/// `audit.checkpoint_interval_secs`, the first at start, and `crm audit verify` accepts them.
#[tokio::test]
async fn the_scheduler_signs_chain_head_checkpoints() {
    use crm_projections::audit;
    use std::sync::Arc;

    let env = crm_e2e::Env::new().await;
    let log = env.log().await;
    write_load(
        Arc::new(crm_log::Customers::new(log.clone(), 1_000, 8)),
        2,
        5,
    )
    .await;
    let head = log.head().await.unwrap();
    assert_eq!(head, 40);
    let store = env.audit_index("views.sqlite", &log, head).await;
    assert!(audit::checkpoints(&store).await.unwrap().is_empty());

    let key = "a-long-random-test-signing-key";
    let crm = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_crm"));
        c.args(args)
            .env("CRM_NATS__URL", env.nats.url())
            .envs(env.store_env("views.sqlite"))
            .env("CRM_AUDIT__SIGNING_KEY", key)
            .env("CRM_AUDIT__CHECKPOINT_INTERVAL_SECS", "3600");
        c
    };
    let mut scheduler = Reaped(
        crm(&["schedule"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut signed = Vec::new();
    for _ in 0..600 {
        signed = audit::checkpoints(&store).await.unwrap();
        if !signed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&scheduler, "TERM");
    assert!(wait_exit(&mut scheduler).success());
    assert_eq!(signed.len(), 1, "{signed:?}");
    assert_eq!((signed[0].head_sequence, signed[0].customers), (head, 10));
    let heads = crm_log::audit::SignedHeads::from(&signed[0]);
    assert!(crm_log::audit::signature_valid(key.as_bytes(), &heads));
    assert!(!crm_log::audit::signature_valid(b"another key", &heads));

    let out = crm(&["audit", "verify"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `audit query`: at most --limit events, in log order; 0 is every match (as over
    // HTTP and gRPC).
    for (limit, lines) in [("7", 7), ("0", 40), ("500", 40)] {
        let out = crm(&["audit", "query", "--limit", limit]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seqs: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["stream_sequence"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, (1..=lines).collect::<Vec<u64>>(), "--limit {limit}");
    }
    let ghost = uuid::Uuid::now_v7().to_string();
    let out = crm(&["audit", "verify", "--customer", &ghost])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a customer without events verified");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no events in the log"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tools that only read the log (`crm audit`, `crm status`, `crm replay`) pointed at a
/// NATS server without the stream (another team's server, a forgotten `CRM_NATS__URL`)
/// refuse with a clear message and leave no stream behind; `crm audit verify` must not
/// report an empty log as verified.
#[tokio::test]
async fn read_only_tools_refuse_a_server_without_the_stream() {
    let env = crm_e2e::Env::new().await;
    // Runs `crm <args>` against the test's server and store.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_crm"))
            .args(args)
            .env("CRM_NATS__URL", env.nats.url())
            .envs(env.store_env("views.sqlite"))
            .output()
            .unwrap()
    };
    // It must fail, with `expected` in its message.
    let refused = |args: &[&str], expected: &str| {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    };
    for args in [
        &["audit", "verify"][..],
        &["audit", "query"],
        &["status"],
        &["replay", "lifecycle"],
    ] {
        refused(args, "no stream CRM_EVENTS on the NATS server");
    }
    let client = async_nats::connect(env.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    assert!(
        js.get_stream("CRM_EVENTS").await.is_err(),
        "a read-only tool created the stream"
    );

    // With the stream there, the tools that only read the store refuse a store path
    // where there is none, instead of creating an empty store and reporting from it
    // (`audit verify` passing with no checkpoint to compare with).
    let _log = env.log().await;
    for args in [
        &["audit", "verify"][..],
        &["status"],
        &["replay", "lifecycle"],
    ] {
        refused(args, "no read store at");
    }
    assert!(
        !env.path("views.sqlite").exists(),
        "a read-only tool created the read store"
    );
    // A view as of a point in time goes into its own file and needs no live store: none
    // is made.
    // It must succeed; its stdout.
    let succeeds = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let q1 = env.path("q1.sqlite").display().to_string();
    succeeds(&["replay", "lifecycle", "--as-of", "0", "--into", &q1]);
    assert!(env.path("q1.sqlite").exists());
    assert!(
        !env.path("views.sqlite").exists(),
        "an as-of replay created the live store"
    );
    // A first replay into a store that is not there yet says so with `--create`.
    let out = succeeds(&["replay", "lifecycle", "--create"]);
    assert!(out.contains("lifecycle: rebuilt to sequence"), "{out}");
    assert!(env.path("views.sqlite").exists());
}

/// Logs written to a pipe (a file, a collector) carry no terminal colour codes.
#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let env = crm_e2e::Env::on(crm_e2e::Db::Sqlite).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(["project", "lifecycle"])
        .env("CRM_NATS__URL", env.nats.url())
        .envs(env.store_env("logs.sqlite"))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Reaped)
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut logged = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let info = line.contains("INFO");
        logged.push(line);
        if info {
            break;
        }
    }
    // Stopped once it has logged, then read to the end (the shutdown's lines count too)
    // only after it exited, so a process that does not stop fails the test, not hangs it.
    signal(&child, "TERM");
    let status = wait_exit(&mut child);
    logged.extend(lines.map(Result::unwrap));
    let logged = logged.join("\n");
    assert!(status.success(), "{status}: {logged}");
    assert!(logged.contains("INFO"), "no info line was logged: {logged}");
    assert!(
        !logged.contains('\u{1b}'),
        "escape codes in piped logs: {logged:?}"
    );
}

crm_e2e::on_both_stores!(
    projector_process_killed_mid_stream_resumes_to_the_rebuilt_view,
    partitioned_projectors_share_the_partitions_and_fail_over_when_one_is_killed,
    a_commit_with_a_stale_lease_fence_is_refused,
);

async fn projector_process_killed_mid_stream_resumes_to_the_rebuilt_view(db: crm_e2e::Db) {
    use crm_e2e::{Env, read_all};
    use crm_log::Customers;
    use crm_projections::lifecycle::{self, LifecycleProjection};
    use crm_projections::{Projector, ProjectorOptions, ReadStore};
    use std::sync::Arc;

    let env = Env::on(db).await;
    let log = env.log().await;
    let customers = Arc::new(Customers::new(log.clone(), 10_000, 8));
    write_load(customers, 4, 250).await;
    let head = log.head().await.unwrap();
    assert_eq!(head, 4_000);

    let views = env.store_env("proc.sqlite");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_crm"))
            .args(["project", "lifecycle"])
            .env("CRM_NATS__URL", env.nats.url())
            .envs(views.clone())
            .env("CRM_PROJECTOR__BATCH_SIZE", "10")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Reaped)
            .unwrap()
    };
    let mut first = spawn();
    // Kill it as soon as it has committed something.
    let store = loop {
        if let Ok(store) = ReadStore::open_at(&env.location("proc.sqlite")).await {
            break store;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Start-up (process, connection, migrations) can take seconds on a loaded machine.
    for _ in 0..15_000 {
        let killed_at = store.checkpoint("lifecycle").await.unwrap();
        if killed_at > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    signal(&first, "KILL");
    wait_exit(&mut first);
    let after_kill = store.checkpoint("lifecycle").await.unwrap();
    assert!(after_kill > 0, "the projector never committed");
    assert!(
        after_kill < head,
        "the projector finished before it could be killed"
    );

    let mut second = spawn();
    crm_e2e::wait_for_checkpoint(&store, "lifecycle", head).await;
    signal(&second, "TERM");
    assert!(wait_exit(&mut second).success());

    // `crm status` reports what happened: lifecycle caught up, the others never ran.
    let out = Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(["status", "--json"])
        .env("CRM_NATS__URL", env.nats.url())
        .envs(views.clone())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    for p in status["projections"].as_array().unwrap() {
        assert_eq!(p["log_head"], head, "{p}");
        if p["name"] == "lifecycle" {
            assert_eq!(p["checkpoint"], head, "{p}");
            assert_eq!(p["lag_events"], 0, "{p}");
            assert_eq!(p["state"], "live", "{p}");
        } else {
            assert_eq!(p["checkpoint"], 0, "{p}");
            assert_eq!(p["lag_events"], head, "{p}");
            assert_eq!(p["state"], "never_ran", "{p}");
            assert!(p["lag_seconds"].as_f64().unwrap() > 0.0, "{p}");
        }
    }
    let table = Command::new(env!("CARGO_BIN_EXE_crm"))
        .arg("status")
        .env("CRM_NATS__URL", env.nats.url())
        .envs(views.clone())
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("PROJECTION"), "{table}");
    assert!(table.contains("never_ran"), "{table}");

    let fresh = env.open_store("fresh.sqlite").await;
    Projector::new(
        LifecycleProjection::new(Arc::new(crm_projections::policy::default_policy())),
        fresh.clone(),
        log.clone(),
        ProjectorOptions::default(),
    )
    .run_until(head)
    .await
    .unwrap();
    assert_eq!(
        lifecycle::dump(&store).await.unwrap(),
        lifecycle::dump(&fresh).await.unwrap()
    );
    assert_eq!(
        lifecycle::dump_transitions(&store).await.unwrap(),
        lifecycle::dump_transitions(&fresh).await.unwrap()
    );
    assert_eq!(read_all(&log).await.len() as u64, head);
}

/// Who holds each partition lease of the `all` group, by process id.
async fn lease_holders(log: &crm_log::EventLog) -> std::collections::BTreeMap<u32, u32> {
    let Ok(kv) = log.jetstream().get_key_value("crm_leases_all").await else {
        return Default::default();
    };
    crm_log::lease::holders(&kv)
        .await
        .unwrap()
        .into_iter()
        .map(|(p, owner)| (p, owner.split('-').nth(1).unwrap().parse().unwrap()))
        .collect()
}

/// Polls `ok` until it holds; on timeout fails with `what` and the tail of each log file.
async fn wait_until<F: AsyncFnMut() -> bool>(
    what: &str,
    patience: Duration,
    logs: &[std::path::PathBuf],
    mut ok: F,
) {
    let deadline = tokio::time::Instant::now() + patience;
    while !ok().await {
        if tokio::time::Instant::now() >= deadline {
            let mut tails = String::new();
            for log in logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                tails.push_str(&format!("\n--- {} ---\n{tail}", log.display()));
            }
            panic!("timed out waiting for {what}{tails}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn partitioned_projectors_share_the_partitions_and_fail_over_when_one_is_killed(
    db: crm_e2e::Db,
) {
    use crm_e2e::Env;
    use crm_projections::projector::partition_checkpoint;
    use std::sync::Arc;

    let env = Env::on(db).await;
    let log = env.log().await;
    let customers = Arc::new(crm_log::Customers::new(log.clone(), 10_000, 8));
    let views = env.store_env("views.sqlite");
    let logs = [env.path("a.log"), env.path("b.log")];
    let spawn = |log: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_crm"))
            .args(["project", "all"])
            .env("CRM_NATS__URL", env.nats.url())
            .envs(views.clone())
            .env("CRM_PROJECTOR__PARTITIONED", "true")
            // Short enough for a quick fail-over, long enough for a loaded CI machine.
            .env("CRM_PROJECTOR__LEASE_TTL_MS", "3000")
            .env("CRM_PROJECTOR__BATCH_SIZE", "20")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .map(Reaped)
            .unwrap()
    };
    let mut a = spawn(&logs[0]);
    let mut b = spawn(&logs[1]);
    let (pa, pb) = (a.id(), b.id());

    // Both join and split the 16 partitions between them.
    wait_until(
        "both projectors to hold 8 partitions",
        Duration::from_secs(60),
        &logs,
        async || {
            let h = lease_holders(&log).await;
            h.len() == 16
                && h.values().filter(|o| **o == pa).count() == 8
                && h.values().filter(|o| **o == pb).count() == 8
        },
    )
    .await;
    let of_a: Vec<u32> = lease_holders(&log)
        .await
        .into_iter()
        .filter_map(|(p, o)| (o == pa).then_some(p))
        .collect();

    // Load runs while `a` is killed.
    let load = tokio::spawn(write_load(customers.clone(), 4, 150));
    let store = env.open_store("views.sqlite").await;
    let first = partition_checkpoint("lifecycle", of_a[0]);
    wait_until("a to commit", Duration::from_secs(60), &logs, async || {
        store.checkpoint(&first).await.unwrap() > 0
    })
    .await;
    signal(&a, "KILL");
    wait_exit(&mut a);
    load.await.unwrap();
    let head = log.head().await.unwrap();
    assert_eq!(head, 2_400);

    // Its partitions move to the survivor once its leases expire.
    wait_until(
        "b to hold every partition",
        Duration::from_secs(30),
        &logs,
        async || {
            let h = lease_holders(&log).await;
            h.len() == 16 && h.values().all(|o| *o == pb)
        },
    )
    .await;
    for name in crm_projections::any::ALL {
        crm_e2e::wait_for_checkpoint_within(&store, name, head, Duration::from_secs(60)).await;
    }
    // The views equal a fresh rebuild from the log.
    let fresh = env.fresh_views("fresh.sqlite", &log, head).await;
    assert_eq!(
        crm_e2e::dump_views(&store).await,
        crm_e2e::dump_views(&fresh).await
    );

    // A clean stop gives the leases back.
    signal(&b, "TERM");
    assert!(wait_exit(&mut b).success());
    assert!(lease_holders(&log).await.is_empty());
}

async fn a_commit_with_a_stale_lease_fence_is_refused(db: crm_e2e::Db) {
    use crm_e2e::Env;
    use crm_projections::lifecycle::LifecycleProjection;
    use crm_projections::projector::PartitionShare;
    use crm_projections::{ProjectionError, Projector, ProjectorOptions};
    use std::sync::Arc;

    let env = Env::on(db).await;
    let log = env.log().await;
    let customers = Arc::new(crm_log::Customers::new(log.clone(), 10_000, 8));
    write_load(customers.clone(), 1, 10).await;
    let store = env.open_store("views.sqlite").await;
    let total = log.partitions();
    let projector = |fence: u64| {
        Projector::new(
            LifecycleProjection::new(Arc::new(crm_projections::policy::default_policy())),
            store.clone(),
            log.clone(),
            ProjectorOptions {
                share: Some(PartitionShare {
                    group: "lifecycle".into(),
                    total,
                    held: (0..total).map(|p| (p, fence)).collect(),
                }),
                ..ProjectorOptions::default()
            },
        )
    };
    // The holder with fence 7 commits; then the one it replaced (fence 5) tries to.
    projector(7).run_until(20).await.unwrap();
    assert_eq!(store.checkpoint("lifecycle").await.unwrap(), 20);
    write_load(customers, 1, 1).await;
    let err = projector(5).run_until(24).await.unwrap_err();
    assert!(
        matches!(err, ProjectionError::LeaseLost { fence: 5, .. }),
        "{err}"
    );
    assert_eq!(store.checkpoint("lifecycle").await.unwrap(), 20);
    projector(7).run_until(24).await.unwrap();
    assert_eq!(store.checkpoint("lifecycle").await.unwrap(), 24);
}

/// `crm replay all` killed with SIGKILL in the middle of a batch leaves its SQLite shadow
/// with the batch half-written and its rollback journal behind (a shadow is written without
/// syncs, in a rollback journal rather than WAL). The next `crm replay all` rolls the torn
/// batch back, resumes from the shadow's last commit, and swaps in exactly the views and
/// audit rows a build from scratch produces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_killed_mid_batch_resumes_its_shadow_to_the_views_built_from_scratch() {
    use crm_e2e::{Env, dump_views};
    use crm_log::Customers;
    use crm_projections::store::Location;
    use sqlx::Connection;
    use std::sync::Arc;

    let env = Env::new().await;
    let log = env.log().await;
    write_load(Arc::new(Customers::new(log.clone(), 10_000, 8)), 4, 250).await;
    let head = log.head().await.unwrap();
    assert_eq!(head, 4_000);
    let views = env.store_env("live.sqlite");
    let Location::Sqlite(shadow) = env.location("live.sqlite").shadow("all") else {
        unreachable!("a SQLite store's shadow is a file")
    };
    let journal = std::path::PathBuf::from(format!("{}-journal", shadow.display()));
    let replay = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crm"));
        cmd.args(["replay", "all", "--create"])
            .env("CRM_NATS__URL", env.nats.url())
            .envs(views.clone())
            .env("CRM_PROJECTOR__BATCH_SIZE", "5")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };

    let mut first = Reaped(replay().spawn().unwrap());
    // Kill it inside a batch a quarter of the way into its pass. The check holds a read
    // transaction on the shadow while it looks at the journal and kills: a writer cannot
    // commit while a reader holds the file, so a journal found holding pages then is the
    // torn batch's, and stays behind.
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=ro", shadow.display());
    let mut killed_at = None;
    for _ in 0..20_000 {
        if std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0)
            && let Ok(mut conn) = sqlx::AnyConnection::connect(&url).await
        {
            if let Ok(mut read) = conn.begin().await {
                let cp: Result<Option<(i64,)>, _> = sqlx::query_as(
                    "SELECT MIN(last_sequence) FROM projection_checkpoints \
                     WHERE name IN ('audit', 'lifecycle', 'trust', 'health', 'renewals') \
                     HAVING COUNT(*) = 5",
                )
                .fetch_optional(&mut *read)
                .await;
                if let Ok(Some((cp,))) = cp
                    && (1_000..head as i64).contains(&cp)
                    && std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0)
                {
                    signal(&first, "KILL");
                    killed_at = Some(cp);
                }
                let _ = read.rollback().await;
            }
            let _ = conn.close().await;
            if killed_at.is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let status = wait_exit(&mut first);
    let killed_at = killed_at.expect("never saw a batch in progress a quarter of the way in");
    assert!(
        !status.success(),
        "the first replay was not killed: {status}"
    );
    assert!(shadow.exists(), "the killed replay's shadow is gone");
    let torn = std::fs::metadata(&journal).map_or(0, |m| m.len());
    assert!(
        torn > 0,
        "killed at checkpoint {killed_at}, the shadow's journal is empty"
    );

    let second = replay().output().unwrap();
    let logged = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{logged}");
    assert!(
        logged.contains("resuming an interrupted rebuild"),
        "the second replay did not resume the shadow: {logged}"
    );
    assert!(!shadow.exists(), "the swapped-in shadow was left behind");
    assert!(!journal.exists(), "the shadow's journal was left behind");

    let live = env.open_store("live.sqlite").await;
    let fresh = env.fresh_views("fresh.sqlite", &log, head).await;
    for name in ["audit", "lifecycle", "trust", "health", "renewals"] {
        assert_eq!(live.checkpoint(name).await.unwrap(), head, "{name}");
    }
    let live_views = dump_views(&live).await;
    assert!(!live_views.is_empty());
    assert_eq!(live_views, dump_views(&fresh).await);
    let audit_rows = |store: crm_projections::ReadStore| async move {
        let rows: Vec<(i64, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT sequence, customer_id, event_type, actor, occurred_us, recorded_us \
             FROM audit_index ORDER BY sequence",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        rows
    };
    let rows = audit_rows(live.clone()).await;
    assert_eq!(rows.len() as u64, head);
    assert_eq!(rows, audit_rows(fresh.clone()).await);
}
