//! Concurrent writers on one customer, across two gateway processes' worth of caches.

use std::collections::HashMap;

use crm_e2e::{App, Env, assert_chain, read_all, register};
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_fifty_commands_each_on_one_customer() {
    let env = Env::new().await;
    // Two gateways with separate caches: conflicts between them go through the
    // conditional append and the internal retry.
    let a = App::start(&env).await;
    let b = App::start_with(env.config("views-b.sqlite"), false).await;
    let c = Uuid::now_v7();
    a.accept(c, register("Busy")).await;

    let mut handles = Vec::new();
    for writer in 0..16 {
        let app_base = if writer % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        handles.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut accepted = Vec::new();
            for i in 0..50 {
                let resp = http
                    .post(format!("{app_base}/v1/customers/{c}/commands"))
                    .bearer_auth(crm_e2e::KEY)
                    .json(&json!({"type": "respond_to_request",
                                  "request_id": format!("w{writer}-r{i}"),
                                  "response_minutes": 30}))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let body: serde_json::Value = resp.json().await.unwrap();
                match status.as_u16() {
                    201 => accepted.push(body),
                    409 => assert_eq!(body["error"]["code"], "concurrent_modification"),
                    other => panic!("unexpected {other}: {body}"),
                }
            }
            accepted
        }));
    }
    let mut receipts = Vec::new();
    for h in handles {
        receipts.extend(h.await.unwrap());
    }
    assert!(
        receipts.len() >= 780,
        "too many refusals: {} accepted",
        receipts.len()
    );

    let log = env.log().await;
    let events: Vec<_> = read_all(&log)
        .await
        .into_iter()
        .filter(|e| e.envelope.customer_id.as_uuid() == &c)
        .collect();
    // Register + every accepted command, each exactly once.
    assert_eq!(events.len(), receipts.len() + 1);
    let by_id: HashMap<String, u64> = events
        .iter()
        .map(|e| (e.envelope.event_id.to_string(), e.sequence))
        .collect();
    for r in &receipts {
        let id = r["event_id"].as_str().unwrap();
        assert_eq!(by_id.get(id), Some(&r["stream_sequence"].as_u64().unwrap()));
    }
    assert_chain(&events);

    a.settle().await;
    let n = events.len() as u64;
    let (_, v) = a.get(&format!("/v1/customers/{c}")).await;
    assert_eq!(v["version"], n);
    a.stop().await;
    b.stop().await;
}
