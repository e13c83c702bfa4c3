//! A 3-node NATS cluster on loopback with a 3-replica stream: kill one node during a load;
//! every acknowledged command is in the log exactly once and the views converge.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crm_e2e::{App, Env, read_all};
use crm_log::server::NatsCluster;
use crm_log::{EventLog, NatsConfig, StreamSettings, SubmitOptions};
use crm_projections::ReadStore;
use crm_projections::rebuild;
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_node_loses_no_acknowledged_command() {
    // Every step below is bounded; this bounds their sum, so a stuck step fails the test
    // instead of holding up the whole suite.
    tokio::time::timeout(Duration::from_secs(480), kill_a_node_under_load())
        .await
        .expect("the fail-over test did not finish within 8 minutes");
}

async fn kill_a_node_under_load() {
    let mut cluster = NatsCluster::start(3).await.unwrap();
    let settings = StreamSettings {
        replicas: 3,
        ..StreamSettings::default()
    };
    // Wait for the JetStream meta leader, then create the replicated stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let client = crm_log::connect(&NatsConfig::url(cluster.urls())).await?;
            EventLog::open(client, &settings).await
        };
        match attempt.await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("cluster never became ready: {e}"),
        }
    }

    let env = Env::new().await; // only for its temp dir and config shape
    let mut cfg = env.config("cluster-views.sqlite");
    cfg.nats.url = cluster.urls();
    cfg.stream = settings.clone();
    let app = Arc::new(App::start_with(cfg, true).await);

    // Acknowledged commands so far, across the writers.
    let acks = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..6 {
        let app = app.clone();
        let acks = acks.clone();
        writers.push(tokio::spawn(async move {
            let c = crm_domain::CustomerId::new(Uuid::now_v7());
            let mut acked = Vec::new();
            let register: crm_domain::Command = serde_json::from_value(
                json!({"type": "register_customer", "name": format!("W{w}")}),
            )
            .unwrap();
            // The registration carries a key too: one written but not acknowledged when the
            // node died replays on the retry instead of being refused as a second one.
            let mut opts = SubmitOptions::now("cluster-test");
            opts.meta.idempotency_key = Some(format!("w{w}-register"));
            let mut last = None;
            for _attempt in 0..50 {
                match app.parts.customers.submit(c, &register, &opts).await {
                    Ok(s) => {
                        acked.push(s.receipt);
                        acks.fetch_add(1, Ordering::Relaxed);
                        last = None;
                        break;
                    }
                    Err(e) => {
                        last = Some(e.to_string());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            if let Some(e) = last {
                panic!("writer {w} could not register its customer: {e}");
            }
            for i in 0..80 {
                let cmd: crm_domain::Command =
                    serde_json::from_value(json!({"type": "respond_to_request",
                    "request_id": format!("r{i}"), "response_minutes": 10}))
                    .unwrap();
                let mut opts = SubmitOptions::now("cluster-test");
                // A retried command must not be written twice, whatever the server saw.
                opts.meta.idempotency_key = Some(format!("w{w}-r{i}"));
                let mut last = None;
                // Up to a minute of retries: a leader election on a loaded 2-core machine
                // (three servers and the test on it) can leave the stream unavailable
                // ("no stream found") for well over 5 s.
                for _attempt in 0..600 {
                    match app.parts.customers.submit(c, &cmd, &opts).await {
                        Ok(s) => {
                            acked.push(s.receipt);
                            acks.fetch_add(1, Ordering::Relaxed);
                            last = None;
                            break;
                        }
                        Err(e) => {
                            // Retried with the same key while the cluster fails over.
                            last = Some(e.to_string());
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                if let Some(e) = last {
                    panic!("writer {w}: command r{i} never acknowledged: {e}");
                }
            }
            acked
        }));
    }
    // Kill the stream's leader in the middle of the load: once a fifth of the commands
    // are acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while acks.load(Ordering::Relaxed) < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the load never got going"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = app
        .parts
        .log
        .jetstream()
        .get_stream(&settings.name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a replicated stream has a leader");
    let killed = cluster
        .node_named(&leader)
        .unwrap_or_else(|| panic!("leader {leader:?} is not one of the nodes"));
    cluster.kill(killed).await;
    let at_kill = acks.load(Ordering::Relaxed);

    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    // Every command acknowledged (none given up), many of them after the fail-over.
    assert_eq!(acked.len(), 6 * 81);
    assert!(
        at_kill < 6 * 81 - 100,
        "the load was nearly over when the leader died ({at_kill} acknowledged)"
    );
    let survivor = (killed + 1) % 3;

    // A new JetStream meta leader may still be being elected: retry the stream lookup.
    let mut tries = 0;
    let log = loop {
        let attempt = async {
            let client = crm_log::connect(&NatsConfig::url(cluster.url(survivor))).await?;
            EventLog::open(client, &settings).await
        };
        match attempt.await {
            Ok(log) => break log,
            Err(e) if tries < 60 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("stream unavailable after fail-over: {e}"),
        }
    };
    let events = read_all(&log).await;
    let mut count: HashMap<String, usize> = HashMap::new();
    for e in &events {
        *count.entry(e.envelope.event_id.to_string()).or_default() += 1;
    }
    for r in &acked {
        assert_eq!(
            count.get(&r.event_id.to_string()),
            Some(&1),
            "acknowledged event {} not exactly once",
            r.event_id
        );
    }
    // Idempotency keys are unique in the log: no command was written twice.
    let mut keys: HashMap<String, usize> = HashMap::new();
    for e in &events {
        if let Some(k) = &e.envelope.idempotency_key {
            *keys
                .entry(format!("{}:{k}", e.envelope.customer_id))
                .or_default() += 1;
        }
    }
    assert!(
        keys.values().all(|n| *n == 1),
        "a command was written twice"
    );
    // A refusal on the replicated stream is confirmed with the stream's leader first (a
    // follower may answer direct gets from behind): a cold cache, after the fail-over,
    // still refuses a second registration, with the domain's code.
    assert!(log.replicated());
    let cold = crm_log::Customers::new(log.clone(), 100, 8);
    let register: crm_domain::Command =
        serde_json::from_value(json!({"type": "register_customer", "name": "Again"})).unwrap();
    let customer = acked[0].customer_id;
    let refused = retry(|| async {
        match cold
            .submit(customer, &register, &SubmitOptions::now("cluster-test"))
            .await
        {
            Err(crm_log::SubmitError::Rejected(d)) => Ok(d.code()),
            Err(crm_log::SubmitError::Log(e)) => Err(e.to_string()),
            other => panic!("a second registration was not refused: {other:?}"),
        }
    })
    .await;
    assert_eq!(refused, "customer_already_registered");
    assert_eq!(
        retry(|| log.leader_last_sequence(&customer)).await,
        acked
            .iter()
            .filter(|r| r.customer_id == customer)
            .map(|r| r.stream_sequence)
            .max()
            .unwrap()
    );
    let report = retry(|| crm_log::audit::verify_all(&log, &[], None, |_, _| {})).await;
    assert!(report.ok, "{report:?}");

    // The views converge to a rebuild from the surviving replicas.
    app.settle_within(Duration::from_secs(90)).await;
    let head = log.head().await.unwrap();
    let fresh = ReadStore::open_file(&env.path("cluster-fresh.sqlite"))
        .await
        .unwrap();
    let policy = Arc::new(crm_projections::policy::default_policy());
    retry(|| rebuild::as_of("all", policy.clone(), &fresh, &log, head, 1_000)).await;
    assert_eq!(
        crm_projections::lifecycle::dump(&app.parts.store)
            .await
            .unwrap(),
        crm_projections::lifecycle::dump(&fresh).await.unwrap()
    );
    assert_eq!(
        crm_projections::trust::dump(&app.parts.store)
            .await
            .unwrap(),
        crm_projections::trust::dump(&fresh).await.unwrap()
    );
}

/// Retries an operation that may time out while the cluster elects new leaders after a
/// node died (up to a minute).
async fn retry<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    mut op: impl FnMut() -> F,
) -> T {
    let mut last = String::new();
    for _ in 0..60 {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(1_000)).await;
            }
        }
    }
    panic!("still failing after a minute: {last}");
}
