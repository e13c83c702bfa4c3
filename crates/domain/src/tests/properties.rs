//! Property tests: any sequence of commands folds without error, accepted commands give
//! contiguous versions, refusals change nothing, and replay reproduces every view.

use proptest::prelude::*;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::{AT, NOW};
use crate::health::Health;
use crate::lifecycle::{Lifecycle, Stage};
use crate::policy::Policy;
use crate::trust::{self, Balances};
use crate::{Command, CustomerState, Event, decide};

fn policy() -> Policy {
    // The domain does not parse TOML; build the default numbers here.
    serde_json::from_value(json!({
        "version": "test",
        "trust": {"on_time_delivery": 10, "exceeded_expectations_bonus": 5, "delay_per_day": -5,
            "delay_cap": -30, "complaint_minor": -10, "complaint_major": -20, "complaint_critical": -40,
            "fast_resolution_hours": 48, "fast_resolution": 10, "response_sla_minutes": 120,
            "fast_response": 2, "slow_response": -3, "renewal": 20, "expansion": 10,
            "value_add": 15, "care_touch": 3},
        "health": {"green_min": 70, "yellow_min": 40, "window_days": 90, "no_activity_days": 30,
            "no_activity": 25, "order_value_down": 20, "order_value_drop_percent": 20,
            "complaint_on_record": 15, "purchases_down_3_months": 15, "key_contact_changed": 10,
            "decision_maker_changed": 20, "nps_detractor": 15, "low_csat": 15, "repeated_delays": 10,
            "slow_responses": 5, "low_trust_balance": 10, "low_trust_threshold": 0},
        "tier": {"a_min_revenue_minor": 10000000, "b_min_revenue_minor": 1000000, "loyalty_days": 365}
    }))
    .unwrap()
}

/// Commands over small id pools so contracts, complaints and orders collide often.
fn command() -> impl Strategy<Value = Command> {
    let contract = prop_oneof!["c1", "c2", "c3"];
    let small = 0u32..200;
    let day = (0i64..700)
        .prop_map(|d| (time::macros::date!(2024 - 01 - 01) + Duration::days(d)).to_string());
    let bodies = prop_oneof![
        Just(json!({"type": "register_customer", "name": "Acme"})),
        (contract.clone(), -5i64..5_000, day.clone(), 1i64..400).prop_map(|(c, v, d, len)| {
            let end = (time::Date::parse(&d, &time::format_description::well_known::Iso8601::DATE).unwrap() + Duration::days(len)).to_string();
            json!({"type": "sign_contract", "contract_id": c, "value_minor": v, "currency": "EUR", "starts_on": d, "ends_on": end})
        }),
        (contract.clone(), day.clone(), any::<bool>()).prop_map(|(c, d, x)| json!({"type": "deliver_service", "contract_id": c, "service_id": "s", "promised_on": d, "delivered_on": d, "exceeded_expectations": x})),
        (contract.clone(), day.clone(), 0u32..40).prop_map(|(c, d, n)| json!({"type": "delay_service", "contract_id": c, "service_id": "s", "promised_on": d, "days_late": n})),
        small.clone().prop_map(|m| json!({"type": "respond_to_request", "request_id": "r", "response_minutes": m})),
        (prop_oneof!["k1", "k2"], prop_oneof!["minor", "major", "critical"]).prop_map(|(k, s)| json!({"type": "log_complaint", "complaint_id": k, "severity": s})),
        (prop_oneof!["k1", "k2"], small.clone()).prop_map(|(k, h)| json!({"type": "resolve_complaint", "complaint_id": k, "resolution_hours": h})),
        Just(json!({"type": "deliver_value_add", "kind": "custom_solution"})),
        Just(json!({"type": "record_care_touch", "kind": "birthday"})),
        (prop_oneof!["csat", "nps"], 0u8..12).prop_map(|(k, s)| json!({"type": "record_survey", "kind": k, "score": s})),
        (prop_oneof!["o1", "o2", "o3", "o4"], -10i64..100_000, day.clone()).prop_map(|(o, a, d)| json!({"type": "record_purchase", "order_id": o, "amount_minor": a, "currency": "EUR", "ordered_on": d})),
        (day.clone(), small.clone()).prop_map(|(d, l)| json!({"type": "record_activity", "day": d, "logins": l})),
        prop_oneof!["decision_maker", "buyer", "user"].prop_map(|r| json!({"type": "change_key_contact", "role": r, "new_contact": "n"})),
        (contract.clone(), day.clone()).prop_map(|(c, d)| json!({"type": "mark_renewal_due", "contract_id": c, "term_ends_on": d})),
        (contract.clone(), day.clone()).prop_map(|(c, d)| json!({"type": "renew_contract", "contract_id": c, "new_ends_on": d})),
        (contract.clone(), -3i64..500).prop_map(|(c, v)| json!({"type": "expand_contract", "contract_id": c, "kind": "upsell", "added_value_minor": v})),
        contract.clone().prop_map(|c| json!({"type": "terminate_contract", "contract_id": c})),
        (0u32..90).prop_map(|d| json!({"type": "flag_inactivity", "days_inactive": d})),
        Just(json!({"type": "log_intervention", "action": "call"})),
    ];
    bodies.prop_map(|b| serde_json::from_value::<Command>(b).unwrap())
}

