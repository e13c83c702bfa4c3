//! Retries with one Idempotency-Key: inside and after JetStream's duplicate window, and
//! after a restart of the gateway and of nats-server.

use std::time::Duration;

use crm_e2e::{App, Env, read_all, register, sign};
use crm_log::StreamSettings;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_one_event_forever() {
    let mut env = Env::with_stream(StreamSettings {
        duplicate_window: Duration::from_secs(1),
        ..StreamSettings::default()
    })
    .await;
    let c = Uuid::now_v7();
    let app = App::start(&env).await;
    app.accept(c, register("Retry")).await;

    let body = sign("c1");
    let key = [("Idempotency-Key", "sign-c1-attempt")];
    let (s1, first) = app.command_with(c, &body, &key).await;
    assert_eq!(s1, 201, "{first}");
    let (s2, second) = app.command_with(c, &body, &key).await;
    assert_eq!(s2, 200);
    assert_eq!(second, first);

    // Past the server's duplicate window.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (s3, third) = app.command_with(c, &body, &key).await;
    assert_eq!(s3, 200);
    assert_eq!(third, first);

    // The same key for a different command is a client bug, not a replay; so is the same
    // command with other fields, or with a business time the first did not give.
    let other = serde_json::json!({"type": "record_care_touch", "kind": "birthday"});
    let mut other_contract = body.clone();
    other_contract["contract_id"] = "c2".into();
    let mut backdated = body.clone();
    backdated["occurred_at"] = "2025-01-01T00:00:00Z".into();
    for different in [&other, &other_contract, &backdated] {
        let (s, err) = app.command_with(c, different, &key).await;
        assert_eq!(
            (s.as_u16(), err["error"]["code"].as_str()),
            (422, Some("idempotency_key_reused")),
            "{different}"
        );
    }
    // The same request written otherwise (fields in another order) is a retry.
    let fields = body.as_object().unwrap();
    let reordered: serde_json::Map<_, _> = fields
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (s, again) = app
        .command_with(c, &serde_json::Value::Object(reordered), &key)
        .await;
    assert_eq!((s.as_u16(), &again), (200, &first));
    app.stop().await;

    // Restart nats-server and the gateway: the key is remembered by the log itself.
    env.nats.restart(None).await.unwrap();
    let app = App::start(&env).await;
    let (s4, fourth) = app.command_with(c, &body, &key).await;
    assert_eq!(s4, 200, "{fourth}");
    assert_eq!(fourth, first);
    let (s, err) = app.command_with(c, &other_contract, &key).await;
    assert_eq!(
        (s.as_u16(), err["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "a restarted gateway knows the first request from the log"
    );

    let log = env.log().await;
    let with_key: Vec<_> = read_all(&log)
        .await
        .into_iter()
        .filter(|e| e.envelope.idempotency_key.as_deref() == Some("sign-c1-attempt"))
        .collect();
    assert_eq!(with_key.len(), 1);
    assert_eq!(
        with_key[0].envelope.request_hash.as_ref().map(String::len),
        Some(64),
        "the request hash is recorded with the key"
    );
    assert!(with_key[0].envelope.hash_is_valid());
    assert_eq!(
        with_key[0].envelope.event_id.to_string(),
        first["event_id"].as_str().unwrap()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_key_write_once() {
    let env = Env::new().await;
    let a = App::start(&env).await;
    let b = App::start_with(env.config("views-b.sqlite"), false).await;
    let c = Uuid::now_v7();
    a.accept(c, register("Racer")).await;
    let body =
        serde_json::json!({"type": "log_complaint", "complaint_id": "k1", "severity": "major"});
    let key = [("Idempotency-Key", "complaint-k1")];
    let (r1, r2, r3, r4) = tokio::join!(
        a.command_with(c, &body, &key),
        b.command_with(c, &body, &key),
        a.command_with(c, &body, &key),
        b.command_with(c, &body, &key),
    );
    let all = [r1, r2, r3, r4];
    // One accepted, three replays of it: the same receipt, byte for byte.
    let mut statuses: Vec<u16> = all.iter().map(|(s, _)| s.as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 201], "{all:?}");
    assert!(all.iter().all(|(_, b)| b == &all[0].1), "{all:?}");
    let ids: std::collections::HashSet<_> =
        all.iter().map(|(_, b)| b["event_id"].clone()).collect();
    assert_eq!(ids.len(), 1);
    let log = env.log().await;
    assert_eq!(log.head().await.unwrap(), 2);
    a.stop().await;
    b.stop().await;
}

/// A process whose cache is behind sends a key another process has already stored. The
/// server answers that the message is a duplicate (or that the customer moved on); even
/// with one attempt allowed, the answer is the original receipt, not a 409: the command
/// did succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_stored_by_another_process_replays_even_on_the_last_attempt() {
    let env = Env::new().await;
    let log = env.log().await;
    let behind = crm_log::Customers::new(log.clone(), 100, 1);
    let other = crm_log::Customers::new(log.clone(), 100, 1);
    let c = crm_domain::CustomerId::new(Uuid::now_v7());
    let cmd =
        |body: serde_json::Value| -> crm_domain::Command { serde_json::from_value(body).unwrap() };
    let plain = crm_log::SubmitOptions::now("tester");
    let mut keyed = plain.clone();
    keyed.meta.idempotency_key = Some("sign-c1".into());

    behind
        .submit(c, &cmd(register("Behind")), &plain)
        .await
        .unwrap();
    // The other process moves the customer on and stores the keyed command.
    other
        .submit(
            c,
            &cmd(serde_json::json!({"type": "record_care_touch", "kind": "birthday"})),
            &plain,
        )
        .await
        .unwrap();
    let first = other.submit(c, &cmd(sign("c1")), &keyed).await.unwrap();
    assert!(!first.replayed);

    // `behind` still holds the customer at version 1 and has never seen the key.
    let again = behind
        .submit(c, &cmd(sign("c1")), &keyed)
        .await
        .expect("the original receipt, not contention");
    assert!(again.replayed);
    assert_eq!(again.receipt.event_id, first.receipt.event_id);
    assert_eq!(again.receipt.version, 3);
    let signed: Vec<_> = read_all(&log)
        .await
        .into_iter()
        .filter(|e| e.envelope.event_type == "contract_signed")
        .collect();
    assert_eq!(signed.len(), 1);
}

/// A long-lived customer's keys: the cache keeps the latest in full and a digest of each
/// older one, and a retry of the oldest key still gets its original receipt (from the
/// customer's history in the log), or a refusal if it names another command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_key_of_a_long_lived_customer_still_replays() {
    let env = Env::new().await;
    let log = env.log().await;
    let customers = crm_log::Customers::new(log.clone(), 100, 8);
    let c = crm_domain::CustomerId::new(Uuid::now_v7());
    let cmd =
        |body: serde_json::Value| -> crm_domain::Command { serde_json::from_value(body).unwrap() };
    let call = |i: usize| {
        cmd(
            serde_json::json!({"type": "log_intervention", "action": "call", "note": format!("call {i}")}),
        )
    };
    let keyed = |key: &str| {
        let mut opts = crm_log::SubmitOptions::now("tester");
        opts.meta.idempotency_key = Some(key.into());
        opts
    };
    customers
        .submit(
            c,
            &cmd(register("Long")),
            &crm_log::SubmitOptions::now("tester"),
        )
        .await
        .unwrap();
    let total = crm_log::RECENT_KEYS + 36;
    let mut receipts = Vec::new();
    for i in 0..total {
        let done = customers
            .submit(c, &call(i), &keyed(&format!("call-{i}")))
            .await
            .unwrap();
        assert!(!done.replayed);
        receipts.push(done.receipt);
    }
    assert_eq!(
        customers.cached_keys(&c).await,
        Some((crm_log::RECENT_KEYS, 36))
    );

    // The oldest key, the newest, and one just past the kept ones.
    for i in [0, 35, 36, total - 1] {
        let again = customers
            .submit(c, &call(i), &keyed(&format!("call-{i}")))
            .await
            .unwrap();
        assert!(again.replayed, "call-{i}");
        assert_eq!(again.receipt, receipts[i], "call-{i}");
    }
    let reused = customers
        .submit(c, &call(999), &keyed("call-0"))
        .await
        .unwrap_err();
    assert!(
        matches!(reused, crm_log::SubmitError::IdempotencyKeyReused { .. }),
        "{reused:?}"
    );
    // A new key is a new event.
    let new = customers
        .submit(c, &call(total), &keyed("call-new"))
        .await
        .unwrap();
    assert!(!new.replayed);
    assert_eq!(new.receipt.version, total as u64 + 2);
    assert_eq!(read_all(&log).await.len(), total + 2);
    assert_eq!(
        customers.cached_keys(&c).await,
        Some((crm_log::RECENT_KEYS, 37))
    );
}
