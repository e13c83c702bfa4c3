//! Every command: the accepted case and each refusal.

use serde_json::json;
use time::macros::{date, datetime};

use super::{AT, given};
use crate::Command;
use crate::event::*;
use crate::types::*;

fn cmd(v: serde_json::Value) -> Command {
    serde_json::from_value(v).unwrap()
}

fn registered() -> Event {
    Event::CustomerRegistered(CustomerRegistered {
        name: "Acme".into(),
        segment: None,
        region: None,
        account_manager: None,
        acquisition_channel: None,
    })
}

fn signed(id: &str) -> Event {
    Event::ContractSigned(ContractSigned {
        contract_id: id.into(),
        value_minor: 1_000,
        currency: "EUR".into(),
        starts_on: date!(2025 - 01 - 01),
        ends_on: date!(2025 - 12 - 31),
        notice_days: 90,
        win_back: false,
    })
}

fn terminated(id: &str, churned: bool) -> Event {
    Event::ContractTerminated(ContractTerminated {
        contract_id: id.into(),
        reason: None,
        churned,
        lapsed: false,
    })
}

fn complaint(id: &str) -> Event {
    Event::ComplaintLogged(ComplaintLogged {
        complaint_id: id.into(),
        severity: Severity::Major,
        topic: None,
    })
}

/// `complaint_id` (logged as major by [`complaint`]) resolved after `hours`.
fn resolved(id: &str, hours: u32) -> Event {
    Event::ComplaintResolved(ComplaintResolved {
        complaint_id: id.into(),
        severity: Severity::Major,
        resolution_hours: hours,
    })
}

fn active() -> Vec<Event> {
    vec![registered(), signed("c1")]
}

fn churned() -> Vec<Event> {
    vec![registered(), signed("c1"), terminated("c1", true)]
}

#[test]
fn register_customer() {
    given([])
        .when(cmd(json!({"type": "register_customer", "name": "  Acme  ", "segment": "retail", "region": ""})))
        .then_event(Event::CustomerRegistered(CustomerRegistered {
            name: "Acme".into(),
            segment: Some("retail".into()),
            region: None,
            account_manager: None,
            acquisition_channel: None,
        }));
    given([registered()])
        .when(cmd(json!({"type": "register_customer", "name": "Acme"})))
        .then_refused("customer_already_registered");
    given([])
        .when(cmd(json!({"type": "register_customer", "name": "   "})))
        .then_refused("empty_field");
    given([])
        .when(cmd(
            json!({"type": "register_customer", "name": "x".repeat(2_001)}),
        ))
        .then_refused("field_too_long");
    given([])
        .ahead_of_recorder(datetime!(2025-06-01 12:06 UTC))
        .when(cmd(json!({"type": "register_customer", "name": "Acme"})))
        .then_refused("occurred_in_future");
    // Within the five-minute skew allowance.
    given([])
        .ahead_of_recorder(datetime!(2025-06-01 12:04 UTC))
        .when(cmd(json!({"type": "register_customer", "name": "Acme"})))
        .then_event(Event::CustomerRegistered(CustomerRegistered {
            name: "Acme".into(),
            segment: None,
            region: None,
            account_manager: None,
            acquisition_channel: None,
        }));
}

