//! Auditors: queries answered from the index with events read from the log, NDJSON
//! streaming, and verification that names the first break in a tampered, truncated or
//! rebuilt copy of the stream.

use async_nats::jetstream;
use crm_e2e::{AUDIT_KEY, App, Db, Env, read_all, register, register_and_sign, sign};
use crm_log::audit::{self, BreakKind, SignedHeads};
use crm_log::envelope::{Envelope, GENESIS_HASH};
use crm_log::{EventLog, StoredEvent, StreamSettings};
use serde_json::{Value, json};
use uuid::Uuid;

crm_e2e::on_both_stores!(
    queries_filter_by_customer_type_actor_and_time_and_stream_ndjson,
    an_audit_page_holds_each_event_once_when_the_index_is_ahead_of_its_checkpoint,
);

/// The index can hold rows past its checkpoint: a batch that commits while a page is read,
/// or, when the audit index runs partitioned, every partition ahead of the slowest (the
/// checkpoint is the lowest). Pages take the index up to the checkpoint and the log after
/// it, so each event comes once, in log order, whatever the page size.
async fn an_audit_page_holds_each_event_once_when_the_index_is_ahead_of_its_checkpoint(db: Db) {
    use crm_projections::audit::{self as index, AuditFilter};

    let env = Env::on(db).await;
    let log = env.log().await;
    register_and_sign(&log, 5).await;
    let head = log.head().await.unwrap();
    assert_eq!(head, 10);
    let store = env.audit_index("views.sqlite", &log, head).await;
    // The slowest partition is four events behind.
    sqlx::query("UPDATE projection_checkpoints SET last_sequence = $1 WHERE name = $2")
        .bind(6_i64)
        .bind(index::NAME)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(store.checkpoint(index::NAME).await.unwrap(), 6);

    let all = AuditFilter::default();
    let everything: Vec<u64> = (1..=head).collect();
    for limit in [1, 3, 7, 1_000] {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = index::page(&store, &log, &all, after, limit).await.unwrap();
            assert!(page.len() <= limit as usize);
            let Some(last) = page.last() else { break };
            after = last.sequence;
            seen.extend(page.iter().map(|e| e.sequence));
        }
        assert_eq!(seen, everything, "pages of {limit}");
    }
    // A filter keeps working across the two parts.
    let signed = AuditFilter {
        event_type: Some("contract_signed".into()),
        ..AuditFilter::default()
    };
    let page = index::page(&store, &log, &signed, 0, 1_000).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![2, 4, 6, 8, 10]
    );

    // A checkpoint signed now covers the heads as of the slowest partition, not the heads
    // the others stored past it, so a full verify accepts it: at 6, C3 and C4 have not
    // begun; at 7, C3 is at its first event.
    let key = crm_e2e::AUDIT_KEY.as_bytes();
    for (at, customers) in [(6_i64, 3_u64), (7, 4)] {
        sqlx::query("UPDATE projection_checkpoints SET last_sequence = $1 WHERE name = $2")
            .bind(at)
            .bind(index::NAME)
            .execute(store.pool())
            .await
            .unwrap();
        let cp = index::create_checkpoint(&store, &log, key)
            .await
            .unwrap()
            .expect("a checkpoint");
        assert_eq!((cp.head_sequence, cp.customers), (at as u64, customers));
    }
    // A second checkpoint at the same position answers with the one kept there.
    let kept = index::checkpoints(&store).await.unwrap()[1].clone();
    let again = index::create_checkpoint(&store, &log, key)
        .await
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(again, kept);
    // One kept there with another digest is not passed over: the store and the log
    // disagree about that position.
    sqlx::query("UPDATE audit_checkpoints SET heads_digest = $1 WHERE head_sequence = $2")
        .bind("0".repeat(64))
        .bind(7_i64)
        .execute(store.pool())
        .await
        .unwrap();
    let err = index::create_checkpoint(&store, &log, key)
        .await
        .expect_err("another digest at the same position");
    assert!(
        err.to_string().contains("another chain-head digest"),
        "{err}"
    );
    sqlx::query("UPDATE audit_checkpoints SET heads_digest = $1 WHERE head_sequence = $2")
        .bind(&kept.heads_digest)
        .bind(7_i64)
        .execute(store.pool())
        .await
        .unwrap();
    let signed: Vec<SignedHeads> = index::checkpoints(&store)
        .await
        .unwrap()
        .iter()
        .map(SignedHeads::from)
        .collect();
    assert_eq!(signed.len(), 2);
    let report = audit::verify_all(&log, &signed, Some(key), |_, _| {})
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checkpoints_checked, 2, "{report:?}");
    assert!(
        report.signatures_checked && report.warnings.is_empty(),
        "{report:?}"
    );
    // What a pass does not prove is said: signatures unchecked without the key, and
    // nothing to compare with without checkpoints.
    let unkeyed = audit::verify_all(&log, &signed, None, |_, _| {})
        .await
        .unwrap();
    assert!(unkeyed.ok && !unkeyed.signatures_checked, "{unkeyed:?}");
    assert_eq!(unkeyed.warnings.len(), 1, "{unkeyed:?}");
    assert!(unkeyed.warnings[0].contains("signatures were not checked"));
    let bare = audit::verify_all(&log, &[], Some(key), |_, _| {})
        .await
        .unwrap();
    assert!(bare.ok && !bare.signatures_checked, "{bare:?}");
    assert_eq!(bare.warnings.len(), 1, "{bare:?}");
    assert!(bare.warnings[0].contains("no signed checkpoint was compared"));
}

