//! The lifecycle walk through the public command path.

use crm_e2e::{App, Db, Env, register, sign};
use serde_json::json;
use uuid::Uuid;

crm_e2e::on_both_stores!(
    acquisition_growth_maturity_churned_and_win_back,
    views_and_log_survive_a_restart,
    red_health_is_a_decline_until_it_recovers,
);

async fn acquisition_growth_maturity_churned_and_win_back(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();

    app.accept(c, register("Acme")).await;
    let (_, v) = app.get(&format!("/v1/customers/{c}")).await;
    assert_eq!(v["lifecycle"]["stage"], "acquisition");
    assert_eq!(v["version"], 1);

    app.accept(c, sign("c1")).await;
    app.accept(
        c,
        json!({"type": "delay_service", "contract_id": "c1", "service_id": "s1",
               "promised_on": "2025-03-01", "days_late": 3}),
    )
    .await;
    let (_, v) = app.get(&format!("/v1/customers/{c}")).await;
    assert_eq!(v["lifecycle"]["stage"], "growth", "{v}");
    assert_eq!(v["version"], 3);

    app.accept(
        c,
        json!({"type": "renew_contract", "contract_id": "c1", "new_ends_on": "2026-12-31"}),
    )
    .await;
    let (_, v) = app.get(&format!("/v1/customers/{c}")).await;
    assert_eq!(v["lifecycle"]["stage"], "maturity");

    app.accept(
        c,
        json!({"type": "terminate_contract", "contract_id": "c1", "reason": "budget"}),
    )
    .await;
    let (_, v) = app.get(&format!("/v1/customers/{c}")).await;
    assert_eq!(v["lifecycle"]["stage"], "churned");
    assert_eq!(v["lifecycle"]["won_back"], false);

    // After churn only a win-back or an intervention is accepted.
    let (status, body) = app
        .command(c, json!({"type": "record_care_touch", "kind": "birthday"}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "customer_churned");

    app.accept(c, sign("c2")).await;
    let (_, v) = app.get(&format!("/v1/customers/{c}")).await;
    assert_eq!(v["lifecycle"]["stage"], "growth");
    assert_eq!(v["lifecycle"]["won_back"], true);
    assert_eq!(v["version"], 6);

    let (status, h) = app
        .get(&format!("/v1/customers/{c}/lifecycle/history"))
        .await;
    assert_eq!(status, 200);
    let steps: Vec<(serde_json::Value, String, u64, String)> = h["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].clone(),
                t["to"].as_str().unwrap().to_owned(),
                t["version"].as_u64().unwrap(),
                t["event_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (
                json!(null),
                "acquisition".into(),
                1,
                "customer_registered".into()
            ),
            (
                json!("acquisition"),
                "growth".into(),
                2,
                "contract_signed".into()
            ),
            (
                json!("growth"),
                "maturity".into(),
                4,
                "contract_renewed".into()
            ),
            (
                json!("maturity"),
                "churned".into(),
                5,
                "contract_terminated".into()
            ),
            (
                json!("churned"),
                "growth".into(),
                6,
                "contract_signed".into()
            ),
        ]
    );

    let (_, stages) = app.get("/v1/stages").await;
    assert_eq!(stages["stages"]["growth"], 1);
    assert_eq!(stages["stages"]["churned"], 0);
    assert_eq!(stages["total"], 1);
    app.stop().await;
}

async fn views_and_log_survive_a_restart(db: Db) {
    let env = Env::on(db).await;
    let c = Uuid::now_v7();
    let app = App::start(&env).await;
    app.accept(c, register("Persist")).await;
    app.accept(c, sign("c1")).await;
    app.settle().await;
    app.stop().await;

    let app = App::start(&env).await;
    let (status, v) = app.get(&format!("/v1/customers/{c}")).await;
    assert_eq!(status, 200);
    assert_eq!(v["version"], 2);
    assert_eq!(v["lifecycle"]["stage"], "growth");
    // The restarted process has an empty cache: the next command still gets version 3.
    let r = app
        .accept(c, json!({"type": "record_care_touch", "kind": "holiday"}))
        .await;
    assert_eq!(r["version"], 3);
    app.stop().await;
}

/// Decline while red (domain brief): the lifecycle projection scores health under the
/// configured policy, the same score the health view shows.
async fn red_health_is_a_decline_until_it_recovers(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    app.accept(c, register("Acme")).await;
    app.accept(c, sign("c1")).await;
    for command in [
        json!({"type": "change_key_contact", "role": "decision_maker", "new_contact": "Jane"}),
        json!({"type": "log_complaint", "complaint_id": "k1", "severity": "major"}),
        json!({"type": "record_survey", "kind": "nps", "score": 3}),
    ] {
        app.accept(c, command).await;
    }
    // The customer's health colour and lifecycle stage, as the view shows them.
    let colour_and_stage = || async {
        let (_, v) = app.get(&format!("/v1/customers/{c}")).await;
        (
            v["health"]["color"].clone(),
            v["lifecycle"]["stage"].clone(),
        )
    };
    assert_eq!(colour_and_stage().await, (json!("yellow"), json!("growth")));

    app.accept(
        c,
        json!({"type": "record_survey", "kind": "csat", "score": 1}),
    )
    .await;
    assert_eq!(colour_and_stage().await, (json!("red"), json!("decline")));

    app.accept(
        c,
        json!({"type": "record_survey", "kind": "csat", "score": 5}),
    )
    .await;
    assert_eq!(colour_and_stage().await, (json!("yellow"), json!("growth")));

    let (_, h) = app
        .get(&format!("/v1/customers/{c}/lifecycle/history"))
        .await;
    let steps: Vec<(String, String)> = h["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["to"].as_str().unwrap().to_owned(),
                t["event_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("acquisition", "customer_registered"),
        ("growth", "contract_signed"),
        ("decline", "survey_answered"),
        ("growth", "survey_answered"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(steps, expected, "{h}");
}

/// Business days are UTC days: the same instant gets the same decision whatever offset
/// the sender wrote it with, and the event is stored in UTC. (c1 ends 2025-12-31 with 90
/// days' notice: the window opens on 2025-10-02.)
#[tokio::test]
async fn business_days_are_utc_days_whatever_offset_the_sender_writes() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let (west, east) = (Uuid::now_v7(), Uuid::now_v7());
    for c in [west, east] {
        app.accept(c, register("Offset")).await;
        app.accept(c, sign("c1")).await;
    }
    let due = |at: &str| {
        json!({"type": "mark_renewal_due", "contract_id": "c1", "term_ends_on": "2025-12-31",
            "occurred_at": at})
    };
    // 23:30 on 1 October at UTC-2 is 01:30 UTC on 2 October: inside the window.
    let receipt = app.accept(west, due("2025-10-01T23:30:00-02:00")).await;
    // 00:30 on 2 October at UTC+14 is 10:30 UTC on 1 October: not yet.
    let (s, body) = app.command(east, due("2025-10-02T00:30:00+14:00")).await;
    assert_eq!(
        (s.as_u16(), body["error"]["code"].as_str()),
        (422, Some("renewal_not_due")),
        "{body}"
    );

    let events = crm_e2e::read_all(&env.log().await).await;
    let marked = events
        .iter()
        .find(|e| e.envelope.event_id.to_string() == receipt["event_id"].as_str().unwrap())
        .expect("the marked event");
    assert_eq!(
        marked.envelope.occurred_at,
        time::macros::datetime!(2025-10-02 01:30 UTC)
    );
    assert!(marked.envelope.occurred_at.offset().is_utc());
    app.stop().await;
}