#[test]
fn commands_need_a_registered_customer() {
    for t in Command::TYPES.iter().filter(|t| **t != "register_customer") {
        // Any syntactically valid body will do: registration is checked first.
        let body = match *t {
            "sign_contract" => {
                json!({"type": t, "contract_id": "c", "value_minor": 1, "currency": "EUR", "starts_on": "2025-01-01", "ends_on": "2025-02-01"})
            }
            "deliver_service" => {
                json!({"type": t, "contract_id": "c", "service_id": "s", "promised_on": "2025-01-01", "delivered_on": "2025-01-01"})
            }
            "delay_service" => {
                json!({"type": t, "contract_id": "c", "service_id": "s", "promised_on": "2025-01-01", "days_late": 1})
            }
            "respond_to_request" => json!({"type": t, "request_id": "r", "response_minutes": 1}),
            "log_complaint" => json!({"type": t, "complaint_id": "k", "severity": "minor"}),
            "resolve_complaint" => json!({"type": t, "complaint_id": "k", "resolution_hours": 1}),
            "deliver_value_add" => json!({"type": t, "kind": "custom_solution"}),
            "record_care_touch" => json!({"type": t, "kind": "other"}),
            "record_survey" => json!({"type": t, "kind": "csat", "score": 3}),
            "record_purchase" => {
                json!({"type": t, "order_id": "o", "amount_minor": 1, "currency": "EUR", "ordered_on": "2025-01-01"})
            }
            "record_activity" => json!({"type": t, "day": "2025-01-01", "logins": 1}),
            "change_key_contact" => json!({"type": t, "role": "user", "new_contact": "n"}),
            "mark_renewal_due" => {
                json!({"type": t, "contract_id": "c", "term_ends_on": "2025-01-01"})
            }
            "renew_contract" => json!({"type": t, "contract_id": "c", "new_ends_on": "2026-01-01"}),
            "expand_contract" => {
                json!({"type": t, "contract_id": "c", "kind": "upsell", "added_value_minor": 1})
            }
            "terminate_contract" => json!({"type": t, "contract_id": "c"}),
            "flag_inactivity" => json!({"type": t, "days_inactive": 30}),
            "log_intervention" => json!({"type": t, "action": "call"}),
            other => panic!("untested command {other}"),
        };
        given([])
            .when(cmd(body))
            .then_refused("customer_not_registered");
    }
}

