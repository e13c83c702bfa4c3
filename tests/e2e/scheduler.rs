//! The scheduler marks renewals due and flags inactivity exactly once, with two schedulers
//! ticking at once and across a restart, and only when the clock enters the window.

use std::sync::Arc;

use crm_e2e::{App, Db, Env, read_all};
use crm_log::Customers;
use crm_scheduler::{ManualClock, Scheduler};
use serde_json::json;
use time::macros::datetime;
use uuid::Uuid;

crm_e2e::on_both_stores!(
    renewal_due_and_inactivity_exactly_once,
    a_customer_whose_command_fails_does_not_hold_up_the_others,
    an_unrenewed_contract_lapses_and_its_last_one_churns_the_customer,
);

/// Registers customer `c` and signs `contract` (a `sign_contract` body), both on
/// 2025-04-01.
async fn registered_and_signed(app: &App, c: Uuid, contract: serde_json::Value) {
    for mut body in [
        json!({"type": "register_customer", "name": "Clockwork"}),
        contract,
    ] {
        body["occurred_at"] = json!("2025-04-01T09:00:00Z");
        app.accept(c, body).await;
    }
}

/// Registers a customer on 2025-04-01 with a contract ending 2025-08-20 (inside the
/// renewal window on 2025-06-01).
async fn customer_near_renewal(app: &App, c: Uuid) {
    registered_and_signed(
        app,
        c,
        json!({"type": "sign_contract", "contract_id": "near", "value_minor": 100,
            "currency": "EUR", "starts_on": "2024-08-20", "ends_on": "2025-08-20"}),
    )
    .await;
}

async fn renewal_due_and_inactivity_exactly_once(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    let at = |mut body: serde_json::Value| {
        body["occurred_at"] = json!("2025-04-01T09:00:00Z");
        body
    };
    app.accept(
        c,
        at(json!({"type": "register_customer", "name": "Clockwork"})),
    )
    .await;
    // Ends 80 days after the scheduler's "now" (2025-06-01): inside the 90-day window.
    app.accept(
        c,
        at(
            json!({"type": "sign_contract", "contract_id": "near", "value_minor": 100,
        "currency": "EUR", "starts_on": "2024-08-20", "ends_on": "2025-08-20"}),
        ),
    )
    .await;
    // Ends 120 days after: outside until the clock passes 2025-07-01.
    app.accept(
        c,
        at(
            json!({"type": "sign_contract", "contract_id": "far", "value_minor": 100,
        "currency": "EUR", "starts_on": "2024-09-29", "ends_on": "2025-09-29"}),
        ),
    )
    .await;
    app.settle().await;

    let clock = Arc::new(ManualClock::new(datetime!(2025-06-01 08:00 UTC)));
    // Two schedulers with separate caches, as two processes would have.
    let log = env.log().await;
    let one = Scheduler::new(
        app.parts.customers.clone(),
        app.parts.store.clone(),
        clock.clone(),
    );
    let two = Scheduler::new(
        Arc::new(Customers::new(log.clone(), 100, 8)),
        app.parts.store.clone(),
        clock.clone(),
    );
    let (a, b) = tokio::join!(one.tick(), two.tick());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.renewals_marked_due + b.renewals_marked_due,
        1,
        "{a:?} {b:?}"
    );
    // Registered 2025-04-01, never active: 61 days without activity.
    assert_eq!(
        a.inactivity_flagged + b.inactivity_flagged,
        1,
        "{a:?} {b:?}"
    );

    // A restarted scheduler (new cache) on views that may lag: nothing new.
    let restarted = Scheduler::new(
        Arc::new(Customers::new(log.clone(), 100, 8)),
        app.parts.store.clone(),
        clock.clone(),
    );
    let again = restarted.tick().await.unwrap();
    assert_eq!(
        (again.renewals_marked_due, again.inactivity_flagged),
        (0, 0)
    );
    app.settle().await;
    let again = restarted.tick().await.unwrap();
    assert_eq!(
        (again.renewals_marked_due, again.inactivity_flagged),
        (0, 0)
    );

    let due_events = |events: &[crm_log::StoredEvent], contract: &str| {
        events
            .iter()
            .filter(|e| {
                e.envelope.event_type == "renewal_marked_due"
                    && e.envelope.payload.to_value()["contract_id"] == contract
            })
            .count()
    };
    let events = read_all(&log).await;
    assert_eq!(due_events(&events, "near"), 1);
    assert_eq!(due_events(&events, "far"), 0);
    let flagged: Vec<_> = events
        .iter()
        .filter(|e| e.envelope.event_type == "inactivity_flagged")
        .collect();
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].envelope.payload.to_value()["days_inactive"], 61);
    assert_eq!(flagged[0].envelope.actor, "scheduler");
    assert_eq!(
        flagged[0].envelope.occurred_at,
        datetime!(2025-06-01 08:00 UTC)
    );

    // The clock moves past the far contract's window.
    clock.set(datetime!(2025-07-02 08:00 UTC));
    let later = one.tick().await.unwrap();
    assert_eq!(later.renewals_marked_due, 1);
    let events = read_all(&log).await;
    assert_eq!(due_events(&events, "far"), 1);
    assert_eq!(due_events(&events, "near"), 1);

    app.settle().await;
    let (_, r) = app
        .get("/v1/renewals?within_days=120&as_of=2025-07-02")
        .await;
    let statuses = crm_e2e::renewal_statuses(&r);
    assert_eq!(
        statuses,
        vec![(json!("near"), json!("due")), (json!("far"), json!("due"))]
    );
    app.stop().await;
}

