//! `crm demo` produces every scenario of the seeds, and is idempotent.

use crm_cli::demo::{self, DemoArgs};
use crm_e2e::{App, Env};
use serde_json::Value;

fn codes(v: &Value) -> Vec<String> {
    v["health"]["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["code"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_data_covers_every_scenario() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let args = DemoArgs {
        customers: 14,
        seed: 7,
        until: Some("2025-12-15".into()),
        concurrency: 4,
    };
    let (written, replayed) = demo::run(app.parts.customers.clone(), &args).await.unwrap();
    assert!(written > 14 * 30, "{written}");
    assert_eq!(replayed, 0);
    app.settle().await;
    let head = app.parts.log.head().await.unwrap();
    for name in crm_cli::services::PROJECTIONS {
        crm_e2e::wait_for_checkpoint(&app.parts.store, name, head).await;
    }

    let until = time::macros::date!(2025 - 12 - 15);
    let mut seen = std::collections::BTreeSet::new();
    let mut due = Vec::new();
    for i in 0..14 {
        let (id, scenario, _) = demo::story(i, 7, until);
        seen.insert(scenario);
        let (status, v) = app.get(&format!("/v1/customers/{id}")).await;
        assert_eq!(status, 200, "{scenario}: {v}");
        let reasons = codes(&v);
        match scenario {
            "loyal_grower" => {
                assert_eq!(v["lifecycle"]["stage"], "maturity", "{v}");
                assert_eq!(v["health"]["color"], "green", "{v}");
                assert!(v["tier"] == "A" || v["tier"] == "B", "{v}");
                assert!(v["trust"]["balance"].as_i64().unwrap() > 100, "{v}");
            }
            "red_triple" => {
                assert_eq!(v["health"]["color"], "red", "{v}");
                for code in [
                    "no_activity_30_days",
                    "order_value_down_20",
                    "complaint_on_record",
                ] {
                    assert!(
                        reasons.iter().any(|r| r == code),
                        "{scenario} lacks {code}: {v}"
                    );
                }
                assert_eq!(v["lifecycle"]["stage"], "decline");
            }
            "purchases_falling" => {
                assert!(
                    reasons.iter().any(|r| r == "purchases_down_3_months"),
                    "{v}"
                );
                assert_ne!(v["health"]["color"], "green");
                assert_eq!(v["lifecycle"]["stage"], "decline", "{v}");
            }
            "decision_maker_changed" => {
                assert!(reasons.iter().any(|r| r == "decision_maker_changed"), "{v}");
                assert_ne!(v["health"]["color"], "green");
            }
            "detractor_with_delays" => {
                assert!(reasons.iter().any(|r| r == "nps_detractor"), "{v}");
                assert!(reasons.iter().any(|r| r == "repeated_delays"), "{v}");
            }
            "churned_and_won_back" => {
                assert_eq!(v["lifecycle"]["won_back"], true, "{v}");
                assert_eq!(v["lifecycle"]["stage"], "growth", "{v}");
            }
            "renewal_coming_due" => due.push(id.to_string()),
            other => panic!("unknown scenario {other}"),
        }
    }
    let (_, renewals) = app
        .get("/v1/renewals?within_days=90&as_of=2025-12-15&limit=1000")
        .await;
    let coming: Vec<_> = renewals["renewals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["contract_id"] == "c2")
        .collect();
    // Every scenario is among the 14 customers, and every renewal_coming_due customer's
    // second contract is in the 90-day window.
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(!due.is_empty());
    for id in &due {
        assert!(
            coming.iter().any(|r| r["customer_id"] == id.as_str()),
            "{id} not coming due: {renewals}"
        );
    }
    let (_, red) = app.get("/v1/alerts?color=red").await;
    assert!(red["alerts"].as_array().unwrap().len() >= 2);
    let (_, stages) = app.get("/v1/stages").await;
    assert_eq!(stages["total"], 14);

    // The same seed again writes nothing.
    let (written, replayed) = demo::run(app.parts.customers.clone(), &args).await.unwrap();
    assert_eq!(written, 0);
    assert!(replayed > 0);
    // And on later days (`crm dev --demo` restarted: the stories end yesterday), in a new
    // month, where the purchases on the first of each month fall between other steps
    // than before: nothing new either.
    for until in ["2025-12-16", "2026-01-20", "2026-03-02"] {
        let later = DemoArgs {
            until: Some(until.into()),
            ..args.clone()
        };
        let (written, replayed) = demo::run(app.parts.customers.clone(), &later)
            .await
            .unwrap();
        assert_eq!(written, 0, "until {until}");
        assert!(replayed > 0);
    }
    app.stop().await;
}