fn run(commands: &[(Command, i64)]) -> (CustomerState, Vec<(Event, OffsetDateTime)>) {
    let mut state = CustomerState::default();
    let mut accepted = Vec::new();
    for (cmd, offset) in commands {
        let at = AT + Duration::days(*offset);
        let before = state.clone();
        match decide(&state, cmd, at, NOW + Duration::days(*offset)) {
            Ok(event) => {
                state = state.apply(&event);
                assert_eq!(state.version, before.version + 1);
                accepted.push((event, at));
            }
            Err(_) => assert_eq!(state, before, "a refusal changed the state"),
        }
    }
    (state, accepted)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn accepted_commands_fold_with_contiguous_versions(
        cmds in prop::collection::vec((command(), 0i64..400), 1..80)
    ) {
        let (state, accepted) = run(&cmds);
        prop_assert_eq!(state.version, accepted.len() as u64);
        // Replaying the accepted events reproduces the state exactly.
        let replayed = accepted.iter().fold(CustomerState::default(), |s, (e, _)| s.apply(e));
        prop_assert_eq!(&replayed, &state);
        // Invariants of the state.
        // Churned exactly when every contract ever signed has ended (a win-back signs a new
        // one and is active again).
        prop_assert_eq!(
            state.churned,
            state.registered && !state.contracts.is_empty() && !state.has_active_contract()
        );
        for c in state.contracts.values() {
            prop_assert!(c.value_minor > 0 && c.ends_on > c.starts_on);
        }
    }

    #[test]
    fn views_are_deterministic_and_redelivery_is_harmless(
        cmds in prop::collection::vec((command(), 0i64..400), 1..80)
    ) {
        let (state, accepted) = run(&cmds);
        let policy = policy();
        let fold = || {
            let mut lc = Lifecycle::default();
            let mut health = Health::default();
            let mut trust = Balances::default();
            let mut transitions = Vec::new();
            for (i, (e, at)) in accepted.iter().enumerate() {
                let v = i as u64 + 1;
                if let Some(t) = lc.apply(e, *at, v, &policy) {
                    transitions.push(t);
                }
                health.apply(e, *at, v, &policy);
                // The lifecycle's own verdict, from its own copy of the facts, agrees with
                // the health view's assessment.
                let verdict = lc.verdict;
                let assessment = health.assessment.clone().unwrap_or_else(|| health.assess(&policy));
                prop_assert_eq!(verdict.color, assessment.color);
                prop_assert_eq!(
                    verdict.purchases_falling,
                    assessment.reasons.iter().any(|r| r.code == crate::health::PURCHASES_DOWN_3_MONTHS)
                );
                for entry in trust::price(e, &policy.trust) {
                    trust.add(&entry);
                }
                // Re-delivering an applied version changes nothing.
                let (lc_before, health_before) = (lc.clone(), health.clone());
                prop_assert!(lc.apply(e, *at, v, &policy).is_none());
                prop_assert!(health.apply(e, *at, v, &policy).is_none());
                prop_assert_eq!(&lc, &lc_before);
                prop_assert_eq!(&health, &health_before);
            }
            Ok((lc, health, trust, transitions))
        };
        let a = fold()?;
        let b = fold()?;
        prop_assert_eq!(&a.0, &b.0);
        prop_assert_eq!(&a.1, &b.1);
        prop_assert_eq!(a.2, b.2);
        prop_assert_eq!(&a.3, &b.3);
        let (lc, health, _, _) = a;
        if let Some(a) = &health.assessment {
            prop_assert!(a.score <= 100);
        }
        // Churned exactly when the aggregate says so, once a contract was ever signed.
        if !state.contracts.is_empty() {
            prop_assert_eq!(lc.stage == Some(Stage::Churned), state.churned);
        }
    }
}