async fn populate(app: &App) -> (Uuid, Uuid) {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    for c in [a, b] {
        app.accept(c, register("Audited")).await;
        app.accept(c, sign("c1")).await;
    }
    let mut body = json!({"type": "log_complaint", "complaint_id": "k1", "severity": "major"});
    body["occurred_at"] = json!("2025-02-01T10:00:00Z");
    app.accept(a, body).await;
    app.accept(b, json!({"type": "record_care_touch", "kind": "birthday"}))
        .await;
    app.accept(a, json!({"type": "record_care_touch", "kind": "holiday"}))
        .await;
    (a, b)
}

async fn queries_filter_by_customer_type_actor_and_time_and_stream_ndjson(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let (a, _b) = populate(&app).await;
    app.settle().await;

    let (status, v) = app.get(&format!("/v1/audit/events?customer_id={a}")).await;
    assert_eq!(status, 200, "{v}");
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    let versions: Vec<u64> = events
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["stream_sequence"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "log order");
    // The same customer written another way (uppercase, without hyphens) is the same
    // customer: the same events, not an empty page.
    for spelled in [
        a.to_string().to_uppercase(),
        a.simple().to_string(),
        format!("{{{a}}}"),
    ] {
        let (status, other) = app
            .get(&format!("/v1/audit/events?customer_id={spelled}"))
            .await;
        assert_eq!(status, 200, "{other}");
        assert_eq!(other["events"], v["events"], "customer_id={spelled}");
    }
    assert!(
        events
            .iter()
            .all(|e| e["hash"].as_str().unwrap().len() == 64)
    );

    let (_, v) = app.get("/v1/audit/events?type=record_care_touch").await;
    assert_eq!(
        v["events"].as_array().unwrap().len(),
        0,
        "filters use event types"
    );
    let (_, v) = app.get("/v1/audit/events?type=care_touch_recorded").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    let (_, v) = app
        .get("/v1/audit/events?actor=tester&type=complaint_logged")
        .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert_eq!(v["events"][0]["customer_id"], a.to_string());
    let (_, v) = app
        .get("/v1/audit/events?from=2025-01-01T00:00:00Z&to=2025-03-01T00:00:00%2B01:00")
        .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = app.get("/v1/audit/events?actor=nobody").await;
    assert!(v["events"].as_array().unwrap().is_empty());
    // The interface's template with every value left empty filters nothing, as an empty
    // field does over gRPC.
    let (_, all) = app.get("/v1/audit/events").await;
    assert_eq!(all["events"].as_array().unwrap().len(), 7);
    let (status, v) = app
        .get("/v1/audit/events?customer_id=&type=&actor=&from=&to=&after_sequence=&limit=")
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["events"], all["events"]);
    let (status, v) = app.get("/v1/audit/verify?customer_id=").await;
    assert_eq!((status.as_u16(), &v["ok"]), (200, &json!(true)), "{v}");
    let (status, v) = app.get("/v1/audit/events?limit=ten").await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );

    // Paging by sequence walks everything once.
    let (_, p1) = app.get("/v1/audit/events?limit=3").await;
    let next = p1["next_after_sequence"].as_u64().unwrap();
    let (_, p2) = app
        .get(&format!("/v1/audit/events?after_sequence={next}&limit=100"))
        .await;
    let sequences: Vec<u64> = [&p1, &p2]
        .iter()
        .flat_map(|p| p["events"].as_array().unwrap().iter())
        .map(|e| e["stream_sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=7).collect::<Vec<u64>>());
    assert_eq!(next, 3);

    // NDJSON streams one event per line.
    let resp = ndjson(&app, "").await;
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[6]["stream_sequence"], 7);
    // A limit caps the stream; 0 is no limit, as over gRPC.
    for (limit, expected) in [(2, 2), (0, 7)] {
        let text = ndjson(&app, &format!("?limit={limit}"))
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(text.lines().count(), expected, "limit={limit}");
    }

    let (status, bad) = app.get("/v1/audit/events?from=yesterday").await;
    assert_eq!(
        (status.as_u16(), bad["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );

    // With the log down, NDJSON answers as the JSON form does (503 with its code), not
    // with a 200 whose body breaks off.
    let mut env = env;
    env.nats.stop().await;
    let resp = ndjson(&app, "").await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (503, Some("log_unavailable")),
        "{body}"
    );
    app.stop().await;
}

/// Stores `payload` on `subject` of the log's stream as it is, past every check of the
/// command path (what someone with publish rights on the stream could do).
async fn store_raw(log: &EventLog, subject: String, payload: Vec<u8>) {
    jetstream::new(log.client().clone())
        .publish(subject, payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// `GET /v1/audit/events<query>` as NDJSON, with the all-roles key.
async fn ndjson(app: &App, query: &str) -> reqwest::Response {
    app.http
        .get(format!("{}/v1/audit/events{query}", app.base))
        .bearer_auth(crm_e2e::KEY)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
}

/// Copies every event into a fresh stream on another server, letting `alter` change,
/// drop or re-seal events on the way.
async fn copy_stream(
    events: &[StoredEvent],
    alter: impl Fn(usize, &Envelope) -> Option<Envelope>,
) -> (Env, EventLog) {
    let target = Env::new().await;
    let log = target.log().await;
    let client = async_nats::connect(target.nats.url()).await.unwrap();
    let js = jetstream::new(client);
    for (i, e) in events.iter().enumerate() {
        if let Some(env) = alter(i, &e.envelope) {
            js.publish(log.subject(&env.customer_id), env.to_bytes().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    (target, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_first_break_in_altered_copies() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let (a, _) = populate(&app).await;
    app.settle().await;

    // The original verifies, over HTTP and directly, and gets a signed checkpoint.
    let (status, cp) = app
        .http
        .post(format!("{}/v1/audit/checkpoints", app.base))
        .bearer_auth(crm_e2e::KEY)
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(status, 201);
    let cp: Value = cp.json().await.unwrap();
    assert_eq!(cp["head_sequence"], 7);
    let (_, report) = app.get("/v1/audit/verify").await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_checked"], 7);
    assert_eq!(report["checkpoints_checked"], 1);
    let (_, one) = app.get(&format!("/v1/audit/verify?customer_id={a}")).await;
    assert_eq!(
        (one["ok"].as_bool(), one["events_checked"].as_u64()),
        (Some(true), Some(4))
    );
    let ghost = uuid::Uuid::now_v7();
    let (status, none) = app
        .get(&format!("/v1/audit/verify?customer_id={ghost}"))
        .await;
    assert_eq!(
        (status.as_u16(), none["error"]["code"].as_str()),
        (404, Some("customer_not_found")),
        "a customer without events is not a verified chain: {none}"
    );

    let events = read_all(&app.parts.log).await;
    let checkpoints = vec![SignedHeads {
        head_sequence: cp["head_sequence"].as_u64().unwrap(),
        customers: cp["customers"].as_u64().unwrap(),
        heads_digest: cp["heads_digest"].as_str().unwrap().into(),
        signature: cp["signature"].as_str().unwrap().into(),
    }];
    let key = Some(AUDIT_KEY.as_bytes());

    // 1. One event rewritten in place (its hash kept): hash mismatch at that sequence.
    let (_t1, copy) = copy_stream(&events, |i, e| {
        let mut e = e.clone();
        if i == 4 {
            let mut payload = e.payload.to_value();
            payload["severity"] = json!("minor");
            e.payload = payload.into();
        }
        Some(e)
    })
    .await;
    let r = audit::verify_all(&copy, &checkpoints, key, |_, _| {})
        .await
        .unwrap();
    assert!(!r.ok);
    let brk = r.first_break.unwrap();
    assert_eq!((brk.kind, brk.sequence), (BreakKind::HashMismatch, 5));
    assert_eq!(brk.customer_id.map(|c| *c.as_uuid()), Some(a));

    // 2. One event dropped: the customer's next event shows the gap.
    let dropped = &events[4];
    let (_t2, copy) = copy_stream(&events, |i, e| (i != 4).then(|| e.clone())).await;
    let r = audit::verify_all(&copy, &checkpoints, key, |_, _| {})
        .await
        .unwrap();
    let brk = r.first_break.unwrap();
    assert_eq!(brk.kind, BreakKind::VersionGap);
    assert_eq!(brk.customer_id, Some(dropped.envelope.customer_id));
    assert_eq!(brk.version, Some(dropped.envelope.version + 1));

    // 3. The whole stream rebuilt from altered data with fresh, consistent hashes: every
    //    chain verifies, but the signed checkpoint of the chain heads does not match.
    let mut heads: std::collections::HashMap<_, String> = Default::default();
    let resealed: Vec<Envelope> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut env = (*e.envelope).clone();
            if i == 4 {
                let mut payload = env.payload.to_value();
                payload["severity"] = json!("minor");
                env.payload = payload.into();
            }
            env.prev_hash = heads
                .get(&env.customer_id)
                .cloned()
                .unwrap_or_else(|| GENESIS_HASH.into());
            env.hash = env.compute_hash();
            heads.insert(env.customer_id, env.hash.clone());
            env
        })
        .collect();
    let (_t3, copy) = copy_stream(&events, |i, _| Some(resealed[i].clone())).await;
    let r = audit::verify_all(&copy, &checkpoints, key, |_, _| {})
        .await
        .unwrap();
    assert!(r.first_break.is_none(), "{r:?}");
    assert!(!r.ok);
    let m = r.checkpoint_mismatch.unwrap();
    assert_eq!(m.head_sequence, 7);
    assert!(m.signature_valid);
    assert_ne!(m.signed_digest, m.log_digest);

    // A forged checkpoint (digest recomputed without the key) is caught by its signature.
    let mut forged = checkpoints[0].clone();
    forged.heads_digest = m.log_digest.clone();
    let r = audit::verify_all(&copy, &[forged], key, |_, _| {})
        .await
        .unwrap();
    assert!(!r.ok);
    assert!(!r.checkpoint_mismatch.unwrap().signature_valid);

    // The stream made again without its last events, or with none: every chain that is
    // left verifies, but the log is shorter than the signed checkpoint says.
    for keep in [5usize, 0] {
        let (_t, copy) = copy_stream(&events, |i, e| (i < keep).then(|| e.clone())).await;
        let r = audit::verify_all(&copy, &checkpoints, key, |_, _| {})
            .await
            .unwrap();
        assert!(r.first_break.is_none(), "{r:?}");
        assert!(!r.ok, "a log of {keep} events passed a checkpoint at 7");
        assert_eq!(r.head_sequence, keep as u64);
        let m = r.checkpoint_mismatch.unwrap();
        assert_eq!(m.head_sequence, 7);
        assert!(m.signature_valid);
        assert_ne!(m.signed_digest, m.log_digest);
    }

    // Garbage published into the stream is named too.
    let (_t4, copy) = copy_stream(&events, |_, e| Some(e.clone())).await;
    store_raw(
        &copy,
        format!("crm.events.00.{}", Uuid::nil()),
        b"not json".to_vec(),
    )
    .await;
    let r = audit::verify_all(&copy, &[], None, |_, _| {})
        .await
        .unwrap();
    assert_eq!(r.first_break.unwrap().kind, BreakKind::Undecodable);

    // A well-formed event of one customer stored on another customer's subject: it links
    // into the first customer's chain, but it is not the second customer's history. Both
    // the full verify and the second customer's verify name it.
    let (_t5, copy) = copy_stream(&events, |_, e| Some(e.clone())).await;
    let other = crm_domain::CustomerId::new(Uuid::now_v7());
    let stray = events.last().unwrap().envelope.clone();
    let mut next = (*stray).clone();
    next.version += 1;
    next.event_id = Uuid::now_v7();
    next.prev_hash = stray.hash.clone();
    next.hash = next.compute_hash();
    store_raw(&copy, copy.subject(&other), next.to_bytes()).await;
    let r = audit::verify_all(&copy, &[], None, |_, _| {})
        .await
        .unwrap();
    let brk = r.first_break.expect("a stray event is a break");
    assert_eq!(
        (brk.kind, brk.sequence),
        (BreakKind::Undecodable, events.len() as u64 + 1)
    );
    assert!(brk.found.contains("stored on subject"), "{brk:?}");
    let r = audit::verify_customer(&copy, &other).await.unwrap();
    assert_eq!(r.first_break.map(|b| b.kind), Some(BreakKind::Undecodable));

    // The same customer's next event on a subject that names the customer but is not
    // its subject (another partition, the id in capitals): the stream takes it, and it
    // is not the customer's history either, so it is named where it stands.
    let owner = stray.customer_id;
    let own = copy.subject(&owner);
    let (prefix, id) = own.rsplit_once('.').unwrap();
    let (stem, partition) = prefix.rsplit_once('.').unwrap();
    let elsewhere = if partition == "00" { "01" } else { "00" };
    for subject in [
        format!("{stem}.{elsewhere}.{id}"),
        format!("{prefix}.{}", id.to_uppercase()),
    ] {
        let (_t6, copy) = copy_stream(&events, |_, e| Some(e.clone())).await;
        store_raw(&copy, subject.clone(), next.to_bytes()).await;
        let r = audit::verify_all(&copy, &[], None, |_, _| {})
            .await
            .unwrap();
        let brk = r.first_break.expect("an event off its subject is a break");
        assert_eq!(
            (brk.kind, brk.sequence),
            (BreakKind::Undecodable, events.len() as u64 + 1),
            "{subject}"
        );
    }
    let _ = StreamSettings::default();
    app.stop().await;
}

/// A page never steps over an event the index names and the log does not return (here the
/// index of a longer log, read against a shorter one): it fails, naming the sequence,
/// instead of answering a short page and paging on past the gap. An index that records
/// the log it was built from is refused on another log at once (`OtherLog`); one from
/// before such records (the row removed here) meets the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_page_fails_on_an_indexed_event_the_log_does_not_hold() {
    use crm_projections::ProjectionError;
    use crm_projections::audit::{self as index, AuditFilter};

    let env = Env::new().await;
    let log = env.log().await;
    register_and_sign(&log, 5).await;
    let store = env.audit_index("views.sqlite", &log, 10).await;

    let shorter = Env::new().await;
    let short_log = shorter.log().await;
    register_and_sign(&short_log, 1).await;
    assert_eq!(short_log.head().await.unwrap(), 2);
    let err = index::page(&store, &short_log, &AuditFilter::default(), 0, 100)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProjectionError::OtherLog { projection, .. } if projection == "audit"),
        "{err}"
    );
    sqlx::query("DELETE FROM projection_logs WHERE name = 'audit'")
        .execute(store.pool())
        .await
        .unwrap();
    let err = index::page(&store, &short_log, &AuditFilter::default(), 0, 100)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProjectionError::MissingEvent { sequence: 3 }),
        "{err}"
    );
    // A full verify of the shorter log passes on its chains alone (no checkpoint covers
    // the lost events), but the index has read past its head: the report fails.
    let mut report = audit::verify_all(&short_log, &[], None, |_, _| {})
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    index::check_index_against_head(&store, &short_log, &mut report)
        .await
        .unwrap();
    assert!(!report.ok, "{report:?}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("past its head 2")),
        "{report:?}"
    );
    let mut report = audit::verify_all(&log, &[], None, |_, _| {}).await.unwrap();
    index::check_index_against_head(&store, &log, &mut report)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");

    // On the log it was built from, the same page holds all ten.
    let page = index::page(&store, &log, &AuditFilter::default(), 0, 100)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
}
