//! The JSON shapes of commands and events (interface brief), checked with serde_json.

use crm_domain::command::*;
use crm_domain::event::*;
use crm_domain::state::CustomerState;
use crm_domain::types::*;
use crm_domain::{Command, Event};
use serde_json::{Value, json};
use time::Date;
use time::macros::date;

use crate::harness::*;

fn parse(value: Value) -> Result<Command, serde_json::Error> {
    serde_json::from_value(value)
}

#[track_caller]
fn command(value: Value) -> Command {
    parse(value.clone()).unwrap_or_else(|e| panic!("{value} should parse: {e}"))
}

#[track_caller]
fn refused(value: Value) -> String {
    match parse(value.clone()) {
        Ok(c) => panic!("{value} should be refused, parsed as {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// Each command type with only its required fields, as in the interface table.
fn minimal() -> Vec<Value> {
    vec![
        json!({"type": "register_customer", "name": "Acme"}),
        json!({"type": "sign_contract", "contract_id": "c1", "value_minor": 100, "currency": "EUR",
            "starts_on": "2025-01-01", "ends_on": "2025-12-31"}),
        json!({"type": "deliver_service", "contract_id": "c1", "service_id": "s1",
            "promised_on": "2025-05-20", "delivered_on": "2025-05-19"}),
        json!({"type": "delay_service", "contract_id": "c1", "service_id": "s1",
            "promised_on": "2025-05-20", "days_late": 2}),
        json!({"type": "respond_to_request", "request_id": "r1", "response_minutes": 45}),
        json!({"type": "log_complaint", "complaint_id": "k1", "severity": "minor"}),
        json!({"type": "resolve_complaint", "complaint_id": "k1", "resolution_hours": 12}),
        json!({"type": "deliver_value_add", "kind": "industry_insight"}),
        json!({"type": "record_care_touch", "kind": "birthday"}),
        json!({"type": "record_survey", "kind": "csat", "score": 4}),
        json!({"type": "record_purchase", "order_id": "o1", "amount_minor": 999, "currency": "EUR",
            "ordered_on": "2025-05-01"}),
        json!({"type": "record_activity", "day": "2025-05-31", "logins": 12}),
        json!({"type": "change_key_contact", "role": "decision_maker", "new_contact": "Jane"}),
        json!({"type": "mark_renewal_due", "contract_id": "c1", "term_ends_on": "2025-12-31"}),
        json!({"type": "renew_contract", "contract_id": "c1", "new_ends_on": "2026-12-31"}),
        json!({"type": "expand_contract", "contract_id": "c1", "kind": "cross_sell",
            "added_value_minor": 50}),
        json!({"type": "terminate_contract", "contract_id": "c1"}),
        json!({"type": "flag_inactivity", "days_inactive": 30}),
        json!({"type": "log_intervention", "action": "executive_escalation"}),
    ]
}

#[test]
fn sign_contract_parses_from_the_documented_shape() {
    let c = command(json!({
        "type": "sign_contract", "contract_id": "c1", "value_minor": 100, "currency": "EUR",
        "starts_on": "2025-01-01", "ends_on": "2025-12-31"
    }));
    assert_eq!(
        c,
        Command::SignContract(SignContract {
            contract_id: "c1".into(),
            value_minor: 100,
            currency: "EUR".into(),
            starts_on: date!(2025 - 01 - 01),
            ends_on: date!(2025 - 12 - 31),
            notice_days: None,
        })
    );
    let c = command(json!({
        "type": "sign_contract", "contract_id": "c1", "value_minor": 100, "currency": "EUR",
        "starts_on": "2025-01-01", "ends_on": "2025-12-31", "notice_days": 60
    }));
    assert!(matches!(
        c,
        Command::SignContract(SignContract {
            notice_days: Some(60),
            ..
        })
    ));
}

#[test]
fn every_command_type_parses_with_its_required_fields_only() {
    let parsed: Vec<Command> = minimal().into_iter().map(command).collect();
    let types: Vec<&str> = parsed.iter().map(Command::command_type).collect();
    assert_eq!(types, Command::TYPES);
    assert_eq!(Command::TYPES.len(), 19);
}

#[test]
fn every_command_parses_with_all_its_fields() {
    let full = [
        (
            json!({"type": "register_customer", "name": "Acme", "segment": "retail", "region": "EU",
                "account_manager": "Ann", "acquisition_channel": "referral"}),
            Command::RegisterCustomer(RegisterCustomer {
                name: "Acme".into(),
                segment: Some("retail".into()),
                region: Some("EU".into()),
                account_manager: Some("Ann".into()),
                acquisition_channel: Some("referral".into()),
            }),
        ),
        (
            json!({"type": "deliver_service", "contract_id": "c1", "service_id": "s1",
                "promised_on": "2025-05-20", "delivered_on": "2025-05-19", "exceeded_expectations": true}),
            Command::DeliverService(DeliverService {
                contract_id: "c1".into(),
                service_id: "s1".into(),
                promised_on: date!(2025 - 05 - 20),
                delivered_on: date!(2025 - 05 - 19),
                exceeded_expectations: Some(true),
            }),
        ),
        (
            json!({"type": "delay_service", "contract_id": "c1", "service_id": "s1",
                "promised_on": "2025-05-20", "days_late": 2, "reason": "strike"}),
            Command::DelayService(DelayService {
                contract_id: "c1".into(),
                service_id: "s1".into(),
                promised_on: date!(2025 - 05 - 20),
                days_late: 2,
                reason: Some("strike".into()),
            }),
        ),
        (
            json!({"type": "respond_to_request", "request_id": "r1", "response_minutes": 45}),
            Command::RespondToRequest(RespondToRequest {
                request_id: "r1".into(),
                response_minutes: 45,
            }),
        ),
        (
            json!({"type": "log_complaint", "complaint_id": "k1", "severity": "critical", "topic": "outage"}),
            Command::LogComplaint(LogComplaint {
                complaint_id: "k1".into(),
                severity: Severity::Critical,
                topic: Some("outage".into()),
            }),
        ),
        (
            json!({"type": "resolve_complaint", "complaint_id": "k1", "resolution_hours": 12}),
            Command::ResolveComplaint(ResolveComplaint {
                complaint_id: "k1".into(),
                resolution_hours: 12,
            }),
        ),
        (
            json!({"type": "deliver_value_add", "kind": "partner_introduction", "note": "n"}),
            Command::DeliverValueAdd(DeliverValueAdd {
                kind: ValueAddKind::PartnerIntroduction,
                note: Some("n".into()),
            }),
        ),
        (
            json!({"type": "record_care_touch", "kind": "community_event", "note": "n"}),
            Command::RecordCareTouch(RecordCareTouch {
                kind: CareTouchKind::CommunityEvent,
                note: Some("n".into()),
            }),
        ),
        (
            json!({"type": "record_survey", "kind": "nps", "score": 0, "comment": "meh"}),
            Command::RecordSurvey(RecordSurvey {
                kind: SurveyKind::Nps,
                score: 0,
                comment: Some("meh".into()),
            }),
        ),
        (
            json!({"type": "record_purchase", "order_id": "o1", "amount_minor": 999, "currency": "EUR",
                "ordered_on": "2025-05-01"}),
            Command::RecordPurchase(RecordPurchase {
                order_id: "o1".into(),
                amount_minor: 999,
                currency: "EUR".into(),
                ordered_on: date!(2025 - 05 - 01),
            }),
        ),
        (
            json!({"type": "record_activity", "day": "2025-05-31", "logins": 12, "active_users": 4}),
            Command::RecordActivity(RecordActivity {
                day: date!(2025 - 05 - 31),
                logins: 12,
                active_users: Some(4),
            }),
        ),
        (
            json!({"type": "change_key_contact", "role": "technical_evaluator",
                "previous_contact": "John", "new_contact": "Jane"}),
            Command::ChangeKeyContact(ChangeKeyContact {
                role: ContactRole::TechnicalEvaluator,
                previous_contact: Some("John".into()),
                new_contact: "Jane".into(),
            }),
        ),
        (
            json!({"type": "mark_renewal_due", "contract_id": "c1", "term_ends_on": "2025-12-31"}),
            Command::MarkRenewalDue(MarkRenewalDue {
                contract_id: "c1".into(),
                term_ends_on: date!(2025 - 12 - 31),
            }),
        ),
        (
            json!({"type": "renew_contract", "contract_id": "c1", "new_ends_on": "2026-12-31",
                "value_minor": 1200}),
            Command::RenewContract(RenewContract {
                contract_id: "c1".into(),
                new_ends_on: date!(2026 - 12 - 31),
                value_minor: Some(1200),
            }),
        ),
        (
            json!({"type": "expand_contract", "contract_id": "c1", "kind": "upsell",
                "added_value_minor": 50}),
            Command::ExpandContract(ExpandContract {
                contract_id: "c1".into(),
                kind: ExpansionKind::Upsell,
                added_value_minor: 50,
            }),
        ),
        (
            json!({"type": "terminate_contract", "contract_id": "c1", "reason": "budget"}),
            Command::TerminateContract(TerminateContract {
                contract_id: "c1".into(),
                reason: Some("budget".into()),
                term_ends_on: None,
            }),
        ),
        (
            json!({"type": "flag_inactivity", "days_inactive": 30, "last_activity_on": "2025-04-01"}),
            Command::FlagInactivity(FlagInactivity {
                days_inactive: 30,
                last_activity_on: Some(date!(2025 - 04 - 01)),
            }),
        ),
        (
            json!({"type": "log_intervention", "action": "care_plan", "note": "n", "alert_id": "a1"}),
            Command::LogIntervention(LogIntervention {
                action: InterventionAction::CarePlan,
                note: Some("n".into()),
                alert_id: Some("a1".into()),
            }),
        ),
    ];
    for (value, expected) in full {
        assert_eq!(command(value), expected);
    }
}

#[test]
fn explicit_nulls_are_absent_optionals() {
    let c = command(json!({"type": "terminate_contract", "contract_id": "c1", "reason": null}));
    assert_eq!(
        c,
        Command::TerminateContract(TerminateContract {
            contract_id: "c1".into(),
            reason: None,
            term_ends_on: None,
        })
    );
}

#[test]
fn unknown_fields_are_refused_for_every_command_type() {
    for mut value in minimal() {
        value["colour"] = json!("blue");
        let err = refused(value);
        assert!(err.contains("unknown field"), "{err}");
        assert!(err.contains("colour"), "{err}");
    }
}

#[test]
fn occurred_at_is_not_a_command_field() {
    // It travels beside the command in a Submission; the transports take it off first.
    let mut value = minimal().remove(0);
    value["occurred_at"] = json!("2025-06-01T12:00:00Z");
    let err = refused(value);
    assert!(err.contains("occurred_at"), "{err}");
}

#[test]
fn unknown_and_missing_types_are_refused() {
    let err = refused(json!({"type": "delete_customer", "name": "Acme"}));
    assert!(err.contains("delete_customer"), "{err}");
    refused(json!({"type": "RegisterCustomer", "name": "Acme"}));
    refused(json!({"type": "customer_registered", "name": "Acme"}));
    refused(json!({"type": null, "name": "Acme"}));
    refused(json!({"type": 1, "name": "Acme"}));
    let err = refused(json!({"name": "Acme"}));
    assert!(err.contains("type"), "{err}");
    refused(json!("register_customer"));
    refused(json!(["register_customer"]));
    refused(json!({}));
}

#[test]
fn missing_required_fields_are_refused() {
    for value in minimal() {
        let object = value.as_object().expect("an object").clone();
        for key in object.keys().filter(|k| *k != "type") {
            let mut without = object.clone();
            without.remove(key);
            let err = refused(Value::Object(without));
            assert!(err.contains("missing field"), "{err}");
            assert!(err.contains(key.as_str()), "{key}: {err}");
        }
    }
}

#[test]
fn field_types_are_checked() {
    let sign = || minimal().remove(1);
    for (field, bad) in [
        ("value_minor", json!("100")),
        ("value_minor", json!(1.5)),
        ("value_minor", json!(null)),
        ("currency", json!(978)),
        ("contract_id", json!(1)),
        ("notice_days", json!(-1)),
        ("notice_days", json!(4_294_967_296u64)),
    ] {
        let mut value = sign();
        value[field] = bad.clone();
        refused(value);
    }
    let mut survey = minimal().remove(9);
    survey["score"] = json!(256);
    refused(survey);
    let mut delay = minimal().remove(3);
    delay["days_late"] = json!(-1);
    refused(delay);
}

#[test]
fn vocabulary_values_are_snake_case_and_closed() {
    fn check<T>(all: &[T], name: impl Fn(&T) -> &'static str)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
        T: std::fmt::Display,
    {
        for v in all {
            let wire = name(v);
            assert_eq!(serde_json::to_value(v).expect("serialises"), json!(wire));
            let back: T = serde_json::from_value(json!(wire)).expect("parses");
            assert_eq!(&back, v);
            assert_eq!(v.to_string(), wire);
            assert!(
                wire.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{wire}"
            );
        }
        assert!(serde_json::from_value::<T>(json!("nonsense")).is_err());
    }
    check(Severity::ALL, Severity::as_str);
    check(ValueAddKind::ALL, ValueAddKind::as_str);
    check(CareTouchKind::ALL, CareTouchKind::as_str);
    check(SurveyKind::ALL, SurveyKind::as_str);
    check(ContactRole::ALL, ContactRole::as_str);
    check(ExpansionKind::ALL, ExpansionKind::as_str);
    check(InterventionAction::ALL, InterventionAction::as_str);
    let names = |all: &[ContactRole]| all.iter().map(ContactRole::as_str).collect::<Vec<_>>();
    assert_eq!(
        names(ContactRole::ALL),
        [
            "decision_maker",
            "influencer",
            "user",
            "buyer",
            "finance",
            "technical_evaluator",
            "gatekeeper"
        ]
    );
    refused(json!({"type": "log_complaint", "complaint_id": "k1", "severity": "Major"}));
    refused(json!({"type": "log_complaint", "complaint_id": "k1", "severity": "huge"}));
}

#[test]
fn dates_are_year_month_day() {
    assert_eq!(
        serde_json::to_value(date!(2025 - 01 - 02)).expect("serialises"),
        json!("2025-01-02")
    );
    let d: Date = serde_json::from_value(json!("2024-02-29")).expect("a leap day");
    assert_eq!(d, date!(2024 - 02 - 29));
    for bad in [
        "2025-1-2",
        "2025/01/02",
        "02.01.2025",
        "20250102",
        "2025-01-02T00:00:00Z",
        "2025-02-29",
        "2025-13-01",
        "",
    ] {
        let mut value = minimal().remove(1);
        value["starts_on"] = json!(bad);
        refused(value);
    }
}

/// One event of each type.
fn one_event_of_each() -> Vec<Event> {
    let mut events = vec![registered()];
    for c in one_of_each().into_iter().skip(1) {
        events.push(
            given(with_everything())
                .at(RENEWAL_WINDOW_AT)
                .when(c)
                .then_accepted(),
        );
    }
    events
}

#[test]
fn events_are_adjacently_tagged_with_a_payload() {
    let value = serde_json::to_value(signed("c1")).expect("serialises");
    assert_eq!(
        value,
        json!({
            "type": "contract_signed",
            "payload": {
                "contract_id": "c1",
                "value_minor": 1000,
                "currency": "EUR",
                "starts_on": "2025-01-01",
                "ends_on": "2025-12-31",
                "notice_days": 90,
                "win_back": false
            }
        })
    );
    let value = serde_json::to_value(terminated("c1", true)).expect("serialises");
    assert_eq!(
        value,
        json!({
            "type": "contract_terminated",
            "payload": {"contract_id": "c1", "reason": null, "churned": true}
        })
    );
    let value = serde_json::to_value(Event::RequestResponded(RequestResponded {
        request_id: "r1".into(),
        response_minutes: 121,
        within_sla: false,
    }))
    .expect("serialises");
    assert_eq!(
        value,
        json!({
            "type": "request_responded",
            "payload": {"request_id": "r1", "response_minutes": 121, "within_sla": false}
        })
    );
}

#[test]
fn every_event_type_round_trips() {
    let events = one_event_of_each();
    let types: Vec<&str> = events.iter().map(Event::event_type).collect();
    assert_eq!(types, Event::TYPES);
    for event in events {
        let value = serde_json::to_value(&event).expect("serialises");
        let object = value.as_object().expect("an object");
        assert_eq!(object.len(), 2, "{value}");
        assert_eq!(object["type"], json!(event.event_type()));
        assert!(object["payload"].is_object(), "{value}");
        let back: Event = serde_json::from_value(value).expect("parses");
        assert_eq!(back, event);
        let text = serde_json::to_string(&event).expect("serialises");
        let back: Event = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, event);
    }
}

#[test]
fn every_command_type_round_trips() {
    for c in one_of_each() {
        let value = serde_json::to_value(&c).expect("serialises");
        assert_eq!(value["type"], json!(c.command_type()));
        let back: Command = serde_json::from_value(value).expect("parses");
        assert_eq!(back, c);
    }
}

#[test]
fn type_names_are_distinct_snake_case_and_paired() {
    for types in [Command::TYPES, Event::TYPES] {
        assert_eq!(types.len(), 19);
        let distinct: std::collections::BTreeSet<_> = types.iter().collect();
        assert_eq!(distinct.len(), types.len());
        for t in types {
            assert!(t.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{t}");
        }
    }
    let pairs: Vec<(&str, &str)> = one_of_each()
        .iter()
        .map(|c| (c.command_type(), c.event_type()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("register_customer", "customer_registered"),
            ("sign_contract", "contract_signed"),
            ("deliver_service", "service_delivered"),
            ("delay_service", "service_delayed"),
            ("respond_to_request", "request_responded"),
            ("log_complaint", "complaint_logged"),
            ("resolve_complaint", "complaint_resolved"),
            ("deliver_value_add", "value_add_delivered"),
            ("record_care_touch", "care_touch_recorded"),
            ("record_survey", "survey_answered"),
            ("record_purchase", "purchase_recorded"),
            ("record_activity", "activity_recorded"),
            ("change_key_contact", "key_contact_changed"),
            ("mark_renewal_due", "renewal_marked_due"),
            ("renew_contract", "contract_renewed"),
            ("expand_contract", "contract_expanded"),
            ("terminate_contract", "contract_terminated"),
            ("flag_inactivity", "inactivity_flagged"),
            ("log_intervention", "intervention_logged"),
        ]
    );
    assert_eq!(Event::SCHEMA_VERSION, 1);
}

#[test]
fn events_refuse_unknown_types_and_commands_are_not_events() {
    assert!(
        serde_json::from_value::<Event>(json!({"type": "customer_deleted", "payload": {}}))
            .is_err()
    );
    assert!(
        serde_json::from_value::<Event>(json!({"type": "register_customer", "name": "Acme"}))
            .is_err()
    );
    // A flat (internally tagged) event is not the wire form.
    assert!(
        serde_json::from_value::<Event>(json!({
            "type": "customer_registered", "name": "Acme", "segment": null, "region": null,
            "account_manager": null, "acquisition_channel": null
        }))
        .is_err()
    );
}

#[test]
fn state_round_trips_through_json() {
    let state = with_everything()
        .iter()
        .fold(CustomerState::default(), |s, e| s.apply(e));
    let text = serde_json::to_string(&state).expect("serialises");
    let back: CustomerState = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, state);
}
