//! Hostile input over the HTTP and NATS doors: random bytes, deep nesting, huge numbers,
//! wrong types, SQL-looking strings. Never a 5xx or a panic, always a stable code, and a
//! refused request never writes.

use std::time::Duration;

use crm_e2e::{App, Env, KEY, register, sign};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use uuid::Uuid;

const CODES: &[&str] = &[
    "malformed_json",
    "invalid_command",
    "missing_command_type",
    "unknown_command_type",
    "unknown_field",
    "invalid_occurred_at",
    "payload_too_large",
    "type_mismatch",
    "missing_customer_id",
    "invalid_customer_id",
];

fn hostile(rng: &mut StdRng, i: usize) -> Vec<u8> {
    let sql = "'; DROP TABLE lifecycle_customers; --";
    let types = crm_domain::Command::TYPES;
    match i % 10 {
        0 => (0..rng.random_range(0..200)).map(|_| rng.random::<u8>()).collect(),
        1 => {
            let depth = rng.random_range(100..5_000);
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }
        2 => format!(r#"{{"type":"record_purchase","order_id":"o","amount_minor":{},"currency":"EUR","ordered_on":"2025-01-01"}}"#,
            ["1e400", "-1e400", "99999999999999999999999", "1.5", "-0", "NaN"][rng.random_range(0..6)]).into_bytes(),
        3 => json!({"type": types[rng.random_range(0..types.len())], "contract_id": sql, "name": sql, "order_id": sql, "kind": sql}).to_string().into_bytes(),
        4 => json!({"type": "register_customer", "name": {"nested": [1, 2, {"deep": true}]}}).to_string().into_bytes(),
        5 => json!({"type": types[rng.random_range(0..types.len())], "score": -1, "days_late": -5, "response_minutes": 1e20}).to_string().into_bytes(),
        6 => json!({"type": "record_care_touch", "kind": "other", "note": "\u{0}\u{202e}💥".repeat(rng.random_range(1..50))}).to_string().into_bytes(),
        7 => {
            let mut b = br#"{"type":"record_care_touch","kind":"other","note":""#.to_vec();
            b.extend(std::iter::repeat_n(b'x', rng.random_range(60_000..200_000)));
            b.extend(br#""}"#);
            b
        }
        8 => json!({"type": sql}).to_string().into_bytes(),
        _ => json!([{"type": "register_customer"}, null, true]).to_string().into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_breaks_a_door() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    app.accept(c, register("Target")).await;
    app.accept(c, sign("c1")).await;
    let log = env.log().await;
    let client = async_nats::connect(env.nats.url()).await.unwrap();
    let mut rng = StdRng::seed_from_u64(20261122);
    for i in 0..300 {
        let body = hostile(&mut rng, i);
        let head_before = log.head().await.unwrap();

        let resp = app
            .http
            .post(format!("{}/v1/customers/{c}/commands", app.base))
            .bearer_auth(KEY)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status < 500, "case {i}: {status} {v}");
        // Every kind but SQL-looking strings in valid fields (3) and odd but valid
        // characters in a note (6) is malformed, out of range or too large.
        let must_refuse = !matches!(i % 10, 3 | 6);
        assert!(!(must_refuse && status == 201), "case {i} accepted: {v}");
        if status != 201 {
            let code = v["error"]["code"].as_str().unwrap_or("");
            assert!(
                status == 422 || CODES.contains(&code),
                "case {i}: {status} {code:?}"
            );
            assert_eq!(log.head().await.unwrap(), head_before, "case {i} wrote");
        }

        let mut h = async_nats::HeaderMap::new();
        h.insert("Authorization", format!("Bearer {KEY}").as_str());
        h.insert("Crm-Customer-Id", c.to_string().as_str());
        if body.len() > 900_000 {
            continue; // over the NATS server's max_payload: refused by NATS itself
        }
        let head_before = log.head().await.unwrap();
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            client.request_with_headers("crm.commands.record_care_touch", h, body.into()),
        )
        .await
        .expect("reply in time")
        .expect("request");
        let status: u16 = reply
            .headers
            .as_ref()
            .and_then(|h| h.get("Crm-Status"))
            .map(|v| v.as_str().parse().unwrap())
            .unwrap();
        let v: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert!(status < 500, "nats case {i}: {status} {v}");
        assert!(
            !(must_refuse && status == 201),
            "nats case {i} accepted: {v}"
        );
        if status != 201 {
            let code = v["error"]["code"].as_str().unwrap_or("");
            assert!(
                status == 422 || CODES.contains(&code),
                "nats case {i}: {status} {code:?}"
            );
            assert_eq!(
                log.head().await.unwrap(),
                head_before,
                "nats case {i} wrote"
            );
        }
    }
    // SQL-looking strings are data: the views still answer.
    let (status, v) = app.get(&format!("/v1/customers/{c}")).await;
    assert_eq!(status, 200, "{v}");
    app.stop().await;
}

/// A request whose reply subject lies inside the event log (or a server API) is never
/// answered: the gateway's answer would otherwise be stored as an event of the customer
/// that subject names, and the log could never be rid of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_subject_inside_the_log_is_never_answered() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    app.accept(c, register("Target")).await;
    let log = env.log().await;
    let subject = log.subject(&crm_domain::CustomerId::new(c));
    let head_before = log.head().await.unwrap();
    let client = async_nats::connect(env.nats.url()).await.unwrap();
    let touch = json!({"type": "record_care_touch", "kind": "birthday", "customer_id": c,
                       "occurred_at": "2025-03-01T10:00:00Z"});
    for (auth, reply) in [
        (None, subject.as_str()),
        (Some(KEY), subject.as_str()),
        (Some(KEY), "$JS.API.STREAM.DELETE.CRM_EVENTS"),
        (Some(KEY), "crm.commands.record_care_touch"),
    ] {
        let mut h = async_nats::HeaderMap::new();
        if let Some(key) = auth {
            h.insert("Authorization", format!("Bearer {key}").as_str());
        }
        client
            .publish_with_reply_and_headers(
                "crm.commands.record_care_touch",
                reply.to_owned(),
                h,
                touch.to_string().into(),
            )
            .await
            .unwrap();
    }
    // A request with an ordinary inbox after them is answered; by then the gateway has
    // taken the ones before (one subscription, in order).
    let mut h = async_nats::HeaderMap::new();
    h.insert("Authorization", format!("Bearer {KEY}").as_str());
    let mut body = touch.clone();
    body["occurred_at"] = json!("2025-03-02T10:00:00Z");
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request_with_headers("crm.commands.record_care_touch", h, body.to_string().into()),
    )
    .await
    .expect("reply in time")
    .expect("request");
    let status = reply.headers.as_ref().and_then(|h| h.get("Crm-Status"));
    assert_eq!(status.map(|s| s.as_str()), Some("201"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Only the answered command was stored, and the customer's history still reads.
    assert_eq!(log.head().await.unwrap(), head_before + 1);
    let history = log
        .read_customer(&crm_domain::CustomerId::new(c), 0)
        .await
        .expect("the customer's history decodes");
    assert_eq!(history.len(), 2);
    assert!(log.jetstream().get_stream(log.stream_name()).await.is_ok());
    app.stop().await;
}