async fn a_customer_whose_command_fails_does_not_hold_up_the_others(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let customers: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for c in &customers {
        customer_near_renewal(&app, *c).await;
    }
    // The middle customer already used the key the scheduler's mark_renewal_due will
    // carry, for another command: that command is refused for this customer alone.
    app.accept_with(
        customers[1],
        json!({"type": "record_activity", "day": "2025-04-01", "logins": 1,
            "occurred_at": "2025-04-01T10:00:00Z"}),
        &[("idempotency-key", "renewal-due:near:2025-08-20")],
    )
    .await;
    app.settle().await;

    let clock = Arc::new(ManualClock::new(datetime!(2025-06-01 08:00 UTC)));
    let scheduler = Scheduler::new(app.parts.customers.clone(), app.parts.store.clone(), clock);
    let report = scheduler
        .tick()
        .await
        .expect("the pass goes on past one customer");
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(report.renewals_marked_due, 2, "{report:?}");
    // Every customer, the failing one too, is 61 days without activity.
    assert_eq!(report.inactivity_flagged, 3, "{report:?}");

    let events = read_all(&env.log().await).await;
    let marked = |c: Uuid| {
        events
            .iter()
            .filter(|e| {
                e.envelope.event_type == "renewal_marked_due"
                    && *e.envelope.customer_id.as_uuid() == c
            })
            .count()
    };
    assert_eq!(
        customers.iter().map(|c| marked(*c)).collect::<Vec<_>>(),
        vec![1, 0, 1]
    );
    // The next tick tries the failing customer again, and it fails again; the others
    // are done.
    let again = scheduler.tick().await.unwrap();
    assert_eq!(
        (
            again.failed,
            again.renewals_marked_due,
            again.inactivity_flagged
        ),
        (1, 0, 0),
        "{again:?}"
    );
    app.stop().await;
}

/// The scheduler flags at the threshold it is given (the policy's `no_activity_days`), and
/// a shorter flag sent before it (by hand, or by a scheduler under another policy) does not
/// keep the scheduler from flagging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactivity_is_flagged_at_the_threshold_even_after_a_shorter_flag() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let (quiet, hand_flagged) = (Uuid::now_v7(), Uuid::now_v7());
    for c in [quiet, hand_flagged] {
        registered_and_signed(
            &app,
            c,
            json!({"type": "sign_contract", "contract_id": "c1", "value_minor": 100,
                "currency": "EUR", "starts_on": "2025-04-01", "ends_on": "2027-03-31"}),
        )
        .await;
    }
    // Sent with the key a scheduler flagging after 5 days would have used: a scheduler
    // with another threshold does not take its own flag for a replay of it.
    app.accept_with(
        hand_flagged,
        json!({"type": "flag_inactivity", "days_inactive": 5,
            "occurred_at": "2025-04-06T09:00:00Z"}),
        &[("idempotency-key", "inactivity:2025-04-01")],
    )
    .await;
    app.settle().await;

    let clock = Arc::new(ManualClock::new(datetime!(2025-05-02 08:00 UTC)));
    let scheduler = Scheduler::new(
        app.parts.customers.clone(),
        app.parts.store.clone(),
        clock.clone(),
    )
    .flag_inactivity_after(45);
    // 31 days: not yet.
    assert_eq!(scheduler.tick().await.unwrap().inactivity_flagged, 0);
    // 45 days: both, the hand-flagged one too.
    clock.set(datetime!(2025-05-16 08:00 UTC));
    assert_eq!(scheduler.tick().await.unwrap().inactivity_flagged, 2);
    app.settle().await;
    for c in [quiet, hand_flagged] {
        let (_, v) = app.get(&format!("/v1/customers/{c}")).await;
        assert_eq!(v["lifecycle"]["stage"], "decline", "{v}");
        assert!(
            v["health"]["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["code"] == "no_activity_30_days"),
            "{v}"
        );
    }
    let flags: Vec<u64> = read_all(&env.log().await)
        .await
        .iter()
        .filter(|e| e.envelope.event_type == "inactivity_flagged")
        .map(|e| {
            e.envelope.payload.to_value()["days_inactive"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(flags, vec![5, 45, 45]);
    // Once flagged, not again.
    assert_eq!(scheduler.tick().await.unwrap().inactivity_flagged, 0);
    app.stop().await;
}

/// Shutdown does not wait for a pass to end. With the log gone, every command of the pass
/// waits for its publish to time out; `run` still returns as soon as it is asked to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_the_pass_to_end() {
    let mut env = Env::new().await;
    let app = App::start(&env).await;
    for _ in 0..4 {
        customer_near_renewal(&app, Uuid::now_v7()).await;
    }
    app.settle().await;
    env.nats.kill().await;

    let clock = Arc::new(ManualClock::new(datetime!(2025-06-01 08:00 UTC)));
    let scheduler = Scheduler::new(app.parts.customers.clone(), app.parts.store.clone(), clock);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            scheduler
                .run(std::time::Duration::from_secs(3600), shutdown)
                .await
        }
    });
    // The first tick starts at once, and its first command is now waiting on the log.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!run.is_finished(), "the pass is still sending");
    let asked = std::time::Instant::now();
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(2), run)
        .await
        .expect("run returns within 2 s of the shutdown, in the middle of its pass")
        .expect("no panic");
    assert!(asked.elapsed() < std::time::Duration::from_secs(2));

    env.nats.restart(None).await.unwrap();
    app.stop().await;
}

