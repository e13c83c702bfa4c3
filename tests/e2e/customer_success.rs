//! The seeds' scenarios, written as the commands real services would send, then the views'
//! colour, score and reasons asserted exactly.

use crm_e2e::{App, Db, Env};
use serde_json::{Value, json};
use uuid::Uuid;

crm_e2e::on_both_stores!(
    inactive_orders_down_and_a_complaint_is_red_with_all_three_reasons,
    purchases_down_three_months_in_a_row_raise_an_alert,
    a_decision_maker_change_is_at_least_yellow_until_it_ages_out,
    detractors_repeated_delays_and_an_empty_trust_account_lower_the_score,
    the_trust_ledger_sums_to_the_balance_per_tier_and_in_total,
    renewals_list_contracts_with_window_status_and_days_left,
);

/// Sends a command at a business time (`YYYY-MM-DD`, noon UTC).
async fn at(app: &App, c: Uuid, day: &str, mut body: Value) -> Value {
    body["occurred_at"] = json!(format!("{day}T12:00:00Z"));
    app.accept(c, body).await
}

async fn onboard(app: &App, c: Uuid, day: &str) {
    at(
        app,
        c,
        day,
        json!({"type": "register_customer", "name": "Seed Co", "segment": "manufacturing"}),
    )
    .await;
    at(
        app,
        c,
        day,
        json!({"type": "sign_contract", "contract_id": "c1", "value_minor": 500_000,
        "currency": "EUR", "starts_on": day, "ends_on": "2026-12-31"}),
    )
    .await;
}

fn reason_codes(v: &Value) -> Vec<String> {
    v["health"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_owned())
        .collect()
}