#[test]
fn sign_contract() {
    let body = |extra: serde_json::Value| {
        let mut b = json!({"type": "sign_contract", "contract_id": "c2", "value_minor": 5_000,
            "currency": "USD", "starts_on": "2025-03-01", "ends_on": "2026-02-28"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        cmd(b)
    };
    given(active())
        .when(body(json!({})))
        .then_event(Event::ContractSigned(ContractSigned {
            contract_id: "c2".into(),
            value_minor: 5_000,
            currency: "USD".into(),
            starts_on: date!(2025 - 03 - 01),
            ends_on: date!(2026 - 02 - 28),
            notice_days: 90,
            win_back: false,
        }));
    // Ids go into keys and headers: a line break or a tab in one is refused, not stored.
    for bad in ["c\n2", "c\r2", "c\t2", "c\u{7f}2"] {
        given(active())
            .when(body(json!({"contract_id": bad})))
            .then_refused("control_character");
    }
    given(active())
        .when(cmd(
            json!({"type": "log_complaint", "complaint_id": "k\n1", "severity": "minor"}),
        ))
        .then_refused("control_character");
    // A contract and a complaint stored before ids were checked can still be acted on.
    let mut stored = active();
    stored.push(signed("c\n9"));
    stored.push(complaint("k\n9"));
    given(stored.clone())
        .when(cmd(
            json!({"type": "terminate_contract", "contract_id": "c\n9"}),
        ))
        .then_event(terminated("c\n9", false));
    given(stored)
        .when(cmd(
            json!({"type": "resolve_complaint", "complaint_id": "k\n9", "resolution_hours": 2}),
        ))
        .then_event(resolved("k\n9", 2));
    given(active())
        .when(body(json!({"notice_days": 30})))
        .then_event(Event::ContractSigned(ContractSigned {
            contract_id: "c2".into(),
            value_minor: 5_000,
            currency: "USD".into(),
            starts_on: date!(2025 - 03 - 01),
            ends_on: date!(2026 - 02 - 28),
            notice_days: 30,
            win_back: false,
        }));
    given(active())
        .when(body(json!({"contract_id": "c1"})))
        .then_refused("contract_already_exists");
    given(active())
        .when(body(json!({"value_minor": 0})))
        .then_refused("invalid_amount");
    given(active())
        .when(body(json!({"value_minor": -1})))
        .then_refused("invalid_amount");
    given(active())
        .when(body(json!({"currency": "eur"})))
        .then_refused("invalid_currency");
    given(active())
        .when(body(json!({"currency": "EURO"})))
        .then_refused("invalid_currency");
    given(active())
        .when(body(json!({"ends_on": "2025-03-01"})))
        .then_refused("invalid_dates");
    given(active())
        .when(body(json!({"notice_days": 5000})))
        .then_refused("out_of_range");
    given(active())
        .when(body(json!({"contract_id": ""})))
        .then_refused("empty_field");
    // A churned customer signing again is a win-back.
    let state = given(churned())
        .when(body(json!({})))
        .then_event(Event::ContractSigned(ContractSigned {
            contract_id: "c2".into(),
            value_minor: 5_000,
            currency: "USD".into(),
            starts_on: date!(2025 - 03 - 01),
            ends_on: date!(2026 - 02 - 28),
            notice_days: 90,
            win_back: true,
        }));
    assert!(!state.churned && state.won_back);
}

#[test]
fn deliver_service() {
    let body = |delivered: &str, contract: &str| {
        cmd(
            json!({"type": "deliver_service", "contract_id": contract, "service_id": "s1",
            "promised_on": "2025-05-10", "delivered_on": delivered, "exceeded_expectations": true}),
        )
    };
    given(active())
        .when(body("2025-05-09", "c1"))
        .then_event(Event::ServiceDelivered(ServiceDelivered {
            contract_id: "c1".into(),
            service_id: "s1".into(),
            promised_on: date!(2025 - 05 - 10),
            delivered_on: date!(2025 - 05 - 09),
            exceeded_expectations: true,
        }));
    given(active())
        .when(body("2025-05-11", "c1"))
        .then_refused("delivery_late");
    given(active())
        .when(body("2025-05-10", "nope"))
        .then_refused("contract_not_found");
    given([
        registered(),
        signed("c1"),
        signed("c2"),
        terminated("c1", false),
    ])
    .when(body("2025-05-10", "c1"))
    .then_refused("contract_not_active");
    given(churned())
        .when(body("2025-05-10", "c1"))
        .then_refused("customer_churned");
}

#[test]
fn delay_service() {
    let body = |days: u32| {
        cmd(
            json!({"type": "delay_service", "contract_id": "c1", "service_id": "s1",
            "promised_on": "2025-05-10", "days_late": days, "reason": " strike "}),
        )
    };
    given(active())
        .when(body(3))
        .then_event(Event::ServiceDelayed(ServiceDelayed {
            contract_id: "c1".into(),
            service_id: "s1".into(),
            promised_on: date!(2025 - 05 - 10),
            days_late: 3,
            reason: Some("strike".into()),
        }));
    given(active()).when(body(0)).then_refused("out_of_range");
    given(active())
        .when(body(4000))
        .then_refused("out_of_range");
    given([registered()])
        .when(body(1))
        .then_refused("contract_not_found");
}

#[test]
fn respond_to_request() {
    let body = |m: u32| {
        cmd(json!({"type": "respond_to_request", "request_id": "r1", "response_minutes": m}))
    };
    given(active())
        .when(body(120))
        .then_event(Event::RequestResponded(RequestResponded {
            request_id: "r1".into(),
            response_minutes: 120,
            within_sla: true,
        }));
    given(active())
        .when(body(121))
        .then_event(Event::RequestResponded(RequestResponded {
            request_id: "r1".into(),
            response_minutes: 121,
            within_sla: false,
        }));
    given(active())
        .when(cmd(
            json!({"type": "respond_to_request", "request_id": "", "response_minutes": 1}),
        ))
        .then_refused("empty_field");
}

#[test]
fn log_and_resolve_complaints() {
    given(active())
        .when(cmd(json!({"type": "log_complaint", "complaint_id": "k1", "severity": "critical", "topic": "outage"})))
        .then_event(Event::ComplaintLogged(ComplaintLogged {
            complaint_id: "k1".into(),
            severity: Severity::Critical,
            topic: Some("outage".into()),
        }));
    let mut with_complaint = active();
    with_complaint.push(complaint("k1"));
    given(with_complaint.clone())
        .when(cmd(
            json!({"type": "log_complaint", "complaint_id": "k1", "severity": "minor"}),
        ))
        .then_refused("complaint_already_exists");
    given(with_complaint.clone())
        .when(cmd(
            json!({"type": "resolve_complaint", "complaint_id": "k1", "resolution_hours": 30}),
        ))
        .then_event(resolved("k1", 30));
    given(active())
        .when(cmd(
            json!({"type": "resolve_complaint", "complaint_id": "k9", "resolution_hours": 1}),
        ))
        .then_refused("complaint_not_found");
    with_complaint.push(resolved("k1", 2));
    given(with_complaint)
        .when(cmd(
            json!({"type": "resolve_complaint", "complaint_id": "k1", "resolution_hours": 1}),
        ))
        .then_refused("complaint_not_open");
}

#[test]
fn value_adds_care_touches_and_surveys() {
    given(active())
        .when(cmd(json!({"type": "deliver_value_add", "kind": "partner_introduction", "note": "met Foo Ltd"})))
        .then_event(Event::ValueAddDelivered(ValueAddDelivered {
            kind: ValueAddKind::PartnerIntroduction,
            note: Some("met Foo Ltd".into()),
        }));
    given(active())
        .when(cmd(json!({"type": "deliver_value_add", "kind": "industry_insight", "note": "x".repeat(2_001)})))
        .then_refused("field_too_long");
    given(active())
        .when(cmd(
            json!({"type": "record_care_touch", "kind": "community_event"}),
        ))
        .then_event(Event::CareTouchRecorded(CareTouchRecorded {
            kind: CareTouchKind::CommunityEvent,
            note: None,
        }));
    for (kind, score, ok) in [
        ("csat", 1, true),
        ("csat", 5, true),
        ("csat", 0, false),
        ("csat", 6, false),
        ("nps", 0, true),
        ("nps", 10, true),
        ("nps", 11, false),
    ] {
        let w = given(active()).when(cmd(
            json!({"type": "record_survey", "kind": kind, "score": score}),
        ));
        if ok {
            w.then_event(Event::SurveyAnswered(SurveyAnswered {
                kind: if kind == "csat" {
                    SurveyKind::Csat
                } else {
                    SurveyKind::Nps
                },
                score,
                comment: None,
            }));
        } else {
            w.then_refused("out_of_range");
        }
    }
}

#[test]
fn purchases_and_activity() {
    let body = |order: &str, amount: i64, currency: &str| {
        cmd(
            json!({"type": "record_purchase", "order_id": order, "amount_minor": amount,
            "currency": currency, "ordered_on": "2025-05-30"}),
        )
    };
    given(active())
        .when(body("o1", 250, "CNY"))
        .then_event(Event::PurchaseRecorded(PurchaseRecorded {
            order_id: "o1".into(),
            amount_minor: 250,
            currency: "CNY".into(),
            ordered_on: date!(2025 - 05 - 30),
        }));
    let mut with_order = active();
    with_order.push(Event::PurchaseRecorded(PurchaseRecorded {
        order_id: "o1".into(),
        amount_minor: 1,
        currency: "EUR".into(),
        ordered_on: date!(2025 - 05 - 01),
    }));
    given(with_order)
        .when(body("o1", 250, "EUR"))
        .then_refused("duplicate_order");
    given(active())
        .when(body("o2", -5, "EUR"))
        .then_refused("invalid_amount");
    given(active())
        .when(body("o2", 5, "E1R"))
        .then_refused("invalid_currency");
    given(active())
        .when(cmd(json!({"type": "record_activity", "day": "2025-05-31", "logins": 12, "active_users": 4})))
        .then_event(Event::ActivityRecorded(ActivityRecorded {
            day: date!(2025 - 05 - 31),
            logins: 12,
            active_users: Some(4),
        }));
    given(active())
        .when(cmd(json!({"type": "flag_inactivity", "days_inactive": 31, "last_activity_on": "2025-05-01"})))
        .then_event(Event::InactivityFlagged(InactivityFlagged {
            days_inactive: 31,
            last_activity_on: Some(date!(2025 - 05 - 01)),
        }));
    given(active())
        .when(cmd(json!({"type": "flag_inactivity", "days_inactive": 0})))
        .then_refused("out_of_range");
}

#[test]
fn key_contacts() {
    given(active())
        .when(cmd(json!({"type": "change_key_contact", "role": "technical_evaluator", "previous_contact": "A", "new_contact": "B"})))
        .then_event(Event::KeyContactChanged(KeyContactChanged {
            role: ContactRole::TechnicalEvaluator,
            previous_contact: Some("A".into()),
            new_contact: "B".into(),
        }));
    given(active())
        .when(cmd(
            json!({"type": "change_key_contact", "role": "gatekeeper", "new_contact": " "}),
        ))
        .then_refused("empty_field");
}

#[test]
fn mark_renewal_due() {
    let body = |term: &str| {
        cmd(json!({"type": "mark_renewal_due", "contract_id": "c1", "term_ends_on": term}))
    };
    // Ends 2025-12-31 with 90 days' notice: the window opens 2025-10-02.
    given(active())
        .at(datetime!(2025-10-02 00:00 UTC))
        .when(body("2025-12-31"))
        .then_event(Event::RenewalMarkedDue(RenewalMarkedDue {
            contract_id: "c1".into(),
            term_ends_on: date!(2025 - 12 - 31),
            notice_days: 90,
        }));
    given(active())
        .at(datetime!(2025-10-01 23:59 UTC))
        .when(body("2025-12-31"))
        .then_refused("renewal_not_due");
    given(active())
        .at(datetime!(2025-11-01 0:00 UTC))
        .when(body("2025-11-30"))
        .then_refused("term_mismatch");
    let mut marked = active();
    marked.push(Event::RenewalMarkedDue(RenewalMarkedDue {
        contract_id: "c1".into(),
        term_ends_on: date!(2025 - 12 - 31),
        notice_days: 90,
    }));
    given(marked.clone())
        .at(datetime!(2025-11-01 0:00 UTC))
        .when(body("2025-12-31"))
        .then_refused("renewal_already_marked");
    // A renewal starts a new term: it can be marked due again in its own window.
    marked.push(Event::ContractRenewed(ContractRenewed {
        contract_id: "c1".into(),
        previous_ends_on: date!(2025 - 12 - 31),
        new_ends_on: date!(2026 - 12 - 31),
        value_minor: None,
    }));
    given(marked)
        .at(datetime!(2026-10-15 0:00 UTC))
        .when(body("2026-12-31"))
        .then_event(Event::RenewalMarkedDue(RenewalMarkedDue {
            contract_id: "c1".into(),
            term_ends_on: date!(2026 - 12 - 31),
            notice_days: 90,
        }));
    given([registered()])
        .when(body("2025-12-31"))
        .then_refused("contract_not_found");
}

#[test]
fn renew_expand_terminate() {
    given(active())
        .when(cmd(json!({"type": "renew_contract", "contract_id": "c1", "new_ends_on": "2026-12-31", "value_minor": 2_000})))
        .then_event(Event::ContractRenewed(ContractRenewed {
            contract_id: "c1".into(),
            previous_ends_on: date!(2025 - 12 - 31),
            new_ends_on: date!(2026 - 12 - 31),
            value_minor: Some(2_000),
        }));
    given(active())
        .when(cmd(
            json!({"type": "renew_contract", "contract_id": "c1", "new_ends_on": "2025-12-31"}),
        ))
        .then_refused("invalid_dates");
    given(active())
        .when(cmd(json!({"type": "renew_contract", "contract_id": "c1", "new_ends_on": "2026-12-31", "value_minor": 0})))
        .then_refused("invalid_amount");
    given(active())
        .when(cmd(json!({"type": "expand_contract", "contract_id": "c1", "kind": "cross_sell", "added_value_minor": 300})))
        .then_event(Event::ContractExpanded(ContractExpanded {
            contract_id: "c1".into(),
            kind: ExpansionKind::CrossSell,
            added_value_minor: 300,
        }));
    given(active())
        .when(cmd(json!({"type": "expand_contract", "contract_id": "c1", "kind": "upsell", "added_value_minor": -3})))
        .then_refused("invalid_amount");
    // Terminating one of two contracts is not churn; the last one is.
    let state = given([registered(), signed("c1"), signed("c2")])
        .when(cmd(
            json!({"type": "terminate_contract", "contract_id": "c1", "reason": "merged"}),
        ))
        .then_event(Event::ContractTerminated(ContractTerminated {
            contract_id: "c1".into(),
            reason: Some("merged".into()),
            churned: false,
            lapsed: false,
        }));
    assert!(!state.churned);
    let state = given(active())
        .when(cmd(
            json!({"type": "terminate_contract", "contract_id": "c1"}),
        ))
        .then_event(terminated("c1", true));
    assert!(state.churned);
    given(churned())
        .when(cmd(
            json!({"type": "terminate_contract", "contract_id": "c1"}),
        ))
        .then_refused("customer_churned");
    given([
        registered(),
        signed("c1"),
        signed("c2"),
        terminated("c1", false),
    ])
    .when(cmd(
        json!({"type": "terminate_contract", "contract_id": "c1"}),
    ))
    .then_refused("contract_not_active");
}

#[test]
fn after_churn_only_win_back_and_interventions() {
    given(churned())
        .when(cmd(json!({"type": "log_intervention", "action": "offer", "note": "20% off", "alert_id": "alert-3"})))
        .then_event(Event::InterventionLogged(InterventionLogged {
            action: InterventionAction::Offer,
            note: Some("20% off".into()),
            alert_id: Some("alert-3".into()),
        }));
    for body in [
        json!({"type": "record_care_touch", "kind": "birthday"}),
        json!({"type": "record_activity", "day": "2025-05-31", "logins": 1}),
        json!({"type": "log_complaint", "complaint_id": "k", "severity": "minor"}),
        json!({"type": "record_purchase", "order_id": "o", "amount_minor": 1, "currency": "EUR", "ordered_on": "2025-05-30"}),
        json!({"type": "flag_inactivity", "days_inactive": 40}),
    ] {
        given(churned())
            .when(cmd(body))
            .then_refused("customer_churned");
    }
    given(churned())
        .when(cmd(json!({"type": "register_customer", "name": "Again"})))
        .then_refused("customer_already_registered");
}

#[test]
fn wire_format() {
    // Unknown fields are refused even inside the internally tagged enum.
    assert!(
        serde_json::from_value::<Command>(
            json!({"type": "record_care_touch", "kind": "other", "x": 1})
        )
        .is_err()
    );
    assert!(serde_json::from_value::<Command>(json!({"type": "launch"})).is_err());
    // Events are adjacently tagged, dates are plain ISO days.
    let e = Event::RenewalMarkedDue(RenewalMarkedDue {
        contract_id: "c1".into(),
        term_ends_on: date!(2025 - 12 - 31),
        notice_days: 90,
    });
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        v,
        json!({"type": "renewal_marked_due", "payload": {"contract_id": "c1", "term_ends_on": "2025-12-31", "notice_days": 90}})
    );
    assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
    // Every command type maps to its event type.
    assert_eq!(Command::TYPES.len(), Event::TYPES.len());
    let c = cmd(json!({"type": "flag_inactivity", "days_inactive": 30}));
    assert_eq!(c.event_type(), "inactivity_flagged");
    let _ = AT;
}

#[test]
fn the_eventually_aggregate_is_the_pure_functions() {
    use crate::CustomerId;
    use crate::aggregate::{Customer, Submission};
    use eventually_core::aggregate::{Aggregate, AggregateExt};
    let id = CustomerId::new(uuid::Uuid::nil());
    let state = Customer::fold(Default::default(), active().into_iter()).unwrap();
    assert_eq!(state.version, 2);
    let handled = futures::executor::block_on(Customer.handle(
        &id,
        &state,
        Submission {
            command: cmd(json!({"type": "record_care_touch", "kind": "holiday"})),
            occurred_at: AT,
            now: super::NOW,
        },
    ))
    .unwrap();
    assert_eq!(
        handled,
        Some(vec![Event::CareTouchRecorded(CareTouchRecorded {
            kind: CareTouchKind::Holiday,
            note: None
        })])
    );
    let refused = futures::executor::block_on(Customer.handle(
        &id,
        &state,
        Submission {
            command: cmd(json!({"type": "register_customer", "name": "x"})),
            occurred_at: AT,
            now: super::NOW,
        },
    ));
    assert_eq!(refused.unwrap_err().code(), "customer_already_registered");
}

#[test]
fn ids_are_trimmed_when_looked_up_as_when_stored() {
    // sign_contract and log_complaint store " c1 " as "c1"; every later command that
    // names them finds them the same way, and its event names the stored id.
    given(active())
        .when(cmd(
            json!({"type": "renew_contract", "contract_id": " c1 ", "new_ends_on": "2026-12-31"}),
        ))
        .then_event(Event::ContractRenewed(ContractRenewed {
            contract_id: "c1".into(),
            previous_ends_on: date!(2025 - 12 - 31),
            new_ends_on: date!(2026 - 12 - 31),
            value_minor: None,
        }));
    let mut two = active();
    two.push(signed("c2"));
    given(two)
        .when(cmd(
            json!({"type": "terminate_contract", "contract_id": "\tc1\n"}),
        ))
        .then_event(terminated("c1", false));
    let mut with_complaint = active();
    with_complaint.push(complaint("k1"));
    given(with_complaint)
        .when(cmd(
            json!({"type": "resolve_complaint", "complaint_id": " k1", "resolution_hours": 3}),
        ))
        .then_event(resolved("k1", 3));
    // A blank id is refused as empty, not as an unknown contract.
    given(active())
        .when(cmd(json!({"type": "expand_contract", "contract_id": "  ", "kind": "cross_sell", "added_value_minor": 300})))
        .then_refused("empty_field");
}
