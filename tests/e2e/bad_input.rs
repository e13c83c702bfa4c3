//! Bad input: the right status and stable code, and nothing written to the log.

use crm_e2e::{App, Env, READER_KEY, register};
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_request_gets_its_code_and_writes_nothing() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    app.accept(c, register("Strict")).await;
    app.accept(c, crm_e2e::sign("c1")).await;
    let log = env.log().await;
    let head_before = log.head().await.unwrap();
    let url = format!("{}/v1/customers/{c}/commands", app.base);

    let raw = |body: Vec<u8>| {
        let http = app.http.clone();
        let url = url.clone();
        async move {
            let resp = http
                .post(&url)
                .bearer_auth(crm_e2e::KEY)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let json: serde_json::Value = resp.json().await.unwrap();
            (
                status,
                json["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed json", b"{\"type\": ".to_vec(), 400, "malformed_json"),
        ("invalid utf-8", vec![0xff, 0xfe, 0x7b], 400, "malformed_json"),
        ("not an object", b"[1,2]".to_vec(), 400, "invalid_command"),
        ("no type", b"{\"name\":\"x\"}".to_vec(), 400, "missing_command_type"),
        ("unknown type", br#"{"type":"drop_table"}"#.to_vec(), 400, "unknown_command_type"),
        ("unknown field", br#"{"type":"record_care_touch","kind":"birthday","mood":"happy"}"#.to_vec(), 400, "unknown_field"),
        ("wrong type", br#"{"type":"respond_to_request","request_id":"r","response_minutes":"soon"}"#.to_vec(), 400, "invalid_command"),
        ("missing field", br#"{"type":"log_complaint","complaint_id":"k"}"#.to_vec(), 400, "invalid_command"),
        ("bad enum", br#"{"type":"log_complaint","complaint_id":"k","severity":"apocalyptic"}"#.to_vec(), 400, "invalid_command"),
        ("bad date", br#"{"type":"record_activity","day":"2025-02-30","logins":1}"#.to_vec(), 400, "invalid_command"),
        ("bad occurred_at", br#"{"type":"record_care_touch","kind":"other","occurred_at":"tomorrow"}"#.to_vec(), 400, "invalid_occurred_at"),
        ("negative amount", br#"{"type":"record_purchase","order_id":"o1","amount_minor":-100,"currency":"EUR","ordered_on":"2025-01-01"}"#.to_vec(), 422, "invalid_amount"),
        ("zero contract value", br#"{"type":"sign_contract","contract_id":"c9","value_minor":0,"currency":"EUR","starts_on":"2025-01-01","ends_on":"2025-02-01"}"#.to_vec(), 422, "invalid_amount"),
        ("huge number", br#"{"type":"record_purchase","order_id":"o1","amount_minor":1e400,"currency":"EUR","ordered_on":"2025-01-01"}"#.to_vec(), 400, "malformed_json"),
        ("unknown contract", br#"{"type":"deliver_service","contract_id":"nope","service_id":"s","promised_on":"2025-01-01","delivered_on":"2025-01-01"}"#.to_vec(), 422, "contract_not_found"),
        ("already registered", br#"{"type":"register_customer","name":"Again"}"#.to_vec(), 422, "customer_already_registered"),
        ("future", br#"{"type":"record_care_touch","kind":"other","occurred_at":"2999-01-01T00:00:00Z"}"#.to_vec(), 422, "occurred_in_future"),
        ("oversized", {
            let mut b = br#"{"type":"record_care_touch","kind":"other","note":""#.to_vec();
            b.extend(std::iter::repeat_n(b'a', 70_000));
            b.extend(br#""}"#);
            b
        }, 413, "payload_too_large"),
    ];
    for (name, body, status, code) in cases {
        let (got_status, got_code) = raw(body).await;
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "case {name}"
        );
    }

    // A customer that does not exist.
    let ghost = Uuid::now_v7();
    let (s, b) = app
        .command(
            ghost,
            json!({"type": "record_care_touch", "kind": "birthday"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (422, Some("customer_not_registered"))
    );
    let (s, b) = app.get(&format!("/v1/customers/{ghost}")).await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (404, Some("customer_not_found"))
    );
    // A known route with another method: the JSON error shape too.
    for (method, path) in [
        (reqwest::Method::DELETE, format!("/v1/customers/{c}")),
        (reqwest::Method::GET, format!("/v1/customers/{c}/commands")),
        (reqwest::Method::PUT, "/v1/stages".to_owned()),
    ] {
        let resp = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth(crm_e2e::KEY)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let b: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            (status, b["error"]["code"].as_str()),
            (405, Some("method_not_allowed")),
            "{method} {path}"
        );
    }
    // Not a UUID, or not even text: the same code, in the JSON shape.
    for path in [
        "/v1/customers/not-a-uuid",
        "/v1/customers/%FF",
        "/v1/customers/%FF/trust/ledger",
    ] {
        let (s, b) = app.get(path).await;
        assert_eq!(
            (s.as_u16(), b["error"]["code"].as_str()),
            (400, Some("invalid_customer_id")),
            "{path}"
        );
    }
    let resp = app
        .http
        .post(format!("{}/v1/customers/%FF/commands", app.base))
        .bearer_auth(crm_e2e::KEY)
        .json(&json!({"type": "record_care_touch", "kind": "birthday"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let b: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_customer_id");

    // If-Match with a stale version.
    let (s, b) = app
        .command_with(
            c,
            &json!({"type": "record_care_touch", "kind": "birthday"}),
            &[("If-Match", "1")],
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("version_conflict"))
    );

    // A query parameter left empty is absent, on every endpoint that takes one; a value
    // that does not parse is 400.
    for path in [
        format!("/v1/customers/{c}/lifecycle/history?after_version=&limit="),
        format!("/v1/customers/{c}/trust/ledger?after_sequence=&limit="),
        "/v1/alerts?color=&after=&limit=".to_owned(),
        "/v1/renewals?within_days=&as_of=&include_lapsed=&after=&limit=".to_owned(),
    ] {
        let (s, b) = app.get(&path).await;
        assert_eq!(s.as_u16(), 200, "{path}: {b}");
        let bare = path.split('?').next().unwrap();
        let (_, without) = app.get(bare).await;
        assert_eq!(b, without, "{path}");
    }
    let (s, b) = app.get("/v1/renewals?within_days=soon").await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );

    // Auth: no key, wrong key, a reader trying to publish.
    let body = json!({"type": "record_care_touch", "kind": "birthday"});
    let no_key = app.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    let wrong = app
        .http
        .post(&url)
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let reader = app
        .http
        .post(&url)
        .bearer_auth(READER_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 403);
    let err: serde_json::Value = reader.json().await.unwrap();
    assert_eq!(err["error"]["code"], "forbidden");
    // Auth is answered before the body: an oversized body from no key is 401, from a
    // reader 403, never 413.
    let oversized = vec![b'a'; 70_000];
    for (key, status) in [(None, 401), (Some(READER_KEY), 403)] {
        let mut req = app.http.post(&url).body(oversized.clone());
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        assert_eq!(req.send().await.unwrap().status(), status, "{key:?}");
    }
    // ... and before the path: an anonymous caller hears 401 whatever the customer id,
    // the ops route whatever the projection name; with a key, a path segment that is not
    // even text is refused in the JSON shape.
    for (path, method, code) in [
        (
            "/v1/customers/%FF/commands",
            reqwest::Method::POST,
            (400, "invalid_customer_id"),
        ),
        (
            "/v1/customers/%FF",
            reqwest::Method::GET,
            (400, "invalid_customer_id"),
        ),
        (
            "/v1/admin/projections/%FF/rebuild",
            reqwest::Method::POST,
            (404, "projection_not_found"),
        ),
    ] {
        let url = format!("{}{path}", app.base);
        let anonymous = app
            .http
            .request(method.clone(), &url)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
        if method == reqwest::Method::POST {
            // Its body was never read: the connection is not reused.
            assert_eq!(anonymous.headers()["connection"], "close", "{path}");
        }
        let keyed = app
            .http
            .request(method, &url)
            .bearer_auth(crm_e2e::KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(keyed.status().as_u16(), code.0, "{path}");
        let err: serde_json::Value = keyed.json().await.unwrap();
        assert_eq!(err["error"]["code"], code.1, "{path}");
    }
    // ... and before its body is read: a client without a key that sends a body slowly
    // (or never) hears 401 at once instead of holding the connection.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = app.base.trim_start_matches("http://").to_owned();
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v1/customers/{c}/commands HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"type\""
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 12];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tcp.read_exact(&mut answer),
        )
        .await
        .expect("answered before the body was complete")
        .unwrap();
        assert_eq!(
            &answer,
            b"HTTP/1.1 401",
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // The scheme is case-insensitive; a scheme other than Bearer, or no token, is not a key.
    for (value, status) in [
        (format!("BEARER {}", crm_e2e::KEY), 200),
        (format!("bearer  {}", crm_e2e::KEY), 200),
        (format!("Basic {}", crm_e2e::KEY), 401),
        ("Bearer ".to_owned(), 401),
        (format!("Bearer{}", crm_e2e::KEY), 401),
    ] {
        let resp = app
            .http
            .get(format!("{}/v1/stages", app.base))
            .header("Authorization", &value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "Authorization: {value}");
    }

    assert_eq!(
        log.head().await.unwrap(),
        head_before,
        "a refused command wrote to the log"
    );

    // If-Match with the current version is accepted.
    let (s, r) = app
        .command_with(
            c,
            &json!({"type": "record_care_touch", "kind": "birthday"}),
            &[("If-Match", "2")],
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(r["version"], 3);
    app.stop().await;
}

/// A customer the views have not seen yet (no projector runs here) is still a customer: its
/// sub-resources read empty, not `404`; a customer the log does not know is `404` on each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_resources_of_a_customer_the_views_lag_behind_read_empty() {
    let env = Env::new().await;
    let mut cfg = env.config("lagging.sqlite");
    cfg.gateway.read_your_writes_ms = 50;
    let app = App::start_with(cfg, false).await;
    let c = Uuid::now_v7();
    app.accept(c, register("Early")).await;

    let (s, v) = app.get(&format!("/v1/customers/{c}")).await;
    assert_eq!((s.as_u16(), &v["version"]), (200, &json!(1)));
    let (s, h) = app
        .get(&format!("/v1/customers/{c}/lifecycle/history"))
        .await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["transitions"], json!([]));
    assert_eq!(h["next_after_version"], json!(null));
    let (s, l) = app.get(&format!("/v1/customers/{c}/trust/ledger")).await;
    assert_eq!(s, 200, "{l}");
    assert_eq!(l["entries"], json!([]));
    assert_eq!(l["balance"]["balance"], 0);
    assert_eq!(
        l["balance"]["policy_version"],
        crm_projections::policy::default_policy().version
    );
    let (s, a) = app.get(&format!("/v1/customers/{c}/alerts")).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["alerts"], json!([]));

    let ghost = Uuid::now_v7();
    for path in ["", "/lifecycle/history", "/trust/ledger", "/alerts"] {
        let (s, b) = app.get(&format!("/v1/customers/{ghost}{path}")).await;
        assert_eq!(
            (s.as_u16(), b["error"]["code"].as_str()),
            (404, Some("customer_not_found")),
            "{path}"
        );
    }
    app.stop().await;
}