async fn customer(app: &App, c: Uuid) -> Value {
    let (status, v) = app.get(&format!("/v1/customers/{c}")).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn inactive_orders_down_and_a_complaint_is_red_with_all_three_reasons(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    onboard(&app, c, "2025-01-02").await;
    // A healthy first half: kept promises fill the trust account.
    for (i, day) in ["2025-01-20", "2025-02-20"].iter().enumerate() {
        at(
            &app,
            c,
            day,
            json!({"type": "deliver_service", "contract_id": "c1",
            "service_id": format!("s{i}"), "promised_on": day, "delivered_on": day}),
        )
        .await;
    }
    for (i, day) in ["2025-01-15", "2025-02-15", "2025-03-15"]
        .iter()
        .enumerate()
    {
        at(
            &app,
            c,
            day,
            json!({"type": "record_purchase", "order_id": format!("o{i}"),
            "amount_minor": 100_000, "currency": "EUR", "ordered_on": day}),
        )
        .await;
    }
    // Then orders fall, a complaint arrives and usage stops (seed 003).
    at(
        &app,
        c,
        "2025-05-10",
        json!({"type": "record_purchase", "order_id": "o9",
        "amount_minor": 50_000, "currency": "EUR", "ordered_on": "2025-05-10"}),
    )
    .await;
    at(&app, c, "2025-05-20", json!({"type": "log_complaint", "complaint_id": "k1", "severity": "minor", "topic": "invoice errors"})).await;
    at(
        &app,
        c,
        "2025-06-10",
        json!({"type": "flag_inactivity", "days_inactive": 31, "last_activity_on": "2025-05-10"}),
    )
    .await;

    let v = customer(&app, c).await;
    assert_eq!(v["health"]["color"], "red", "{v}");
    assert_eq!(v["health"]["score"], 40);
    assert_eq!(
        reason_codes(&v),
        vec![
            "no_activity_30_days",
            "order_value_down_20",
            "complaint_on_record"
        ]
    );
    // Trust: +10 +10 deliveries, -10 minor complaint.
    assert_eq!(v["trust"]["balance"], 10);
    assert_eq!(v["trust"]["basic"], 10);

    let (_, alerts) = app.get("/v1/alerts?color=red").await;
    let alerts = alerts["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(alert["customer_id"], c.to_string());
    assert_eq!(alert["recommended_action"]["code"], "executive_escalation");
    assert_eq!(alert["reasons"].as_array().unwrap().len(), 3);
    assert!(alert["escalated_at"].is_string());
    let alert_id = alert["alert_id"].as_str().unwrap().to_owned();

    // Engage: the intervention is recorded against the alert.
    at(
        &app,
        c,
        "2025-06-11",
        json!({"type": "log_intervention", "action": "executive_escalation",
        "note": "CEO call booked", "alert_id": alert_id}),
    )
    .await;
    // Usage resumes: no longer red, still a latent risk (orders down, complaint on record).
    at(
        &app,
        c,
        "2025-06-12",
        json!({"type": "record_activity", "day": "2025-06-12", "logins": 14}),
    )
    .await;
    let v = customer(&app, c).await;
    assert_eq!(v["health"]["color"], "yellow");
    assert_eq!(v["health"]["score"], 65);
    assert_eq!(
        reason_codes(&v),
        vec!["order_value_down_20", "complaint_on_record"]
    );
    let (_, mine) = app.get(&format!("/v1/customers/{c}/alerts")).await;
    let mine = mine["alerts"].as_array().unwrap();
    assert_eq!(mine.len(), 1, "de-escalation keeps the same alert open");
    assert_eq!(mine[0]["status"], "open");
    assert_eq!(mine[0]["color"], "yellow");
    assert_eq!(
        mine[0]["interventions"][0]["action"],
        "executive_escalation"
    );

    // Months later the complaint is out of the window and orders recovered: green, resolved.
    at(
        &app,
        c,
        "2025-09-20",
        json!({"type": "record_purchase", "order_id": "o10",
        "amount_minor": 400_000, "currency": "EUR", "ordered_on": "2025-09-20"}),
    )
    .await;
    let v = customer(&app, c).await;
    assert_eq!(v["health"]["color"], "green", "{v}");
    assert_eq!(v["health"]["score"], 100);
    let (_, mine) = app.get(&format!("/v1/customers/{c}/alerts")).await;
    assert_eq!(mine["alerts"][0]["status"], "resolved");
    assert!(
        mine["alerts"][0]["resolved_at"]
            .as_str()
            .unwrap()
            .starts_with("2025-09-20")
    );
    let (_, open) = app.get("/v1/alerts").await;
    assert!(open["alerts"].as_array().unwrap().is_empty());
    app.stop().await;
}

async fn purchases_down_three_months_in_a_row_raise_an_alert(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    onboard(&app, c, "2024-12-01").await;
    for (i, (day, amount)) in [
        ("2025-01-10", 400_000),
        ("2025-02-10", 300_000),
        ("2025-03-10", 200_000),
        ("2025-04-10", 100_000),
    ]
    .iter()
    .enumerate()
    {
        at(
            &app,
            c,
            day,
            json!({"type": "record_purchase", "order_id": format!("o{i}"),
            "amount_minor": amount, "currency": "EUR", "ordered_on": day}),
        )
        .await;
    }
    let v = customer(&app, c).await;
    assert_eq!(reason_codes(&v), vec!["purchases_down_3_months"]);
    assert_eq!(v["health"]["score"], 85);
    assert_eq!(v["health"]["color"], "yellow");
    let (_, alerts) = app.get("/v1/alerts?color=yellow").await;
    assert_eq!(
        alerts["alerts"][0]["recommended_action"]["code"],
        "dedicated_care_plan"
    );
    app.stop().await;
}

async fn a_decision_maker_change_is_at_least_yellow_until_it_ages_out(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    onboard(&app, c, "2025-01-02").await;
    at(
        &app,
        c,
        "2025-03-01",
        json!({"type": "change_key_contact", "role": "decision_maker",
        "previous_contact": "Ms. Li", "new_contact": "Mr. Wang"}),
    )
    .await;
    let v = customer(&app, c).await;
    assert_eq!(v["health"]["color"], "yellow");
    assert_eq!(v["health"]["score"], 80);
    assert_eq!(reason_codes(&v), vec!["decision_maker_changed"]);

    // Another role weighs less.
    let d = Uuid::now_v7();
    onboard(&app, d, "2025-01-02").await;
    at(
        &app,
        d,
        "2025-03-01",
        json!({"type": "change_key_contact", "role": "finance", "new_contact": "Mr. Zhao"}),
    )
    .await;
    let w = customer(&app, d).await;
    assert_eq!(
        (w["health"]["color"].as_str(), w["health"]["score"].as_u64()),
        (Some("yellow"), Some(90))
    );
    assert_eq!(reason_codes(&w), vec!["key_contact_changed"]);

    // 100 days later, with a care touch in between, the change is history: green.
    at(
        &app,
        c,
        "2025-06-10",
        json!({"type": "record_care_touch", "kind": "holiday"}),
    )
    .await;
    let v = customer(&app, c).await;
    assert_eq!(v["health"]["color"], "green");
    assert_eq!(v["trust"]["emotional"], 3);
    app.stop().await;
}

async fn detractors_repeated_delays_and_an_empty_trust_account_lower_the_score(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    onboard(&app, c, "2025-01-02").await;
    at(
        &app,
        c,
        "2025-02-01",
        json!({"type": "delay_service", "contract_id": "c1", "service_id": "s1",
        "promised_on": "2025-01-28", "days_late": 4, "reason": "supplier"}),
    )
    .await;
    at(
        &app,
        c,
        "2025-02-20",
        json!({"type": "delay_service", "contract_id": "c1", "service_id": "s2",
        "promised_on": "2025-02-10", "days_late": 10}),
    )
    .await;
    at(
        &app,
        c,
        "2025-03-01",
        json!({"type": "record_survey", "kind": "nps", "score": 3, "comment": "slow"}),
    )
    .await;
    let v = customer(&app, c).await;
    assert_eq!(
        reason_codes(&v),
        vec!["nps_detractor", "repeated_delays", "low_trust_balance"]
    );
    assert_eq!(v["health"]["score"], 65);
    assert_eq!(v["health"]["color"], "yellow");
    // -20 for 4 days late, -30 (capped) for 10 days late.
    assert_eq!(v["trust"]["balance"], -50);
    app.stop().await;
}

async fn the_trust_ledger_sums_to_the_balance_per_tier_and_in_total(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    onboard(&app, c, "2025-01-02").await;
    let steps = vec![
        json!({"type": "deliver_service", "contract_id": "c1", "service_id": "s1", "promised_on": "2025-02-01", "delivered_on": "2025-01-30", "exceeded_expectations": true}),
        json!({"type": "delay_service", "contract_id": "c1", "service_id": "s2", "promised_on": "2025-02-01", "days_late": 3}),
        json!({"type": "respond_to_request", "request_id": "r1", "response_minutes": 45}),
        json!({"type": "respond_to_request", "request_id": "r2", "response_minutes": 300}),
        json!({"type": "log_complaint", "complaint_id": "k1", "severity": "critical"}),
        json!({"type": "resolve_complaint", "complaint_id": "k1", "resolution_hours": 20}),
        json!({"type": "deliver_value_add", "kind": "industry_insight", "note": "Q1 market report"}),
        json!({"type": "record_care_touch", "kind": "birthday"}),
        json!({"type": "renew_contract", "contract_id": "c1", "new_ends_on": "2027-12-31"}),
    ];
    for s in steps {
        at(&app, c, "2025-03-01", s).await;
    }
    let (status, ledger) = app.get(&format!("/v1/customers/{c}/trust/ledger")).await;
    assert_eq!(status, 200);
    let entries = ledger["entries"].as_array().unwrap();
    let rules: Vec<(&str, &str, i64)> = entries
        .iter()
        .map(|e| {
            (
                e["rule"].as_str().unwrap(),
                e["tier"].as_str().unwrap(),
                e["points"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        vec![
            ("on_time_delivery", "basic", 10),
            ("exceeded_expectations", "basic", 5),
            ("service_delay", "basic", -15),
            ("fast_response", "basic", 2),
            ("slow_response", "basic", -3),
            ("complaint_critical", "basic", -40),
            ("fast_resolution", "basic", 10),
            ("value_add", "value_added", 15),
            ("care_touch", "emotional", 3),
            ("renewal", "basic", 20),
        ]
    );
    for e in entries {
        assert!(e["event_id"].is_string() && e["stream_sequence"].as_u64().unwrap() > 0);
        assert_eq!(e["policy_version"], "2026-11-default");
        assert!(e["occurred_at"].as_str().unwrap().starts_with("2025-03-01"));
    }
    let sum = |tier: Option<&str>| -> i64 {
        entries
            .iter()
            .filter(|e| tier.is_none_or(|t| e["tier"] == t))
            .map(|e| e["points"].as_i64().unwrap())
            .sum()
    };
    let v = customer(&app, c).await;
    assert_eq!(v["trust"]["basic"].as_i64().unwrap(), sum(Some("basic")));
    assert_eq!(
        v["trust"]["value_added"].as_i64().unwrap(),
        sum(Some("value_added"))
    );
    assert_eq!(
        v["trust"]["emotional"].as_i64().unwrap(),
        sum(Some("emotional"))
    );
    assert_eq!(v["trust"]["balance"].as_i64().unwrap(), sum(None));
    assert_eq!(v["trust"]["balance"], 7);

    // Paging walks the same entries, whatever the page size: the on-time delivery that
    // exceeded expectations prices two lines in one event, and a page ends with a whole
    // event (a page of 1 there holds both).
    for limit in [1, 2, 3, 4, 1000] {
        let mut walked = Vec::new();
        let mut cursor = 0;
        for _ in 0..=entries.len() {
            let (status, page) = app
                .get(&format!(
                    "/v1/customers/{c}/trust/ledger?after_sequence={cursor}&limit={limit}"
                ))
                .await;
            assert_eq!(status, 200);
            let lines = page["entries"].as_array().unwrap();
            assert!(
                lines.len() >= limit.min(entries.len() - walked.len()),
                "{page}"
            );
            walked.extend(lines.iter().cloned());
            match page["next_after_sequence"].as_u64() {
                Some(next) => cursor = next,
                None => break,
            }
        }
        assert_eq!(&walked, entries, "pages of {limit}");
    }

    // And across every customer, straight from the tables.
    let sums = crm_projections::trust::ledger_sums(&app.parts.store)
        .await
        .unwrap();
    let accounts = crm_projections::trust::dump(&app.parts.store)
        .await
        .unwrap();
    for (customer, basic, value_added, emotional, balance, _) in accounts {
        let of = |tier: &str| {
            sums.iter()
                .filter(|(c, t, _)| *c == customer && t == tier)
                .map(|(_, _, s)| *s)
                .sum::<i64>()
        };
        assert_eq!(
            (of("basic"), of("value_added"), of("emotional")),
            (basic, value_added, emotional)
        );
        assert_eq!(basic + value_added + emotional, balance);
    }
    app.stop().await;
}

async fn renewals_list_contracts_with_window_status_and_days_left(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    at(
        &app,
        c,
        "2025-01-02",
        json!({"type": "register_customer", "name": "Renew Co"}),
    )
    .await;
    at(
        &app,
        c,
        "2025-01-02",
        json!({"type": "sign_contract", "contract_id": "soon", "value_minor": 100,
        "currency": "EUR", "starts_on": "2025-01-01", "ends_on": "2025-08-20", "notice_days": 60}),
    )
    .await;
    at(
        &app,
        c,
        "2025-01-02",
        json!({"type": "sign_contract", "contract_id": "later", "value_minor": 100,
        "currency": "EUR", "starts_on": "2025-01-01", "ends_on": "2025-12-31"}),
    )
    .await;
    at(
        &app,
        c,
        "2025-06-25",
        json!({"type": "mark_renewal_due", "contract_id": "soon", "term_ends_on": "2025-08-20"}),
    )
    .await;
    app.settle().await;
    let (status, r) = app
        .get("/v1/renewals?within_days=90&as_of=2025-06-01")
        .await;
    assert_eq!(status, 200);
    let list = r["renewals"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{r}");
    assert_eq!(list[0]["contract_id"], "soon");
    assert_eq!(list[0]["status"], "due");
    assert_eq!(list[0]["days_left"], 80);
    assert_eq!(list[0]["notice_from"], "2025-06-21");
    let (_, r) = app
        .get("/v1/renewals?within_days=365&as_of=2025-06-01")
        .await;
    assert_eq!(r["renewals"].as_array().unwrap().len(), 2);
    // After its end date, "soon" has lapsed: listed within the window before `as_of`,
    // oldest first, unless lapsed contracts are left out.
    let (_, r) = app
        .get("/v1/renewals?within_days=30&as_of=2025-09-01")
        .await;
    let list = r["renewals"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{r}");
    assert_eq!(
        (
            &list[0]["contract_id"],
            &list[0]["status"],
            &list[0]["days_left"]
        ),
        (&json!("soon"), &json!("lapsed"), &json!(-12))
    );
    let (_, r) = app
        .get("/v1/renewals?within_days=30&as_of=2025-09-01&include_lapsed=false")
        .await;
    assert_eq!(r["renewals"], json!([]), "{r}");
    let (_, r) = app
        .get("/v1/renewals?within_days=150&as_of=2025-09-01")
        .await;
    let order = crm_e2e::renewal_statuses(&r);
    assert_eq!(
        order,
        vec![
            (json!("soon"), json!("lapsed")),
            (json!("later"), json!("active"))
        ]
    );
    // Pages of one continue after the last contract listed.
    let (_, p1) = app
        .get("/v1/renewals?within_days=150&as_of=2025-09-01&limit=1")
        .await;
    assert_eq!(p1["renewals"][0]["contract_id"], "soon", "{p1}");
    let after = p1["next_after"].as_str().unwrap().to_owned();
    assert!(after.starts_with("2025-08-20/"), "{after}");
    let (_, p2) = app
        .get(&format!(
            "/v1/renewals?within_days=150&as_of=2025-09-01&limit=1&after={after}"
        ))
        .await;
    assert_eq!(p2["renewals"][0]["contract_id"], "later", "{p2}");
    let after = p2["next_after"].as_str().unwrap().to_owned();
    let (_, p3) = app
        .get(&format!(
            "/v1/renewals?within_days=150&as_of=2025-09-01&limit=1&after={after}"
        ))
        .await;
    assert_eq!(p3["renewals"], json!([]), "{p3}");
    assert_eq!(p3["next_after"], json!(null));
    let (status, bad) = app.get("/v1/renewals?after=yesterday").await;
    assert_eq!(
        (status.as_u16(), bad["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (_, r) = app.get("/v1/renewals?within_days=5&as_of=2025-09-01").await;
    assert_eq!(
        r["renewals"],
        json!([]),
        "ended 12 days before: outside 5 days {r}"
    );
    let (status, bad) = app.get("/v1/renewals?within_days=soon").await;
    assert_eq!(
        (status.as_u16(), bad["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    app.stop().await;
}

/// A read waits for the client's own write only in the views it answers from: with the
/// renewals projector not running at all, the trust ledger and the customer still answer
/// at once with the write in them (before, every read waited out `read_your_writes_ms` on
/// the renewals view, and then answered).
#[tokio::test]
async fn a_read_waits_only_for_the_views_it_reads() {
    let env = Env::new().await;
    let mut cfg = env.config("views.sqlite");
    cfg.gateway.read_your_writes_ms = 20_000;
    let app = App::start_with(cfg.clone(), false).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut projectors = tokio::task::JoinSet::new();
    crm_cli::services::spawn_projectors(
        &cfg,
        &app.parts,
        &["lifecycle", "trust", "health"],
        &mut projectors,
        &shutdown,
    )
    .unwrap();
    let c = Uuid::now_v7();
    app.accept(c, crm_e2e::register("Quick")).await;
    app.accept(c, crm_e2e::sign("c1")).await;
    app.accept(c, json!({"type": "record_care_touch", "kind": "birthday"}))
        .await;

    let started = std::time::Instant::now();
    let (s, ledger) = app.get(&format!("/v1/customers/{c}/trust/ledger")).await;
    assert_eq!(s, 200, "{ledger}");
    assert!(
        ledger["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event_type"] == "care_touch_recorded"),
        "{ledger}"
    );
    let (s, v) = app.get(&format!("/v1/customers/{c}")).await;
    assert_eq!((s.as_u16(), v["version"].as_u64()), (200, Some(3)), "{v}");
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(10),
        "the reads waited {waited:?} for a view they do not use"
    );
    shutdown.cancel();
    while projectors.join_next().await.is_some() {}
    app.stop().await;
}
