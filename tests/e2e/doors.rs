//! Every door, every role: HTTP and NATS requests are allowed exactly for their role, a
//! refused call writes nothing, and the same command through either door makes the same
//! event.

use std::time::Duration;

use crm_e2e::{App, Env, KEY, ROLE_KEYS, read_all, register, sign};
use crm_gateway::Role;
use serde_json::{Value, json};
use uuid::Uuid;

async fn nats_command(
    client: &async_nats::Client,
    command_type: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    let mut h = async_nats::HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, *v);
    }
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request_with_headers(
            format!("crm.commands.{command_type}"),
            h,
            body.to_string().into(),
        ),
    )
    .await
    .expect("reply in time")
    .expect("request");
    let status = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Crm-Status"))
        .map(|v| v.as_str().parse::<u16>().unwrap())
        .expect("Crm-Status header");
    (status, serde_json::from_slice(&reply.payload).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_by_endpoint_matrix_over_http_and_nats() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    app.accept(c, register("Matrix")).await;
    app.accept(c, sign("c1")).await;
    app.settle().await;
    let log = env.log().await;

    let endpoints: Vec<(&str, String, Role)> = vec![
        (
            "POST",
            format!("/v1/customers/{c}/commands"),
            Role::Publisher,
        ),
        ("GET", format!("/v1/customers/{c}"), Role::Reader),
        (
            "GET",
            format!("/v1/customers/{c}/trust/ledger"),
            Role::Reader,
        ),
        (
            "GET",
            format!("/v1/customers/{c}/lifecycle/history"),
            Role::Reader,
        ),
        ("GET", format!("/v1/customers/{c}/alerts"), Role::Reader),
        ("GET", "/v1/stages".into(), Role::Reader),
        ("GET", "/v1/alerts".into(), Role::Reader),
        ("GET", "/v1/renewals".into(), Role::Reader),
        ("GET", "/v1/audit/events".into(), Role::Auditor),
        ("GET", "/v1/audit/verify".into(), Role::Auditor),
        ("GET", "/v1/audit/checkpoints".into(), Role::Auditor),
        ("POST", "/v1/audit/checkpoints".into(), Role::Auditor),
        ("GET", "/v1/admin/projections".into(), Role::Ops),
        (
            "POST",
            "/v1/admin/projections/renewals/rebuild".into(),
            Role::Ops,
        ),
    ];
    let body = json!({"type": "record_care_touch", "kind": "other"});
    for (method, path, needed) in &endpoints {
        let mut keys: Vec<(Option<Role>, Option<&str>)> = ROLE_KEYS
            .iter()
            .map(|(r, k)| (Some(*r), Some(*k)))
            .collect();
        keys.push((None, None));
        keys.push((None, Some("not-a-key")));
        for (role, key) in keys {
            let head_before = log.head().await.unwrap();
            let url = format!("{}{path}", app.base);
            let mut req = if *method == "POST" {
                app.http.post(&url).json(&body)
            } else {
                app.http.get(&url)
            };
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let expected_ok = role == Some(*needed);
            if expected_ok {
                assert!(
                    (200..300).contains(&status),
                    "{method} {path} as {role:?}: {status}"
                );
            } else {
                let want = if role.is_some() { 403 } else { 401 };
                assert_eq!(status, want, "{method} {path} as {role:?}");
                let err: Value = resp.json().await.unwrap();
                assert_eq!(
                    err["error"]["code"],
                    if want == 403 {
                        "forbidden"
                    } else {
                        "unauthenticated"
                    }
                );
                assert_eq!(
                    log.head().await.unwrap(),
                    head_before,
                    "a refused call wrote to the log"
                );
            }
        }
    }

    // Probes, metrics and the API document answer without a key.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path} without a key");
    }

    // The NATS door: only publishers may send commands.
    let client = async_nats::connect(env.nats.url()).await.unwrap();
    for (role, key) in ROLE_KEYS {
        let head_before = log.head().await.unwrap();
        let auth = format!("Bearer {key}");
        let c_str = c.to_string();
        let (status, reply) = nats_command(
            &client,
            "record_care_touch",
            &[("Authorization", &auth), ("Crm-Customer-Id", &c_str)],
            &json!({"kind": "birthday"}),
        )
        .await;
        if role == Role::Publisher {
            assert_eq!(status, 201, "{reply}");
            assert_eq!(log.head().await.unwrap(), head_before + 1);
        } else {
            assert_eq!(
                (status, reply["error"]["code"].as_str()),
                (403, Some("forbidden"))
            );
            assert_eq!(log.head().await.unwrap(), head_before);
        }
    }
    let (status, reply) = nats_command(
        &client,
        "record_care_touch",
        &[],
        &json!({"customer_id": c, "kind": "birthday"}),
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_intake_speaks_the_http_contract() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let client = async_nats::connect(env.nats.url()).await.unwrap();
    let auth = format!("Bearer {KEY}");
    let (h, n) = (Uuid::now_v7(), Uuid::now_v7());

    // The same commands through both doors.
    let cmds = [
        register("Twin"),
        sign("c1"),
        json!({"type": "log_complaint", "complaint_id": "k1", "severity": "critical", "topic": "outage",
               "occurred_at": "2025-03-01T10:00:00Z"}),
    ];
    for cmd in &cmds {
        app.accept(h, cmd.clone()).await;
        let mut body = cmd.clone();
        body["customer_id"] = json!(n);
        let t = cmd["type"].as_str().unwrap();
        let (status, reply) = nats_command(&client, t, &[("Authorization", &auth)], &body).await;
        assert_eq!(status, 201, "{reply}");
        assert_eq!(reply["customer_id"], n.to_string());
        assert!(reply["event_id"].is_string() && reply["stream_sequence"].is_u64());
    }
    let events = read_all(&env.log().await).await;
    let of = |id: Uuid| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e.envelope.customer_id.as_uuid() == &id)
            .map(|e| {
                let env = &e.envelope;
                json!([
                    env.event_type,
                    env.schema_version,
                    env.version,
                    env.actor,
                    env.payload,
                    if env.event_type == "complaint_logged" {
                        json!(env.occurred_at.to_string())
                    } else {
                        Value::Null
                    }
                ])
            })
            .collect()
    };
    assert_eq!(of(h), of(n));
    assert_eq!(of(h).len(), 3);

    // Idempotent replay, business refusals and bad input get the HTTP codes.
    let key_headers = [
        ("Authorization", auth.as_str()),
        ("Idempotency-Key", "nats-once"),
    ];
    let body = json!({"customer_id": n, "kind": "holiday"});
    let (s1, r1) = nats_command(&client, "record_care_touch", &key_headers, &body).await;
    let (s2, r2) = nats_command(&client, "record_care_touch", &key_headers, &body).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(r1, r2);
    // Header names are case-insensitive, as over HTTP: the same key in lower case is the
    // same key, and a lower-case `authorization` authenticates.
    let lower = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "nats-once"),
    ];
    let (s3, r3) = nats_command(&client, "record_care_touch", &lower, &body).await;
    assert_eq!((s3, &r3), (200, &r1));
    // The header and the body naming different customers is refused; the same customer
    // in another spelling is not.
    let (s, r) = nats_command(
        &client,
        "record_care_touch",
        &[
            ("Authorization", &auth),
            ("Crm-Customer-Id", &h.to_string()),
        ],
        &json!({"customer_id": n, "kind": "birthday"}),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (400, Some("customer_id_mismatch"))
    );
    let (s, r) = nats_command(
        &client,
        "record_care_touch",
        &[
            ("Authorization", &auth),
            ("Crm-Customer-Id", &n.to_string().to_uppercase()),
        ],
        &json!({"customer_id": n, "kind": "birthday"}),
    )
    .await;
    assert_eq!(
        (s, r["customer_id"].as_str()),
        (201, Some(n.to_string().as_str()))
    );
    // Trace ids are kept on the event forever: bounded like an idempotency key.
    let long = "x".repeat(256);
    let (s, r) = nats_command(
        &client,
        "record_care_touch",
        &[("Authorization", &auth), ("X-Correlation-Id", &long)],
        &json!({"customer_id": n, "kind": "birthday"}),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (400, Some("invalid_header"))
    );
    let (s, r) = nats_command(
        &client,
        "register_customer",
        &[("Authorization", &auth)],
        &json!({"customer_id": n, "name": "x"}),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (422, Some("customer_already_registered"))
    );
    let (s, r) = nats_command(
        &client,
        "record_care_touch",
        &[("Authorization", &auth)],
        &json!({"customer_id": n, "kind": "birthday", "mood": 1}),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (400, Some("unknown_field"))
    );
    let (s, r) = nats_command(
        &client,
        "record_care_touch",
        &[("Authorization", &auth)],
        &json!({"type": "log_complaint", "customer_id": n}),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (400, Some("type_mismatch"))
    );
    let (s, r) = nats_command(
        &client,
        "record_care_touch",
        &[("Authorization", &auth)],
        &json!({"kind": "birthday"}),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (400, Some("missing_customer_id"))
    );
    let (s, r) = nats_command(
        &client,
        "no_such_command",
        &[("Authorization", &auth)],
        &json!({"customer_id": n}),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (400, Some("unknown_command_type"))
    );
    let raw = client
        .request_with_headers(
            "crm.commands.record_care_touch",
            {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Authorization", auth.as_str());
                h
            },
            "{not json".into(),
        )
        .await
        .unwrap();
    let err: Value = serde_json::from_slice(&raw.payload).unwrap();
    assert_eq!(err["error"]["code"], "malformed_json");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_see_projection_status_and_metrics() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    app.accept(c, register("Ops")).await;
    app.accept(c, sign("c1")).await;
    app.settle().await;
    let (status, v) = app.get("/v1/admin/projections").await;
    assert_eq!(status, 200);
    let list = v["projections"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        vec!["audit", "lifecycle", "trust", "health", "renewals"]
    );
    for p in list {
        assert_eq!(p["checkpoint"], 2, "{p}");
        assert_eq!(p["log_head"], 2);
        assert_eq!(p["lag_events"], 0);
        assert_eq!(p["state"], "live");
        // Two events were just applied: the rate over the last seconds is positive.
        assert!(p["apply_rate"].as_f64().unwrap() > 0.0, "{p}");
    }
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("crm_log_head_sequence 2"), "{text}");
    assert!(
        text.contains("crm_projection_lag_events{projection=\"health\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("crm_projection_state{projection=\"health\",state=\"live\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("crm_projection_apply_rate{projection=\"trust\"} "),
        "{text}"
    );
    app.stop().await;
}

/// A burst beyond what the NATS door works on at once is answered at once with 503
/// `overloaded` and not taken: every request gets an answer, and the log holds exactly the
/// commands answered 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_intake_refuses_what_it_cannot_take_and_writes_nothing_for_it() {
    let env = Env::new().await;
    let cfg = env.config("views.sqlite");
    let parts = crm_cli::services::open(&cfg).await.unwrap();
    let state = crm_cli::services::app_state(&cfg, &parts).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let door = tokio::spawn(crm_gateway::nats_intake::serve_at_most(
        parts.log.client().clone(),
        state,
        shutdown.clone(),
        2,
    ));
    let client = async_nats::connect(env.nats.url()).await.unwrap();
    let auth = format!("Bearer {KEY}");
    let c = Uuid::now_v7();
    let mut registration = register("Burst");
    registration["customer_id"] = json!(c);
    // Until the door has subscribed, a request finds no responder.
    let mut registered = false;
    for _ in 0..100 {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Authorization", auth.as_str());
        if let Ok(reply) = client
            .request_with_headers(
                "crm.commands.register_customer",
                h,
                registration.to_string().into(),
            )
            .await
        {
            let status = reply.headers.as_ref().and_then(|h| h.get("Crm-Status"));
            assert_eq!(status.map(|s| s.as_str()), Some("201"));
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(registered, "the door never answered");

    let body = json!({"customer_id": c, "kind": "birthday"});
    let headers = [("Authorization", auth.as_str())];
    let replies = futures::future::join_all(
        (0..300).map(|_| nats_command(&client, "record_care_touch", &headers, &body)),
    )
    .await;
    let taken = replies.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<_> = replies.iter().filter(|(s, _)| *s != 201).collect();
    assert!(
        !refused.is_empty(),
        "300 at once with room for 2: none refused"
    );
    for (status, reply) in &refused {
        assert_eq!(
            (*status, reply["error"]["code"].as_str()),
            (503, Some("overloaded")),
            "{reply}"
        );
    }
    let touches = read_all(&env.log().await)
        .await
        .iter()
        .filter(|e| e.envelope.event_type == "care_touch_recorded")
        .count();
    assert_eq!(touches, taken, "the log holds exactly the commands taken");
    shutdown.cancel();
    door.await.unwrap().unwrap();
}
