//! The `crm` binary as a user runs it: `crm dev` prints its addresses and key, serves the
//! API, stops on a signal and resumes on the same data dir; a projector process killed with
//! SIGKILL resumes to the view a rebuild produces.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

struct Dev {
    child: Child,
    http: String,
    key: String,
    nats: String,
}

fn start_dev(data_dir: &std::path::Path) -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(["dev", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut http, mut key, mut nats) = (String::new(), String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix("http: ") {
            http = v.to_owned();
        } else if let Some(v) = line.strip_prefix("api key: ") {
            key = v.to_owned();
        } else if let Some(v) = line.strip_prefix("nats: ") {
            nats = v.to_owned();
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
        key,
        nats,
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("process did not exit within 10s");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_dev_quickstart_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = start_dev(dir.path());
    let c = Uuid::now_v7();
    post(
        &dev,
        c,
        json!({"type": "register_customer", "name": "Acme"}),
    )
    .await;
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

    let mut again = start_dev(dir.path());
    assert_eq!(again.key, dev.key, "the dev key is reused");
    let (status, v) = get(&again, &format!("/v1/customers/{c}")).await;
    assert_eq!(status, 200);
    assert_eq!(v["version"], 3);
    assert_eq!(v["lifecycle"]["stage"], "growth");
    signal(&again.child, "TERM");
    assert!(wait_exit(&mut again.child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_process_killed_mid_stream_resumes_to_the_rebuilt_view() {
    use crm_e2e::{Env, read_all};
    use crm_log::{Customers, SubmitOptions};
    use crm_projections::lifecycle::{self, LifecycleProjection};
    use crm_projections::{Projector, ProjectorOptions, ReadStore};
    use std::sync::Arc;

    let env = Env::new().await;
    let log = env.log().await;
    let customers = Arc::new(Customers::new(log.clone(), 10_000, 8));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let customers = customers.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
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
                    customers.submit(c, &cmd, &SubmitOptions::now("gen")).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let head = log.head().await.unwrap();
    assert_eq!(head, 4_000);

    let views = env.path("proc.sqlite");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_crm"))
            .args(["project", "lifecycle"])
            .env("CRM_NATS__URL", env.nats.url())
            .env("CRM_STORE__SQLITE_PATH", &views)
            .env("CRM_PROJECTOR__BATCH_SIZE", "10")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    // Kill it as soon as it has committed something.
    let store = loop {
        if let Ok(store) = ReadStore::open_file(&views).await {
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

    let fresh = ReadStore::open_file(&env.path("fresh.sqlite"))
        .await
        .unwrap();
    Projector::new(
        LifecycleProjection,
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