/// "Churned (all contracts ended, none renewed)": once a term has passed without a
/// renewal (and the grace days after it), the scheduler ends the contract as lapsed, once;
/// the customer whose last contract lapsed churns, one with another contract does not, and
/// a contract renewed in time is left alone.
async fn an_unrenewed_contract_lapses_and_its_last_one_churns_the_customer(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let (only, two, renewed) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let ending = json!({"type": "sign_contract", "contract_id": "old", "value_minor": 100,
        "currency": "EUR", "starts_on": "2024-06-01", "ends_on": "2025-05-31"});
    for c in [only, two, renewed] {
        registered_and_signed(&app, c, ending.clone()).await;
    }
    app.accept(
        two,
        json!({"type": "sign_contract", "contract_id": "long", "value_minor": 100,
            "currency": "EUR", "starts_on": "2025-04-01", "ends_on": "2026-12-31",
            "occurred_at": "2025-04-01T10:00:00Z"}),
    )
    .await;
    app.accept(
        renewed,
        json!({"type": "renew_contract", "contract_id": "old", "new_ends_on": "2026-05-31",
            "occurred_at": "2025-05-20T10:00:00Z"}),
    )
    .await;
    app.settle().await;

    // The last day, 2025-05-31, is still going on at UTC-12 until 12:00 UTC on 1 June:
    // nothing lapses before then.
    let clock = Arc::new(ManualClock::new(datetime!(2025-06-01 11:59 UTC)));
    let early = Scheduler::new(
        app.parts.customers.clone(),
        app.parts.store.clone(),
        clock.clone(),
    )
    .lapse_when_quiet_for(std::time::Duration::ZERO);
    let report = early.tick().await.unwrap();
    assert_eq!(
        (
            report.contracts_lapsed,
            report.lapses_deferred,
            report.failed
        ),
        (0, 0, 0),
        "{report:?}"
    );
    clock.set(datetime!(2025-06-01 12:00 UTC));
    // While the customers' histories are still being written (just now, here), nothing
    // lapses: a back-fill sends a renewal some commands after the signing.
    let by_default = Scheduler::new(
        app.parts.customers.clone(),
        app.parts.store.clone(),
        clock.clone(),
    );
    let report = by_default.tick().await.unwrap();
    assert_eq!(
        (report.contracts_lapsed, report.lapses_deferred),
        (0, 2),
        "{report:?}"
    );
    let quiet = std::time::Duration::ZERO;
    // Inside the grace days nothing lapses.
    let patient = Scheduler::new(
        app.parts.customers.clone(),
        app.parts.store.clone(),
        clock.clone(),
    )
    .lapse_after(30)
    .lapse_when_quiet_for(quiet);
    assert_eq!(patient.tick().await.unwrap().contracts_lapsed, 0);

    let scheduler = Scheduler::new(app.parts.customers.clone(), app.parts.store.clone(), clock)
        .lapse_when_quiet_for(quiet);
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.contracts_lapsed, 2, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    // Before the views have caught up, a second pass replays its keys: nothing new.
    let again = scheduler.tick().await.unwrap();
    assert_eq!(again.contracts_lapsed, 0, "{again:?}");

    let events = read_all(&env.log().await).await;
    let ended: Vec<_> = events
        .iter()
        .filter(|e| e.envelope.event_type == "contract_terminated")
        .map(|e| {
            let p: serde_json::Value = serde_json::from_str(e.envelope.payload.get()).unwrap();
            (*e.envelope.customer_id.as_uuid(), p)
        })
        .collect();
    assert_eq!(ended.len(), 2, "{ended:?}");
    for (c, p) in &ended {
        assert_eq!(p["lapsed"], true, "{p}");
        assert_eq!(p["contract_id"], "old", "{p}");
        assert_eq!(p["churned"], *c == only, "{p}");
    }

    app.settle().await;
    let stage = |v: &serde_json::Value| v["lifecycle"]["stage"].as_str().unwrap().to_owned();
    let (_, v) = app.get(&format!("/v1/customers/{only}")).await;
    assert_eq!(stage(&v), "churned", "{v}");
    let (_, v) = app.get(&format!("/v1/customers/{two}")).await;
    assert_ne!(stage(&v), "churned", "{v}");
    let (_, v) = app.get(&format!("/v1/customers/{renewed}")).await;
    assert_ne!(stage(&v), "churned", "{v}");
    // The renewals view lists the ended contracts as lapsed, not as terminated.
    let (s, page) = app
        .get("/v1/renewals?as_of=2025-06-01&within_days=30")
        .await;
    assert_eq!(s, 200, "{page}");
    let mut lapsed: Vec<_> = page["renewals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "lapsed")
        .map(|r| r["customer_id"].as_str().unwrap().to_owned())
        .collect();
    lapsed.sort();
    let mut expected = vec![only.to_string(), two.to_string()];
    expected.sort();
    assert_eq!(lapsed, expected, "{page}");
    // The views have caught up: the next pass finds nothing to end.
    let later = scheduler.tick().await.unwrap();
    assert_eq!(
        (later.contracts_lapsed, later.skipped, later.failed),
        (0, 0, 0),
        "{later:?}"
    );
    app.stop().await;
}

/// The lapse pass reads the renewals view, which may be behind the log: a contract renewed
/// after the view was built is not ended. The command names the term the view saw, which
/// the renewal replaced, so it is refused (`term_mismatch`) and counted as skipped.
#[tokio::test]
async fn a_renewal_the_view_has_not_seen_keeps_the_contract_from_lapsing() {
    let env = Env::new().await;
    let log = env.log().await;
    let customers = Arc::new(Customers::new(log.clone(), 1_000, 8));
    let c = crm_domain::CustomerId::new(Uuid::now_v7());
    let submit = |body: serde_json::Value, at: time::OffsetDateTime| {
        let customers = customers.clone();
        async move {
            let cmd: crm_domain::Command = serde_json::from_value(body).unwrap();
            let mut opts = crm_log::SubmitOptions::now("tester");
            opts.occurred_at = Some(at);
            customers.submit(c, &cmd, &opts).await.unwrap();
        }
    };
    submit(
        json!({"type": "register_customer", "name": "Late renewer"}),
        datetime!(2025-04-01 09:00 UTC),
    )
    .await;
    submit(
        json!({"type": "sign_contract", "contract_id": "old", "value_minor": 100,
            "currency": "EUR", "starts_on": "2024-06-01", "ends_on": "2025-05-31"}),
        datetime!(2025-04-01 09:00 UTC),
    )
    .await;
    let views = env.fresh_views("views.sqlite", &log, 2).await;
    // Renewed after the views were built: they still show the ended term.
    submit(
        json!({"type": "renew_contract", "contract_id": "old", "new_ends_on": "2026-05-31"}),
        datetime!(2025-05-20 09:00 UTC),
    )
    .await;

    let clock = Arc::new(ManualClock::new(datetime!(2025-06-01 13:00 UTC)));
    let scheduler = Scheduler::new(customers.clone(), views, clock)
        .lapse_when_quiet_for(std::time::Duration::ZERO);
    let report = scheduler.tick().await.unwrap();
    assert_eq!(
        (report.contracts_lapsed, report.skipped, report.failed),
        (0, 1, 0),
        "{report:?}"
    );
    let events = read_all(&log).await;
    assert!(
        !events
            .iter()
            .any(|e| e.envelope.event_type == "contract_terminated"),
        "the renewed contract was ended"
    );
}
