//! The gRPC door: same semantics and codes as HTTP, streaming audit, health, roles.

use crm_e2e::{App, Env, KEY, ROLE_KEYS, read_all, register, sign};
use crm_gateway::Role;
use crm_grpc::pb;
use pb::audit_service_client::AuditServiceClient;
use pb::command_service_client::CommandServiceClient;
use pb::customer_service_client::CustomerServiceClient;
use serde_json::{Value, json};
use tonic::Request;
use uuid::Uuid;

fn with_key<T>(msg: T, key: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    r
}

fn submit(customer: Uuid, body: &Value) -> pb::SubmitRequest {
    pb::SubmitRequest {
        customer_id: customer.to_string(),
        command_json: body.to_string(),
        ..Default::default()
    }
}

fn code(s: &tonic::Status) -> (tonic::Code, String) {
    (
        s.code(),
        s.metadata()
            .get("crm-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_matches_http() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let mut commands = CommandServiceClient::connect(app.grpc.clone())
        .await
        .unwrap();
    let mut customers = CustomerServiceClient::connect(app.grpc.clone())
        .await
        .unwrap();
    let mut audit = AuditServiceClient::connect(app.grpc.clone()).await.unwrap();
    let (h, g) = (Uuid::now_v7(), Uuid::now_v7());

    // The same commands through HTTP and gRPC make the same events.
    for cmd in [
        register("Twin"),
        sign("c1"),
        json!({"type": "deliver_value_add", "kind": "industry_insight"}),
    ] {
        app.accept(h, cmd.clone()).await;
        let r = commands
            .submit(with_key(submit(g, &cmd), Some(KEY)))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.replayed);
        assert_eq!(r.customer_id, g.to_string());
        assert_eq!(
            r.r#type,
            crm_domain::Command::TYPES
                .iter()
                .position(|t| *t == cmd["type"])
                .map(|i| crm_domain::Event::TYPES[i])
                .unwrap()
        );
    }
    let events = read_all(&env.log().await).await;
    let of = |id: Uuid| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e.envelope.customer_id.as_uuid() == &id)
            .map(|e| {
                json!([
                    e.envelope.event_type,
                    e.envelope.version,
                    e.envelope.actor,
                    e.envelope.payload
                ])
            })
            .collect()
    };
    assert_eq!(of(h), of(g));

    // Idempotent replay.
    let mut req = submit(g, &json!({"type": "record_care_touch", "kind": "holiday"}));
    req.idempotency_key = "grpc-once".into();
    let first = commands
        .submit(with_key(req.clone(), Some(KEY)))
        .await
        .unwrap()
        .into_inner();
    let again = commands
        .submit(with_key(req, Some(KEY)))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed && again.replayed);
    assert_eq!(
        (first.event_id, first.version),
        (again.event_id, again.version)
    );

    // Errors: the HTTP code travels in crm-error-code, the status maps.
    let err = commands
        .submit(with_key(submit(g, &json!({"type": "nope"})), Some(KEY)))
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        (tonic::Code::InvalidArgument, "unknown_command_type".into())
    );
    let err = commands
        .submit(with_key(submit(g, &register("again")), Some(KEY)))
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        (
            tonic::Code::FailedPrecondition,
            "customer_already_registered".into()
        )
    );
    let mut stale = submit(g, &json!({"type": "record_care_touch", "kind": "other"}));
    stale.if_match = Some(1);
    let err = commands
        .submit(with_key(stale, Some(KEY)))
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        (tonic::Code::Aborted, "version_conflict".into())
    );
    let err = commands
        .submit(with_key(
            submit(g, &json!({"type": "record_care_touch", "kind": "other"})),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        (tonic::Code::Unauthenticated, "unauthenticated".into())
    );
    let err = customers
        .get_customer(with_key(
            pb::GetCustomerRequest {
                customer_id: Uuid::now_v7().to_string(),
            },
            Some(KEY),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        (tonic::Code::NotFound, "customer_not_found".into())
    );

    // The customer view is the HTTP body.
    let view = customers
        .get_customer(with_key(
            pb::GetCustomerRequest {
                customer_id: g.to_string(),
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    let (_, http) = app.get(&format!("/v1/customers/{g}")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&view.view_json).unwrap(),
        http
    );
    assert_eq!(view.version, 4);

    // Server-streaming audit query.
    app.settle().await;
    let mut stream = audit
        .query_events(with_key(
            pb::AuditQuery {
                customer_id: g.to_string(),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(e) = stream.message().await.unwrap() {
        let env: Value = serde_json::from_str(&e.envelope_json).unwrap();
        seen.push(env["version"].as_u64().unwrap());
    }
    assert_eq!(seen, vec![1, 2, 3, 4]);
    // Recording time, as over HTTP: every event was stored before now and none after.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for (from, to, expected) in [
        (now.clone(), String::new(), 0),
        (String::new(), now.clone(), 4),
    ] {
        let mut stream = audit
            .query_events(with_key(
                pb::AuditQuery {
                    customer_id: g.to_string(),
                    recorded_from: from.clone(),
                    recorded_to: to.clone(),
                    ..Default::default()
                },
                Some(KEY),
            ))
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while stream.message().await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, expected, "recorded_from {from:?}, recorded_to {to:?}");
        let (_, http) = app
            .get(&format!(
                "/v1/audit/events?customer_id={g}&recorded_from={from}&recorded_to={to}"
            ))
            .await;
        assert_eq!(
            http["events"].as_array().map(Vec::len),
            Some(expected),
            "{http}"
        );
    }
    let bad = audit
        .query_events(with_key(
            pb::AuditQuery {
                recorded_from: "yesterday".into(),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .expect_err("not RFC 3339");
    assert_eq!(
        code(&bad),
        (tonic::Code::InvalidArgument, "invalid_query".into())
    );
    // A customer id that is not a UUID: the code HTTP answers for the same query.
    let bad = audit
        .query_events(with_key(
            pb::AuditQuery {
                customer_id: "nope".into(),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .expect_err("not a UUID");
    assert_eq!(
        code(&bad),
        (tonic::Code::InvalidArgument, "invalid_query".into())
    );
    let (status, http) = app.get("/v1/audit/events?customer_id=nope").await;
    assert_eq!(
        (status.as_u16(), http["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );

    // Roles on the gRPC door.
    for (role, key) in ROLE_KEYS {
        let r = commands
            .submit(with_key(
                submit(g, &json!({"type": "record_care_touch", "kind": "other"})),
                Some(key),
            ))
            .await;
        assert_eq!(r.is_ok(), role == Role::Publisher, "{role:?}");
        if let Err(e) = r {
            assert_eq!(
                code(&e),
                (tonic::Code::PermissionDenied, "forbidden".into())
            );
        }
        let r = customers
            .get_customer(with_key(
                pb::GetCustomerRequest {
                    customer_id: g.to_string(),
                },
                Some(key),
            ))
            .await;
        assert_eq!(r.is_ok(), role == Role::Reader, "{role:?}");
        let r = audit
            .query_events(with_key(pb::AuditQuery::default(), Some(key)))
            .await;
        assert_eq!(r.is_ok(), role == Role::Auditor, "{role:?}");
    }

    // Health.
    let channel = tonic::transport::Endpoint::from_shared(app.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "crm.v1.CommandService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    app.stop().await;
}
