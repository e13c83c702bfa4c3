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

/// Sends `body` to customer `c` from `writers` concurrent clients, alternating between the
/// two gateways; returns each answer's (status, error code).
async fn race(
    bases: [&str; 2],
    c: Uuid,
    writers: usize,
    body: serde_json::Value,
) -> Vec<(u16, Option<String>)> {
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(writers));
    let mut handles = Vec::new();
    for w in 0..writers {
        let url = format!("{}/v1/customers/{c}/commands", bases[w % 2]);
        let (body, start) = (body.clone(), start.clone());
        handles.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            start.wait().await;
            let resp = http
                .post(url)
                .bearer_auth(crm_e2e::KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let v: serde_json::Value = resp.json().await.unwrap();
            (status, v["error"]["code"].as_str().map(str::to_owned))
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Conflicting commands on one customer at once, through two gateways: each conflict is
/// decided again on the state the winner left, so exactly one of each is accepted and the
/// others get the refusal the winner's event makes true (never a second event).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicting_commands_at_once_are_accepted_exactly_once() {
    let env = Env::new().await;
    let a = App::start(&env).await;
    let b = App::start_with(env.config("views-b.sqlite"), false).await;
    let bases = [a.base.as_str(), b.base.as_str()];
    let c = Uuid::now_v7();
    let cases = [
        (register("Contested"), "customer_already_registered"),
        (crm_e2e::sign("c1"), "contract_already_exists"),
        (
            json!({"type": "log_complaint", "complaint_id": "k1", "severity": "major"}),
            "complaint_already_exists",
        ),
        (
            json!({"type": "resolve_complaint", "complaint_id": "k1", "resolution_hours": 5}),
            "complaint_not_open",
        ),
        (
            // The last contract: the winner churns the customer.
            json!({"type": "terminate_contract", "contract_id": "c1"}),
            "customer_churned",
        ),
    ];
    for (body, refusal) in cases {
        let answers = race(bases, c, 12, body.clone()).await;
        let accepted = answers.iter().filter(|(s, _)| *s == 201).count();
        assert_eq!(accepted, 1, "{body}: {answers:?}");
        for (status, code) in &answers {
            match status {
                201 => {}
                // Refused on the state the winner left.
                422 => assert_eq!(code.as_deref(), Some(refusal), "{body}"),
                // Out of retries against the other writers: nothing written.
                409 => assert_eq!(code.as_deref(), Some("concurrent_modification"), "{body}"),
                other => panic!("{body}: unexpected {other} {code:?}"),
            }
        }
    }
    let events: Vec<_> = read_all(&env.log().await)
        .await
        .into_iter()
        .filter(|e| e.envelope.customer_id.as_uuid() == &c)
        .collect();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e.envelope.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "customer_registered",
            "contract_signed",
            "complaint_logged",
            "complaint_resolved",
            "contract_terminated",
        ]
    );
    // The last contract ended: churned once, by the one termination.
    assert_eq!(events[4].envelope.payload.to_value()["churned"], true);
    assert_chain(&events);
    a.stop().await;
    b.stop().await;
}
