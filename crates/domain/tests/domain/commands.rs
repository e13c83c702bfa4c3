//! Every command: its accepted event with every field, and every refusal `decide` can give.

use crm_domain::command::*;
use crm_domain::decide::{
    DEFAULT_NOTICE_DAYS, MAX_CLOCK_SKEW, MAX_ID_LEN, MAX_TEXT_LEN, RESPONSE_SLA_MINUTES,
};
use crm_domain::event::*;
use crm_domain::types::*;
use crm_domain::{Command, DomainError, Event};
use time::macros::{date, datetime};
use time::{Date, Duration};

use crate::harness::*;

// ---------------------------------------------------------------------------------------
// Rules every command shares.

/// Business time is stored in UTC: an instant whose UTC form has no RFC 3339 year is
/// refused (not a panic, not an unwritable event); the edges themselves are kept.
#[test]
fn business_time_is_utc_within_the_years_rfc3339_writes() {
    let refused = DomainError::OutOfRange {
        field: "occurred_at",
        detail: "in UTC it must lie between 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
    };
    for at in [
        datetime!(9999-12-31 23:00 -01:00),
        datetime!(0000-01-01 00:00 +01:00),
    ] {
        assert_eq!(crm_domain::business_time(at), Err(refused.clone()), "{at}");
    }
    assert_eq!(
        crm_domain::business_time(datetime!(2025-06-30 21:00 -04:00)),
        Ok(datetime!(2025-07-01 01:00 UTC))
    );
    for at in [
        datetime!(9999-12-31 23:59:59 UTC),
        datetime!(0000-01-01 00:00 UTC),
    ] {
        assert_eq!(crm_domain::business_time(at), Ok(at));
    }
}

#[test]
fn every_command_but_register_is_refused_before_registration() {
    for command in one_of_each().into_iter().skip(1) {
        given(nothing())
            .at(RENEWAL_WINDOW_AT)
            .when(command)
            .then_refused("customer_not_registered");
    }
}

#[test]
fn after_churn_only_sign_contract_and_log_intervention_are_accepted() {
    for command in one_of_each() {
        let then = given(churned()).at(RENEWAL_WINDOW_AT).when(command.clone());
        match command {
            Command::SignContract(_) | Command::LogIntervention(_) => {
                then.then_accepted();
            }
            // Registering twice is refused for that more specific reason.
            Command::RegisterCustomer(_) => {
                then.then_refused("customer_already_registered");
            }
            _ => {
                then.then_refused("customer_churned");
            }
        }
    }
}

#[test]
fn churn_is_checked_before_the_contract_rules() {
    // c1 is terminated, so contract_not_active would also apply; churn wins.
    given(churned())
        .when(Command::TerminateContract(terminate("c1")))
        .then_refused("customer_churned");
    given(churned())
        .when(Command::DeliverService(deliver("nope")))
        .then_refused("customer_churned");
}

#[test]
fn one_of_each_is_accepted_by_an_active_customer_and_becomes_its_own_event_type() {
    let mut types = Vec::new();
    for command in one_of_each().into_iter().skip(1) {
        let event = given(with_everything())
            .at(RENEWAL_WINDOW_AT)
            .when(command.clone())
            .then_accepted();
        assert_eq!(event.event_type(), command.event_type(), "{command:?}");
        types.push(event.event_type());
    }
    assert_eq!(types, &Event::TYPES[1..]);
}

#[test]
fn occurred_at_may_lead_the_recorder_by_the_clock_skew_but_no_more() {
    assert_eq!(MAX_CLOCK_SKEW, Duration::minutes(5));
    for command in one_of_each() {
        let events = match command {
            Command::RegisterCustomer(_) => nothing(),
            _ => with_everything(),
        };
        given(events.clone())
            .at(RENEWAL_WINDOW_AT)
            .recorded_at(RENEWAL_WINDOW_AT - MAX_CLOCK_SKEW)
            .when(command.clone())
            .then_accepted();
        given(events.clone())
            .at(RENEWAL_WINDOW_AT)
            .recorded_at(RENEWAL_WINDOW_AT - MAX_CLOCK_SKEW - Duration::nanoseconds(1))
            .when(command.clone())
            .then_refused("occurred_in_future");
        // The future check comes first, even for a command refused for other reasons.
        given(nothing())
            .at(RENEWAL_WINDOW_AT)
            .recorded_at(RENEWAL_WINDOW_AT - Duration::hours(1))
            .when(command)
            .then_refused("occurred_in_future");
    }
}

#[test]
fn history_may_be_back_filled() {
    given(nothing())
        .at(datetime!(1999-01-01 00:00 UTC))
        .recorded_at(NOW)
        .when(Command::RegisterCustomer(register("Acme")))
        .then_accepted();
}

#[test]
fn occurred_at_is_compared_as_an_instant_not_a_wall_clock_reading() {
    // 14:00 at +02:00 is 12:00 UTC, not ahead of a 12:00:05 UTC recorder.
    given(nothing())
        .at(datetime!(2025-06-01 14:00 +02:00))
        .recorded_at(NOW)
        .when(Command::RegisterCustomer(register("Acme")))
        .then_accepted();
}

// ---------------------------------------------------------------------------------------
// register_customer

#[test]
fn register_customer_trims_text_and_drops_blank_optionals() {
    let state = given(nothing())
        .when(Command::RegisterCustomer(RegisterCustomer {
            name: "  Acme GmbH  ".into(),
            segment: Some(" retail ".into()),
            region: Some("   ".into()),
            account_manager: Some("Ann".into()),
            acquisition_channel: Some("".into()),
        }))
        .then_event(Event::CustomerRegistered(CustomerRegistered {
            name: "Acme GmbH".into(),
            segment: Some("retail".into()),
            region: None,
            account_manager: Some("Ann".into()),
            acquisition_channel: None,
        }));
    assert!(state.registered);
    assert_eq!(state.name, "Acme GmbH");
    assert_eq!(state.version, 1);
    assert!(!state.churned && !state.won_back);
}

#[test]
fn register_customer_only_once() {
    given(prospect())
        .when(Command::RegisterCustomer(register("Acme")))
        .then_refused("customer_already_registered");
    given(active())
        .when(Command::RegisterCustomer(register("Other")))
        .then_refused("customer_already_registered");
}

#[test]
fn register_customer_needs_a_name() {
    for blank in ["", "   ", "\t\n"] {
        let err = given(nothing())
            .when(Command::RegisterCustomer(register(blank)))
            .then_refused("empty_field");
        assert_eq!(err, DomainError::EmptyField { field: "name" });
    }
}

#[test]
fn register_customer_text_is_bounded() {
    given(nothing())
        .when(Command::RegisterCustomer(register(&chars(MAX_TEXT_LEN))))
        .then_accepted();
    let err = given(nothing())
        .when(Command::RegisterCustomer(register(&chars(
            MAX_TEXT_LEN + 1,
        ))))
        .then_refused("field_too_long");
    assert_eq!(
        err,
        DomainError::FieldTooLong {
            field: "name",
            max: MAX_TEXT_LEN
        }
    );
    // Length counts characters, not bytes.
    given(nothing())
        .when(Command::RegisterCustomer(register(
            &"é".repeat(MAX_TEXT_LEN),
        )))
        .then_accepted();
    // Surrounding blanks do not count.
    given(nothing())
        .when(Command::RegisterCustomer(register(&format!(
            "  {}  ",
            chars(MAX_TEXT_LEN)
        ))))
        .then_accepted();
    for (field, command) in [
        (
            "segment",
            RegisterCustomer {
                segment: Some(chars(MAX_TEXT_LEN + 1)),
                ..register("Acme")
            },
        ),
        (
            "region",
            RegisterCustomer {
                region: Some(chars(MAX_TEXT_LEN + 1)),
                ..register("Acme")
            },
        ),
        (
            "account_manager",
            RegisterCustomer {
                account_manager: Some(chars(MAX_TEXT_LEN + 1)),
                ..register("Acme")
            },
        ),
        (
            "acquisition_channel",
            RegisterCustomer {
                acquisition_channel: Some(chars(MAX_TEXT_LEN + 1)),
                ..register("Acme")
            },
        ),
    ] {
        let err = given(nothing())
            .when(Command::RegisterCustomer(command))
            .then_refused("field_too_long");
        assert_eq!(
            err,
            DomainError::FieldTooLong {
                field,
                max: MAX_TEXT_LEN
            }
        );
    }
}

// ---------------------------------------------------------------------------------------
// sign_contract

#[test]
fn sign_contract_defaults_notice_to_90_days() {
    assert_eq!(DEFAULT_NOTICE_DAYS, 90);
    let state = given(prospect())
        .when(Command::SignContract(SignContract {
            contract_id: " c1 ".into(),
            ..sign("c1")
        }))
        .then_event(Event::ContractSigned(ContractSigned {
            contract_id: "c1".into(),
            value_minor: 1_000,
            currency: "EUR".into(),
            starts_on: date!(2025 - 01 - 01),
            ends_on: date!(2025 - 12 - 31),
            notice_days: 90,
            win_back: false,
        }));
    let c1 = &state.contracts["c1"];
    assert!(c1.is_active());
    assert_eq!(c1.value_minor, 1_000);
    assert_eq!(c1.currency, "EUR");
    assert_eq!(c1.starts_on, date!(2025 - 01 - 01));
    assert_eq!(c1.ends_on, date!(2025 - 12 - 31));
    assert_eq!(c1.notice_days, 90);
    assert_eq!(c1.renewal_due_for, None);
    assert!(state.has_active_contract());
}

#[test]
fn sign_contract_keeps_an_explicit_notice_period() {
    for notice in [0, 30, 3_650] {
        given(active())
            .when(Command::SignContract(SignContract {
                notice_days: Some(notice),
                value_minor: 1,
                currency: "USD".into(),
                starts_on: date!(2025 - 03 - 01),
                ends_on: date!(2025 - 03 - 02),
                ..sign("c2")
            }))
            .then_event(Event::ContractSigned(ContractSigned {
                contract_id: "c2".into(),
                value_minor: 1,
                currency: "USD".into(),
                starts_on: date!(2025 - 03 - 01),
                ends_on: date!(2025 - 03 - 02),
                notice_days: notice,
                win_back: false,
            }));
    }
    let err = given(active())
        .when(Command::SignContract(SignContract {
            notice_days: Some(3_651),
            ..sign("c2")
        }))
        .then_refused("out_of_range");
    assert!(matches!(
        err,
        DomainError::OutOfRange {
            field: "notice_days",
            ..
        }
    ));
}

#[test]
fn sign_contract_after_churn_is_a_win_back() {
    let state = given(churned())
        .when(Command::SignContract(sign("c2")))
        .then_event(Event::ContractSigned(ContractSigned {
            win_back: true,
            ..signed_fields("c2")
        }));
    assert!(!state.churned);
    assert!(state.won_back);
    assert!(state.has_active_contract());
    // A second contract of the won-back customer is no win-back.
    given(vec![
        registered(),
        signed("c1"),
        terminated("c1", true),
        Event::ContractSigned(ContractSigned {
            win_back: true,
            ..signed_fields("c2")
        }),
    ])
    .when(Command::SignContract(sign("c3")))
    .then_event(Event::ContractSigned(signed_fields("c3")));
}

fn signed_fields(id: &str) -> ContractSigned {
    match signed(id) {
        Event::ContractSigned(e) => e,
        _ => unreachable!(),
    }
}

#[test]
fn sign_contract_ids_are_unique_per_customer_even_after_termination() {
    let err = given(active())
        .when(Command::SignContract(sign("c1")))
        .then_refused("contract_already_exists");
    assert_eq!(err, DomainError::ContractAlreadyExists("c1".into()));
    // The id is trimmed before the lookup.
    given(active())
        .when(Command::SignContract(sign("  c1")))
        .then_refused("contract_already_exists");
    given(one_terminated())
        .when(Command::SignContract(sign("c1")))
        .then_refused("contract_already_exists");
    given(churned())
        .when(Command::SignContract(sign("c1")))
        .then_refused("contract_already_exists");
}

#[test]
fn sign_contract_value_must_be_positive() {
    for value in [0, -1, i64::MIN] {
        let err = given(prospect())
            .when(Command::SignContract(SignContract {
                value_minor: value,
                ..sign("c1")
            }))
            .then_refused("invalid_amount");
        assert_eq!(
            err,
            DomainError::InvalidAmount {
                field: "value_minor"
            }
        );
    }
    given(prospect())
        .when(Command::SignContract(SignContract {
            value_minor: i64::MAX,
            ..sign("c1")
        }))
        .then_accepted();
}

#[test]
fn sign_contract_currency_is_three_uppercase_letters() {
    for bad in ["", "eur", "Eur", "EU", "EURO", "E1R", "ÉUR", " EUR"] {
        let err = given(prospect())
            .when(Command::SignContract(SignContract {
                currency: bad.into(),
                ..sign("c1")
            }))
            .then_refused("invalid_currency");
        assert_eq!(err, DomainError::InvalidCurrency(bad.into()));
    }
}

#[test]
fn sign_contract_must_end_after_it_starts() {
    for ends_on in [date!(2025 - 01 - 01), date!(2024 - 12 - 31)] {
        given(prospect())
            .when(Command::SignContract(SignContract {
                ends_on,
                ..sign("c1")
            }))
            .then_refused("invalid_dates");
    }
    given(prospect())
        .when(Command::SignContract(SignContract {
            ends_on: date!(2025 - 01 - 02),
            ..sign("c1")
        }))
        .then_accepted();
}

#[test]
fn sign_contract_id_is_required_and_bounded() {
    for blank in ["", "  "] {
        let err = given(prospect())
            .when(Command::SignContract(sign(blank)))
            .then_refused("empty_field");
        assert_eq!(
            err,
            DomainError::EmptyField {
                field: "contract_id"
            }
        );
    }
    given(prospect())
        .when(Command::SignContract(sign(&chars(MAX_ID_LEN))))
        .then_accepted();
    let err = given(prospect())
        .when(Command::SignContract(sign(&chars(MAX_ID_LEN + 1))))
        .then_refused("field_too_long");
    assert_eq!(
        err,
        DomainError::FieldTooLong {
            field: "contract_id",
            max: MAX_ID_LEN
        }
    );
}

#[test]
fn sign_contract_needs_a_registered_customer() {
    given(nothing())
        .when(Command::SignContract(sign("c1")))
        .then_refused("customer_not_registered");
}

// ---------------------------------------------------------------------------------------
// deliver_service

#[test]
fn deliver_service_on_time() {
    let state = given(active())
        .when(Command::DeliverService(DeliverService {
            service_id: " s1 ".into(),
            ..deliver("c1")
        }))
        .then_event(Event::ServiceDelivered(ServiceDelivered {
            contract_id: "c1".into(),
            service_id: "s1".into(),
            promised_on: date!(2025 - 05 - 20),
            delivered_on: date!(2025 - 05 - 20),
            exceeded_expectations: false,
        }));
    // Only the version and the delivered services move.
    let mut expected = given(active()).state().clone();
    expected.version += 1;
    expected.delivered_services.insert("s1".into());
    assert_eq!(state, expected);
}

/// A service is delivered, and paid into the trust account, once: a second delivery of
/// the same id, or a delay reported after it, is refused. Slips before delivery (one or
/// several) are news, and a delayed service can still be delivered on its new date.
#[test]
fn a_service_is_delivered_once_and_not_delayed_after_delivery() {
    let history = |extra: Vec<Event>| {
        let mut e = active();
        e.extend(extra);
        e
    };
    let delivered_event = Event::ServiceDelivered(ServiceDelivered {
        contract_id: "c1".into(),
        service_id: "s1".into(),
        promised_on: date!(2025 - 05 - 20),
        delivered_on: date!(2025 - 05 - 20),
        exceeded_expectations: false,
    });
    for again in [
        Command::DeliverService(DeliverService {
            service_id: " s1".into(),
            ..deliver("c1")
        }),
        Command::DelayService(delay("c1")),
    ] {
        let err = given(history(vec![delivered_event.clone()]))
            .when(again)
            .then_refused("service_already_delivered");
        assert_eq!(err, DomainError::ServiceAlreadyDelivered("s1".into()));
    }
    let slipped = Event::ServiceDelayed(ServiceDelayed {
        contract_id: "c1".into(),
        service_id: "s1".into(),
        promised_on: date!(2025 - 05 - 10),
        days_late: 3,
        reason: None,
    });
    given(history(vec![slipped.clone()]))
        .when(Command::DelayService(delay("c1")))
        .then_accepted();
    given(history(vec![slipped]))
        .when(Command::DeliverService(deliver("c1")))
        .then_accepted();
    // Another service is another matter.
    given(history(vec![delivered_event]))
        .when(Command::DeliverService(DeliverService {
            service_id: "s2".into(),
            ..deliver("c1")
        }))
        .then_accepted();
}

#[test]
fn deliver_service_early_and_beyond_expectations() {
    given(active())
        .when(Command::DeliverService(DeliverService {
            delivered_on: date!(2025 - 05 - 01),
            exceeded_expectations: Some(true),
            ..deliver("c1")
        }))
        .then_event(Event::ServiceDelivered(ServiceDelivered {
            contract_id: "c1".into(),
            service_id: "s1".into(),
            promised_on: date!(2025 - 05 - 20),
            delivered_on: date!(2025 - 05 - 01),
            exceeded_expectations: true,
        }));
}

#[test]
fn deliver_service_late_must_be_a_delay() {
    given(active())
        .when(Command::DeliverService(DeliverService {
            delivered_on: date!(2025 - 05 - 21),
            ..deliver("c1")
        }))
        .then_refused("delivery_late");
}

#[test]
fn deliver_service_needs_an_active_contract() {
    let err = given(active())
        .when(Command::DeliverService(deliver("c7")))
        .then_refused("contract_not_found");
    assert_eq!(err, DomainError::ContractNotFound("c7".into()));
    let err = given(one_terminated())
        .when(Command::DeliverService(deliver("c1")))
        .then_refused("contract_not_active");
    assert_eq!(err, DomainError::ContractNotActive("c1".into()));
    given(prospect())
        .when(Command::DeliverService(deliver("c1")))
        .then_refused("contract_not_found");
    given(nothing())
        .when(Command::DeliverService(deliver("c1")))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::DeliverService(deliver("c1")))
        .then_refused("customer_churned");
}

#[test]
fn deliver_service_id_is_required_and_bounded() {
    let err = given(active())
        .when(Command::DeliverService(DeliverService {
            service_id: " ".into(),
            ..deliver("c1")
        }))
        .then_refused("empty_field");
    assert_eq!(
        err,
        DomainError::EmptyField {
            field: "service_id"
        }
    );
    given(active())
        .when(Command::DeliverService(DeliverService {
            service_id: chars(MAX_ID_LEN + 1),
            ..deliver("c1")
        }))
        .then_refused("field_too_long");
}

// ---------------------------------------------------------------------------------------
// delay_service

#[test]
fn delay_service() {
    given(active())
        .when(Command::DelayService(DelayService {
            reason: Some("  supplier strike ".into()),
            ..delay("c1")
        }))
        .then_event(Event::ServiceDelayed(ServiceDelayed {
            contract_id: "c1".into(),
            service_id: "s1".into(),
            promised_on: date!(2025 - 05 - 20),
            days_late: 3,
            reason: Some("supplier strike".into()),
        }));
    given(active())
        .when(Command::DelayService(DelayService {
            days_late: 3_650,
            reason: Some(" ".into()),
            ..delay("c1")
        }))
        .then_event(Event::ServiceDelayed(ServiceDelayed {
            contract_id: "c1".into(),
            service_id: "s1".into(),
            promised_on: date!(2025 - 05 - 20),
            days_late: 3_650,
            reason: None,
        }));
}

#[test]
fn delay_service_days_late_is_between_1_and_3650() {
    for days in [0, 3_651, u32::MAX] {
        let err = given(active())
            .when(Command::DelayService(DelayService {
                days_late: days,
                ..delay("c1")
            }))
            .then_refused("out_of_range");
        assert!(matches!(
            err,
            DomainError::OutOfRange {
                field: "days_late",
                ..
            }
        ));
    }
    given(active())
        .when(Command::DelayService(DelayService {
            days_late: 1,
            ..delay("c1")
        }))
        .then_accepted();
}

#[test]
fn delay_service_refusals() {
    given(active())
        .when(Command::DelayService(delay("c7")))
        .then_refused("contract_not_found");
    given(one_terminated())
        .when(Command::DelayService(delay("c1")))
        .then_refused("contract_not_active");
    given(active())
        .when(Command::DelayService(DelayService {
            service_id: "".into(),
            ..delay("c1")
        }))
        .then_refused("empty_field");
    given(active())
        .when(Command::DelayService(DelayService {
            service_id: chars(MAX_ID_LEN + 1),
            ..delay("c1")
        }))
        .then_refused("field_too_long");
    let err = given(active())
        .when(Command::DelayService(DelayService {
            reason: Some(chars(MAX_TEXT_LEN + 1)),
            ..delay("c1")
        }))
        .then_refused("field_too_long");
    assert_eq!(
        err,
        DomainError::FieldTooLong {
            field: "reason",
            max: MAX_TEXT_LEN
        }
    );
    given(nothing())
        .when(Command::DelayService(delay("c1")))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::DelayService(delay("c1")))
        .then_refused("customer_churned");
}

// ---------------------------------------------------------------------------------------
// respond_to_request

#[test]
fn respond_to_request_within_sla_is_at_most_120_minutes() {
    assert_eq!(RESPONSE_SLA_MINUTES, 120);
    for (minutes, within_sla) in [(0, true), (120, true), (121, false), (u32::MAX, false)] {
        given(prospect())
            .when(Command::RespondToRequest(respond(minutes)))
            .then_event(Event::RequestResponded(RequestResponded {
                request_id: "r1".into(),
                response_minutes: minutes,
                within_sla,
            }));
    }
}

#[test]
fn respond_to_request_refusals() {
    given(prospect())
        .when(Command::RespondToRequest(RespondToRequest {
            request_id: " ".into(),
            response_minutes: 5,
        }))
        .then_refused("empty_field");
    given(prospect())
        .when(Command::RespondToRequest(RespondToRequest {
            request_id: chars(MAX_ID_LEN + 1),
            response_minutes: 5,
        }))
        .then_refused("field_too_long");
    // Only the first response counts: a second one for the same request is refused.
    let mut history = prospect();
    history.push(Event::RequestResponded(RequestResponded {
        request_id: "r1".into(),
        response_minutes: 5,
        within_sla: true,
    }));
    let err = given(history.clone())
        .when(Command::RespondToRequest(RespondToRequest {
            request_id: "r1 ".into(),
            response_minutes: 300,
        }))
        .then_refused("request_already_responded");
    assert_eq!(err, DomainError::RequestAlreadyResponded("r1".into()));
    given(history)
        .when(Command::RespondToRequest(RespondToRequest {
            request_id: "r2".into(),
            response_minutes: 300,
        }))
        .then_accepted();
    given(nothing())
        .when(Command::RespondToRequest(respond(5)))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::RespondToRequest(respond(5)))
        .then_refused("customer_churned");
}

// ---------------------------------------------------------------------------------------
// log_complaint / resolve_complaint

#[test]
fn log_complaint_in_every_severity() {
    for severity in Severity::ALL.iter().copied() {
        let state = given(prospect())
            .when(Command::LogComplaint(LogComplaint {
                complaint_id: " k1 ".into(),
                severity,
                topic: Some(" billing ".into()),
            }))
            .then_event(Event::ComplaintLogged(ComplaintLogged {
                complaint_id: "k1".into(),
                severity,
                topic: Some("billing".into()),
            }));
        let k1 = &state.complaints["k1"];
        assert!(k1.open);
        assert_eq!(k1.severity, severity);
    }
}

#[test]
fn log_complaint_refusals() {
    let err = given(vec![registered(), complaint_logged("k1", Severity::Minor)])
        .when(Command::LogComplaint(log_complaint("k1")))
        .then_refused("complaint_already_exists");
    assert_eq!(err, DomainError::ComplaintAlreadyExists("k1".into()));
    // A resolved complaint keeps its id.
    given(vec![
        registered(),
        complaint_logged("k1", Severity::Minor),
        complaint_resolved("k1", Severity::Minor),
    ])
    .when(Command::LogComplaint(log_complaint("k1")))
    .then_refused("complaint_already_exists");
    given(prospect())
        .when(Command::LogComplaint(log_complaint("")))
        .then_refused("empty_field");
    given(prospect())
        .when(Command::LogComplaint(log_complaint(&chars(MAX_ID_LEN + 1))))
        .then_refused("field_too_long");
    given(prospect())
        .when(Command::LogComplaint(LogComplaint {
            topic: Some(chars(MAX_TEXT_LEN + 1)),
            ..log_complaint("k1")
        }))
        .then_refused("field_too_long");
    given(nothing())
        .when(Command::LogComplaint(log_complaint("k1")))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::LogComplaint(log_complaint("k1")))
        .then_refused("customer_churned");
}

#[test]
fn resolve_complaint_carries_the_logged_severity() {
    let state = given(vec![
        registered(),
        complaint_logged("k1", Severity::Critical),
    ])
    .when(Command::ResolveComplaint(ResolveComplaint {
        complaint_id: "k1".into(),
        resolution_hours: 49,
    }))
    .then_event(Event::ComplaintResolved(ComplaintResolved {
        complaint_id: "k1".into(),
        severity: Severity::Critical,
        resolution_hours: 49,
    }));
    assert!(!state.complaints["k1"].open);
    assert_eq!(state.complaints["k1"].severity, Severity::Critical);
}

#[test]
fn resolve_complaint_refusals() {
    let err = given(prospect())
        .when(Command::ResolveComplaint(resolve("k1")))
        .then_refused("complaint_not_found");
    assert_eq!(err, DomainError::ComplaintNotFound("k1".into()));
    let err = given(vec![
        registered(),
        complaint_logged("k1", Severity::Minor),
        complaint_resolved("k1", Severity::Minor),
    ])
    .when(Command::ResolveComplaint(resolve("k1")))
    .then_refused("complaint_not_open");
    assert_eq!(err, DomainError::ComplaintNotOpen("k1".into()));
    given(nothing())
        .when(Command::ResolveComplaint(resolve("k1")))
        .then_refused("customer_not_registered");
    given(vec![
        registered(),
        signed("c1"),
        complaint_logged("k1", Severity::Minor),
        terminated("c1", true),
    ])
    .when(Command::ResolveComplaint(resolve("k1")))
    .then_refused("customer_churned");
}

// ---------------------------------------------------------------------------------------
// deliver_value_add / record_care_touch / record_survey / log_intervention

#[test]
fn deliver_value_add() {
    for kind in ValueAddKind::ALL.iter().copied() {
        given(active())
            .when(Command::DeliverValueAdd(DeliverValueAdd {
                kind,
                note: Some(" report Q2 ".into()),
            }))
            .then_event(Event::ValueAddDelivered(ValueAddDelivered {
                kind,
                note: Some("report Q2".into()),
            }));
    }
    given(active())
        .when(Command::DeliverValueAdd(DeliverValueAdd {
            note: Some(chars(MAX_TEXT_LEN + 1)),
            ..value_add()
        }))
        .then_refused("field_too_long");
    given(nothing())
        .when(Command::DeliverValueAdd(value_add()))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::DeliverValueAdd(value_add()))
        .then_refused("customer_churned");
}

#[test]
fn record_care_touch() {
    for kind in CareTouchKind::ALL.iter().copied() {
        given(active())
            .when(Command::RecordCareTouch(RecordCareTouch {
                kind,
                note: None,
            }))
            .then_event(Event::CareTouchRecorded(CareTouchRecorded {
                kind,
                note: None,
            }));
    }
    given(active())
        .when(Command::RecordCareTouch(RecordCareTouch {
            note: Some(chars(MAX_TEXT_LEN + 1)),
            ..care_touch()
        }))
        .then_refused("field_too_long");
    given(nothing())
        .when(Command::RecordCareTouch(care_touch()))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::RecordCareTouch(care_touch()))
        .then_refused("customer_churned");
}

#[test]
fn record_survey_scores_csat_1_to_5_and_nps_0_to_10() {
    for (kind, score) in [
        (SurveyKind::Csat, 1),
        (SurveyKind::Csat, 5),
        (SurveyKind::Nps, 0),
        (SurveyKind::Nps, 10),
    ] {
        given(active())
            .when(Command::RecordSurvey(RecordSurvey {
                comment: Some(" fine ".into()),
                ..survey(kind, score)
            }))
            .then_event(Event::SurveyAnswered(SurveyAnswered {
                kind,
                score,
                comment: Some("fine".into()),
            }));
    }
    for (kind, score) in [
        (SurveyKind::Csat, 0),
        (SurveyKind::Csat, 6),
        (SurveyKind::Nps, 11),
        (SurveyKind::Nps, u8::MAX),
    ] {
        let err = given(active())
            .when(Command::RecordSurvey(survey(kind, score)))
            .then_refused("out_of_range");
        assert!(matches!(
            err,
            DomainError::OutOfRange { field: "score", .. }
        ));
    }
}

#[test]
fn record_survey_refusals() {
    given(active())
        .when(Command::RecordSurvey(RecordSurvey {
            comment: Some(chars(MAX_TEXT_LEN + 1)),
            ..survey(SurveyKind::Csat, 3)
        }))
        .then_refused("field_too_long");
    given(nothing())
        .when(Command::RecordSurvey(survey(SurveyKind::Csat, 3)))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::RecordSurvey(survey(SurveyKind::Csat, 3)))
        .then_refused("customer_churned");
}

#[test]
fn log_intervention() {
    for action in InterventionAction::ALL.iter().copied() {
        given(active())
            .when(Command::LogIntervention(LogIntervention {
                action,
                note: Some(" called the CFO ".into()),
                alert_id: Some(" a-1 ".into()),
            }))
            .then_event(Event::InterventionLogged(InterventionLogged {
                action,
                note: Some("called the CFO".into()),
                alert_id: Some("a-1".into()),
            }));
    }
}

#[test]
fn log_intervention_is_accepted_after_churn() {
    let state = given(churned())
        .when(Command::LogIntervention(intervention()))
        .then_event(Event::InterventionLogged(InterventionLogged {
            action: InterventionAction::Call,
            note: None,
            alert_id: None,
        }));
    assert!(
        state.churned,
        "an intervention does not win the customer back"
    );
}

#[test]
fn log_intervention_refusals() {
    // Unlike a blank note, a blank alert id is refused: it would point nowhere.
    let err = given(active())
        .when(Command::LogIntervention(LogIntervention {
            alert_id: Some(" ".into()),
            ..intervention()
        }))
        .then_refused("empty_field");
    assert_eq!(err, DomainError::EmptyField { field: "alert_id" });
    given(active())
        .when(Command::LogIntervention(LogIntervention {
            alert_id: Some(chars(MAX_ID_LEN + 1)),
            ..intervention()
        }))
        .then_refused("field_too_long");
    given(active())
        .when(Command::LogIntervention(LogIntervention {
            note: Some(chars(MAX_TEXT_LEN + 1)),
            ..intervention()
        }))
        .then_refused("field_too_long");
    given(nothing())
        .when(Command::LogIntervention(intervention()))
        .then_refused("customer_not_registered");
}

// ---------------------------------------------------------------------------------------
// record_purchase / record_activity / change_key_contact / flag_inactivity

#[test]
fn record_purchase() {
    let state = given(prospect())
        .when(Command::RecordPurchase(RecordPurchase {
            order_id: " o1 ".into(),
            amount_minor: 12_345,
            currency: "JPY".into(),
            ordered_on: date!(2024 - 02 - 29),
        }))
        .then_event(Event::PurchaseRecorded(PurchaseRecorded {
            order_id: "o1".into(),
            amount_minor: 12_345,
            currency: "JPY".into(),
            ordered_on: date!(2024 - 02 - 29),
        }));
    assert!(state.orders.contains("o1"));
}

#[test]
fn record_purchase_refusals() {
    let err = given(vec![registered(), purchased("o1")])
        .when(Command::RecordPurchase(purchase("o1")))
        .then_refused("duplicate_order");
    assert_eq!(err, DomainError::DuplicateOrder("o1".into()));
    given(vec![registered(), purchased("o1")])
        .when(Command::RecordPurchase(purchase(" o1 ")))
        .then_refused("duplicate_order");
    for amount in [0, -500] {
        let err = given(prospect())
            .when(Command::RecordPurchase(RecordPurchase {
                amount_minor: amount,
                ..purchase("o1")
            }))
            .then_refused("invalid_amount");
        assert_eq!(
            err,
            DomainError::InvalidAmount {
                field: "amount_minor"
            }
        );
    }
    given(prospect())
        .when(Command::RecordPurchase(RecordPurchase {
            currency: "usd".into(),
            ..purchase("o1")
        }))
        .then_refused("invalid_currency");
    given(prospect())
        .when(Command::RecordPurchase(purchase("  ")))
        .then_refused("empty_field");
    given(prospect())
        .when(Command::RecordPurchase(purchase(&chars(MAX_ID_LEN + 1))))
        .then_refused("field_too_long");
    given(nothing())
        .when(Command::RecordPurchase(purchase("o1")))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::RecordPurchase(purchase("o1")))
        .then_refused("customer_churned");
}

#[test]
fn usage_days_after_the_business_time_are_refused() {
    // AT is 2025-06-01 12:00 UTC: its day, and the next (a local day ahead of UTC), are
    // accepted; a day after that is in the future of the command.
    for (day, accepted) in [
        (date!(2025 - 06 - 01), true),
        (date!(2025 - 06 - 02), true),
        (date!(2025 - 06 - 03), false),
        (date!(2026 - 06 - 01), false),
    ] {
        let commands = [
            Command::RecordActivity(RecordActivity { day, ..activity() }),
            Command::RecordPurchase(RecordPurchase {
                ordered_on: day,
                ..purchase("o9")
            }),
        ];
        for command in commands {
            let then = given(active()).at(AT).when(command);
            if accepted {
                then.then_accepted();
            } else {
                then.then_refused("invalid_dates");
            }
        }
    }
}

#[test]
fn record_activity() {
    given(active())
        .when(Command::RecordActivity(RecordActivity {
            active_users: Some(3),
            ..activity()
        }))
        .then_event(Event::ActivityRecorded(ActivityRecorded {
            day: date!(2025 - 05 - 31),
            logins: 7,
            active_users: Some(3),
        }));
    given(active())
        .when(Command::RecordActivity(RecordActivity {
            logins: 0,
            ..activity()
        }))
        .then_event(Event::ActivityRecorded(ActivityRecorded {
            day: date!(2025 - 05 - 31),
            logins: 0,
            active_users: None,
        }));
    given(nothing())
        .when(Command::RecordActivity(activity()))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::RecordActivity(activity()))
        .then_refused("customer_churned");
}

#[test]
fn change_key_contact() {
    for role in ContactRole::ALL.iter().copied() {
        given(active())
            .when(Command::ChangeKeyContact(ChangeKeyContact {
                role,
                previous_contact: Some(" John ".into()),
                new_contact: " Jane ".into(),
            }))
            .then_event(Event::KeyContactChanged(KeyContactChanged {
                role,
                previous_contact: Some("John".into()),
                new_contact: "Jane".into(),
            }));
    }
    assert_eq!(ContactRole::ALL.len(), 7);
}

#[test]
fn change_key_contact_refusals() {
    let err = given(active())
        .when(Command::ChangeKeyContact(ChangeKeyContact {
            new_contact: " ".into(),
            ..key_contact()
        }))
        .then_refused("empty_field");
    assert_eq!(
        err,
        DomainError::EmptyField {
            field: "new_contact"
        }
    );
    given(active())
        .when(Command::ChangeKeyContact(ChangeKeyContact {
            new_contact: chars(MAX_TEXT_LEN + 1),
            ..key_contact()
        }))
        .then_refused("field_too_long");
    let err = given(active())
        .when(Command::ChangeKeyContact(ChangeKeyContact {
            previous_contact: Some(chars(MAX_TEXT_LEN + 1)),
            ..key_contact()
        }))
        .then_refused("field_too_long");
    assert_eq!(
        err,
        DomainError::FieldTooLong {
            field: "previous_contact",
            max: MAX_TEXT_LEN
        }
    );
    given(nothing())
        .when(Command::ChangeKeyContact(key_contact()))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::ChangeKeyContact(key_contact()))
        .then_refused("customer_churned");
}

#[test]
fn flag_inactivity() {
    given(active())
        .when(Command::FlagInactivity(FlagInactivity {
            days_inactive: 30,
            last_activity_on: Some(date!(2025 - 05 - 02)),
        }))
        .then_event(Event::InactivityFlagged(InactivityFlagged {
            days_inactive: 30,
            last_activity_on: Some(date!(2025 - 05 - 02)),
        }));
    given(active())
        .when(Command::FlagInactivity(inactivity(1)))
        .then_event(Event::InactivityFlagged(InactivityFlagged {
            days_inactive: 1,
            last_activity_on: None,
        }));
    let err = given(active())
        .when(Command::FlagInactivity(inactivity(0)))
        .then_refused("out_of_range");
    assert!(matches!(
        err,
        DomainError::OutOfRange {
            field: "days_inactive",
            ..
        }
    ));
    // Activity recorded after the flag's last activity: the flag was decided on views that
    // had not seen it (the scheduler reads views), and is refused.
    let active_on = |day: Date| {
        let mut events = active();
        events.push(Event::ActivityRecorded(ActivityRecorded {
            day,
            logins: 3,
            active_users: None,
        }));
        events
    };
    let err = given(active_on(date!(2025 - 05 - 20)))
        .when(Command::FlagInactivity(FlagInactivity {
            days_inactive: 30,
            last_activity_on: Some(date!(2025 - 05 - 02)),
        }))
        .then_refused("recently_active");
    assert_eq!(
        err,
        DomainError::RecentlyActive {
            day: date!(2025 - 05 - 20)
        }
    );
    // Without a last activity day, the flag covers `days_inactive` days before its time
    // (AT is 2025-06-01): 45 days reach back to 2025-04-17.
    given(active_on(date!(2025 - 05 - 20)))
        .when(Command::FlagInactivity(inactivity(45)))
        .then_refused("recently_active");
    given(active_on(date!(2025 - 04 - 10)))
        .when(Command::FlagInactivity(inactivity(45)))
        .then_accepted();
    // A back-filled flag, its period long before the activity already recorded: accepted.
    given(active_on(date!(2025 - 05 - 20)))
        .at(datetime!(2025-03-01 09:00 UTC))
        .when(Command::FlagInactivity(FlagInactivity {
            days_inactive: 30,
            last_activity_on: Some(date!(2025 - 01 - 30)),
        }))
        .then_accepted();
    given(active_on(date!(2025 - 05 - 02)))
        .when(Command::FlagInactivity(FlagInactivity {
            days_inactive: 30,
            last_activity_on: Some(date!(2025 - 05 - 02)),
        }))
        .then_accepted();
    // A flag must agree with its own dates (AT is 2025-06-01): a last activity after its
    // day would keep it standing until then, whatever activity came; more days than have
    // passed since the last activity say nothing true.
    for (days_inactive, last, field) in [
        (30, date!(2030 - 01 - 01), "last_activity_on"),
        (1, date!(2025 - 06 - 02), "last_activity_on"),
        (30, date!(2025 - 05 - 31), "days_inactive"),
        (31, date!(2025 - 05 - 02), "days_inactive"),
    ] {
        let err = given(active())
            .when(Command::FlagInactivity(FlagInactivity {
                days_inactive,
                last_activity_on: Some(last),
            }))
            .then_refused("out_of_range");
        assert!(
            matches!(err, DomainError::OutOfRange { field: f, .. } if f == field),
            "{days_inactive} days since {last}: {err:?}"
        );
    }
    // As many days as have passed: accepted.
    given(active())
        .when(Command::FlagInactivity(FlagInactivity {
            days_inactive: 1,
            last_activity_on: Some(date!(2025 - 05 - 31)),
        }))
        .then_accepted();
    given(nothing())
        .when(Command::FlagInactivity(inactivity(30)))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::FlagInactivity(inactivity(30)))
        .then_refused("customer_churned");
}

// ---------------------------------------------------------------------------------------
// mark_renewal_due

#[test]
fn mark_renewal_due_inside_the_notice_window() {
    // c1 ends 2025-12-31 with 90 days' notice: the window opens on 2025-10-02.
    let state = given(active())
        .at(datetime!(2025-10-02 00:00 UTC))
        .when(Command::MarkRenewalDue(mark_due(
            "c1",
            date!(2025 - 12 - 31),
        )))
        .then_event(Event::RenewalMarkedDue(RenewalMarkedDue {
            contract_id: "c1".into(),
            term_ends_on: date!(2025 - 12 - 31),
            notice_days: 90,
        }));
    assert_eq!(
        state.contracts["c1"].renewal_due_for,
        Some(date!(2025 - 12 - 31))
    );
    // Late in the window is fine too (the scheduler may catch up after an outage), up to
    // the term's last day; after it the contract has lapsed (next test).
    given(active())
        .at(datetime!(2025-12-31 12:00 UTC))
        .when(Command::MarkRenewalDue(mark_due(
            "c1",
            date!(2025 - 12 - 31),
        )))
        .then_accepted();
}

/// `mark_renewal_due` for `c1`'s term ending 2025-12-31.
fn mark_c1_due() -> Command {
    Command::MarkRenewalDue(mark_due("c1", date!(2025 - 12 - 31)))
}

#[test]
fn mark_renewal_due_outside_the_window_is_refused() {
    // c1 ends 2025-12-31 with 90 days' notice: refused the second before the window opens
    // (2025-10-02) and from the day after the term's last day.
    for at in [
        datetime!(2025-10-01 23:59:59 UTC),
        datetime!(2026-01-01 00:00 UTC),
    ] {
        let err = given(active())
            .at(at)
            .when(mark_c1_due())
            .then_refused("renewal_not_due");
        assert_eq!(
            err,
            DomainError::RenewalNotDue {
                contract_id: "c1".into()
            }
        );
    }
    // The window's last day is the term's last day.
    given(active())
        .at(datetime!(2025-12-31 23:59:59 UTC))
        .when(mark_c1_due())
        .then_accepted();
    // The window follows the contract's own notice period.
    let short_notice = Event::ContractSigned(ContractSigned {
        notice_days: 30,
        ..signed_fields("c1")
    });
    given(vec![registered(), short_notice.clone()])
        .at(datetime!(2025-11-30 12:00 UTC))
        .when(mark_c1_due())
        .then_refused("renewal_not_due");
    given(vec![registered(), short_notice])
        .at(datetime!(2025-12-01 12:00 UTC))
        .when(mark_c1_due())
        .then_event(Event::RenewalMarkedDue(RenewalMarkedDue {
            contract_id: "c1".into(),
            term_ends_on: date!(2025 - 12 - 31),
            notice_days: 30,
        }));
}

#[test]
fn mark_renewal_due_once_per_term() {
    let marked = vec![
        registered(),
        signed("c1"),
        renewal_marked("c1", date!(2025 - 12 - 31)),
    ];
    let err = given(marked.clone())
        .at(RENEWAL_WINDOW_AT)
        .when(Command::MarkRenewalDue(mark_due(
            "c1",
            date!(2025 - 12 - 31),
        )))
        .then_refused("renewal_already_marked");
    assert_eq!(
        err,
        DomainError::RenewalAlreadyMarked {
            contract_id: "c1".into()
        }
    );
    // After a renewal the new term can be marked, once its window opens.
    let mut renewed_events = marked;
    renewed_events.push(renewed("c1", date!(2025 - 12 - 31), date!(2026 - 12 - 31)));
    given(renewed_events.clone())
        .at(datetime!(2026-10-01 12:00 UTC))
        .when(Command::MarkRenewalDue(mark_due(
            "c1",
            date!(2026 - 12 - 31),
        )))
        .then_refused("renewal_not_due");
    let state = given(renewed_events)
        .at(datetime!(2026-10-02 12:00 UTC))
        .when(Command::MarkRenewalDue(mark_due(
            "c1",
            date!(2026 - 12 - 31),
        )))
        .then_event(Event::RenewalMarkedDue(RenewalMarkedDue {
            contract_id: "c1".into(),
            term_ends_on: date!(2026 - 12 - 31),
            notice_days: 90,
        }));
    assert_eq!(
        state.contracts["c1"].renewal_due_for,
        Some(date!(2026 - 12 - 31))
    );
}

#[test]
fn mark_renewal_due_must_name_the_current_term() {
    let err = given(active())
        .at(RENEWAL_WINDOW_AT)
        .when(Command::MarkRenewalDue(mark_due(
            "c1",
            date!(2025 - 12 - 30),
        )))
        .then_refused("term_mismatch");
    assert_eq!(
        err,
        DomainError::TermMismatch {
            contract_id: "c1".into()
        }
    );
    // A stale reminder for the old term after a renewal.
    given(vec![
        registered(),
        signed("c1"),
        renewed("c1", date!(2025 - 12 - 31), date!(2026 - 12 - 31)),
    ])
    .at(RENEWAL_WINDOW_AT)
    .when(Command::MarkRenewalDue(mark_due(
        "c1",
        date!(2025 - 12 - 31),
    )))
    .then_refused("term_mismatch");
}

#[test]
fn mark_renewal_due_needs_an_active_contract() {
    given(active())
        .at(RENEWAL_WINDOW_AT)
        .when(Command::MarkRenewalDue(mark_due(
            "c7",
            date!(2025 - 12 - 31),
        )))
        .then_refused("contract_not_found");
    given(one_terminated())
        .at(RENEWAL_WINDOW_AT)
        .when(Command::MarkRenewalDue(mark_due(
            "c1",
            date!(2025 - 12 - 31),
        )))
        .then_refused("contract_not_active");
    given(nothing())
        .at(RENEWAL_WINDOW_AT)
        .when(Command::MarkRenewalDue(mark_due(
            "c1",
            date!(2025 - 12 - 31),
        )))
        .then_refused("customer_not_registered");
    given(churned())
        .at(RENEWAL_WINDOW_AT)
        .when(Command::MarkRenewalDue(mark_due(
            "c1",
            date!(2025 - 12 - 31),
        )))
        .then_refused("customer_churned");
}

#[test]
fn mark_renewal_due_near_the_smallest_date_is_decided_not_a_panic() {
    // Both commands come straight off the wire, and sign_contract is accepted.
    let sign: Command = serde_json::from_value(serde_json::json!({
        "type": "sign_contract", "contract_id": "c1", "value_minor": 100, "currency": "EUR",
        "starts_on": "-9999-01-01", "ends_on": "-9999-01-02"
    }))
    .expect("sign_contract parses");
    let mark: Command = serde_json::from_value(serde_json::json!({
        "type": "mark_renewal_due", "contract_id": "c1", "term_ends_on": "-9999-01-02"
    }))
    .expect("mark_renewal_due parses");
    let signed = given(prospect()).when(sign).then_accepted();
    let mut events = prospect();
    events.push(signed);
    let state = given(events).state().clone();
    let at_the_end = datetime!(-9999-01-02 12:00 UTC);
    let outcome =
        std::panic::catch_unwind(|| crm_domain::decide(&state, &mark, at_the_end, at_the_end))
            .expect("decide must not panic");
    // The notice window opened before the smallest date there is, so the renewal is due.
    assert!(outcome.is_ok(), "{outcome:?}");
    // In 2025 the term is long over.
    let outcome = std::panic::catch_unwind(|| crm_domain::decide(&state, &mark, AT, NOW))
        .expect("decide must not panic");
    assert_eq!(
        outcome.map_err(|e| e.code()),
        Err("renewal_not_due"),
        "{state:?}"
    );
}

// ---------------------------------------------------------------------------------------
// renew_contract / expand_contract

#[test]
fn renew_contract() {
    let state = given(active())
        .when(Command::RenewContract(RenewContract {
            value_minor: Some(2_000),
            ..renew("c1", date!(2026 - 12 - 31))
        }))
        .then_event(Event::ContractRenewed(ContractRenewed {
            contract_id: "c1".into(),
            previous_ends_on: date!(2025 - 12 - 31),
            new_ends_on: date!(2026 - 12 - 31),
            value_minor: Some(2_000),
        }));
    assert_eq!(state.contracts["c1"].ends_on, date!(2026 - 12 - 31));
    assert_eq!(state.contracts["c1"].value_minor, 2_000);
    let state = given(active())
        .when(Command::RenewContract(renew("c1", date!(2026 - 01 - 01))))
        .then_event(Event::ContractRenewed(ContractRenewed {
            contract_id: "c1".into(),
            previous_ends_on: date!(2025 - 12 - 31),
            new_ends_on: date!(2026 - 01 - 01),
            value_minor: None,
        }));
    assert_eq!(
        state.contracts["c1"].value_minor, 1_000,
        "no new value keeps the old"
    );
}

#[test]
fn renew_contract_refusals() {
    for new_ends_on in [date!(2025 - 12 - 31), date!(2025 - 06 - 30)] {
        given(active())
            .when(Command::RenewContract(renew("c1", new_ends_on)))
            .then_refused("invalid_dates");
    }
    for value in [0, -1] {
        let err = given(active())
            .when(Command::RenewContract(RenewContract {
                value_minor: Some(value),
                ..renew("c1", date!(2026 - 12 - 31))
            }))
            .then_refused("invalid_amount");
        assert_eq!(
            err,
            DomainError::InvalidAmount {
                field: "value_minor"
            }
        );
    }
    given(active())
        .when(Command::RenewContract(renew("c7", date!(2026 - 12 - 31))))
        .then_refused("contract_not_found");
    given(one_terminated())
        .when(Command::RenewContract(renew("c1", date!(2026 - 12 - 31))))
        .then_refused("contract_not_active");
    given(nothing())
        .when(Command::RenewContract(renew("c1", date!(2026 - 12 - 31))))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::RenewContract(renew("c1", date!(2026 - 12 - 31))))
        .then_refused("customer_churned");
}

#[test]
fn expand_contract() {
    for kind in ExpansionKind::ALL.iter().copied() {
        let state = given(active())
            .when(Command::ExpandContract(ExpandContract {
                kind,
                ..expand("c1", 250)
            }))
            .then_event(Event::ContractExpanded(ContractExpanded {
                contract_id: "c1".into(),
                kind,
                added_value_minor: 250,
            }));
        assert_eq!(state.contracts["c1"].value_minor, 1_250);
    }
}

#[test]
fn expand_contract_value_saturates_instead_of_overflowing() {
    let event = given(active())
        .when(Command::ExpandContract(expand("c1", i64::MAX)))
        .then_accepted();
    let state = given(active()).state().clone().apply(&event);
    assert_eq!(state.contracts["c1"].value_minor, i64::MAX);
}

#[test]
fn expand_contract_refusals() {
    for added in [0, -10] {
        let err = given(active())
            .when(Command::ExpandContract(expand("c1", added)))
            .then_refused("invalid_amount");
        assert_eq!(
            err,
            DomainError::InvalidAmount {
                field: "added_value_minor"
            }
        );
    }
    given(active())
        .when(Command::ExpandContract(expand("c7", 10)))
        .then_refused("contract_not_found");
    given(one_terminated())
        .when(Command::ExpandContract(expand("c1", 10)))
        .then_refused("contract_not_active");
    given(nothing())
        .when(Command::ExpandContract(expand("c1", 10)))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::ExpandContract(expand("c1", 10)))
        .then_refused("customer_churned");
}

// ---------------------------------------------------------------------------------------
// terminate_contract

#[test]
fn terminate_the_last_active_contract_churns_the_customer() {
    let state = given(active())
        .when(Command::TerminateContract(TerminateContract {
            contract_id: "c1".into(),
            reason: Some("  budget cut ".into()),
            term_ends_on: None,
        }))
        .then_event(Event::ContractTerminated(ContractTerminated {
            contract_id: "c1".into(),
            reason: Some("budget cut".into()),
            churned: true,
            lapsed: false,
        }));
    assert!(state.churned);
    assert!(!state.has_active_contract());
    assert!(state.contracts["c1"].terminated);
    // One contract terminated earlier, the other now: the last one churns.
    given(one_terminated())
        .when(Command::TerminateContract(terminate("c2")))
        .then_event(Event::ContractTerminated(ContractTerminated {
            contract_id: "c2".into(),
            reason: None,
            churned: true,
            lapsed: false,
        }));
}

#[test]
fn terminate_a_contract_while_another_is_active_does_not_churn() {
    let state = given(vec![registered(), signed("c1"), signed("c2")])
        .when(Command::TerminateContract(terminate("c1")))
        .then_event(Event::ContractTerminated(ContractTerminated {
            contract_id: "c1".into(),
            reason: None,
            churned: false,
            lapsed: false,
        }));
    assert!(!state.churned);
    assert!(state.contracts["c1"].terminated);
    assert!(state.contracts["c2"].is_active());
}

/// A termination on a day after the term's end, with no renewal, records a lapse; on or
/// before the last day of the term it is an early end. Naming the term guards against a
/// renewal that came in meanwhile (the scheduler's lapse pass relies on it).
#[test]
fn a_contract_ended_after_its_term_is_recorded_as_lapsed_and_the_term_guards_it() {
    let after_term = datetime!(2026-01-01 00:00 UTC);
    let state = given(active())
        .at(after_term)
        .when(Command::TerminateContract(TerminateContract {
            term_ends_on: Some(date!(2025 - 12 - 31)),
            reason: Some("lapsed".into()),
            ..terminate("c1")
        }))
        .then_event(Event::ContractTerminated(ContractTerminated {
            contract_id: "c1".into(),
            reason: Some("lapsed".into()),
            churned: true,
            lapsed: true,
        }));
    assert!(state.churned);
    // On the term's last day it is still an early end, named term or not.
    given(active())
        .at(datetime!(2025-12-31 23:59 UTC))
        .when(Command::TerminateContract(TerminateContract {
            term_ends_on: Some(date!(2025 - 12 - 31)),
            ..terminate("c1")
        }))
        .then_event(terminated_event("c1", true, false));
    // Renewed since the term was read: the named term is not the current one.
    let renewed = {
        let mut e = active();
        e.push(Event::ContractRenewed(ContractRenewed {
            contract_id: "c1".into(),
            previous_ends_on: date!(2025 - 12 - 31),
            new_ends_on: date!(2026 - 12 - 31),
            value_minor: None,
        }));
        e
    };
    given(renewed.clone())
        .at(after_term)
        .when(Command::TerminateContract(TerminateContract {
            term_ends_on: Some(date!(2025 - 12 - 31)),
            ..terminate("c1")
        }))
        .then_refused("term_mismatch");
    // Without a term, the renewed contract ends early.
    given(renewed)
        .at(after_term)
        .when(Command::TerminateContract(terminate("c1")))
        .then_event(terminated_event("c1", true, false));
}

fn terminated_event(id: &str, churned: bool, lapsed: bool) -> Event {
    Event::ContractTerminated(ContractTerminated {
        contract_id: id.into(),
        reason: None,
        churned,
        lapsed,
    })
}

#[test]
fn terminate_contract_refusals() {
    given(active())
        .when(Command::TerminateContract(terminate("c7")))
        .then_refused("contract_not_found");
    given(one_terminated())
        .when(Command::TerminateContract(terminate("c1")))
        .then_refused("contract_not_active");
    let err = given(active())
        .when(Command::TerminateContract(TerminateContract {
            reason: Some(chars(MAX_TEXT_LEN + 1)),
            ..terminate("c1")
        }))
        .then_refused("field_too_long");
    assert_eq!(
        err,
        DomainError::FieldTooLong {
            field: "reason",
            max: MAX_TEXT_LEN
        }
    );
    given(nothing())
        .when(Command::TerminateContract(terminate("c1")))
        .then_refused("customer_not_registered");
    given(churned())
        .when(Command::TerminateContract(terminate("c1")))
        .then_refused("customer_churned");
}

// ---------------------------------------------------------------------------------------
// Error codes.

#[test]
fn every_refusal_has_a_distinct_stable_code() {
    let all = [
        DomainError::CustomerNotRegistered,
        DomainError::CustomerAlreadyRegistered,
        DomainError::CustomerChurned,
        DomainError::ContractAlreadyExists("c".into()),
        DomainError::ContractNotFound("c".into()),
        DomainError::ContractNotActive("c".into()),
        DomainError::ComplaintAlreadyExists("k".into()),
        DomainError::ComplaintNotFound("k".into()),
        DomainError::ComplaintNotOpen("k".into()),
        DomainError::DuplicateOrder("o".into()),
        DomainError::InvalidAmount { field: "f" },
        DomainError::InvalidCurrency("x".into()),
        DomainError::InvalidDates("d"),
        DomainError::DeliveryLate,
        DomainError::OutOfRange {
            field: "f",
            detail: "d",
        },
        DomainError::EmptyField { field: "f" },
        DomainError::FieldTooLong { field: "f", max: 1 },
        DomainError::RenewalNotDue {
            contract_id: "c".into(),
        },
        DomainError::RenewalAlreadyMarked {
            contract_id: "c".into(),
        },
        DomainError::TermMismatch {
            contract_id: "c".into(),
        },
        DomainError::OccurredInFuture,
    ];
    let codes: Vec<&str> = all.iter().map(DomainError::code).collect();
    assert_eq!(
        codes,
        [
            "customer_not_registered",
            "customer_already_registered",
            "customer_churned",
            "contract_already_exists",
            "contract_not_found",
            "contract_not_active",
            "complaint_already_exists",
            "complaint_not_found",
            "complaint_not_open",
            "duplicate_order",
            "invalid_amount",
            "invalid_currency",
            "invalid_dates",
            "delivery_late",
            "out_of_range",
            "empty_field",
            "field_too_long",
            "renewal_not_due",
            "renewal_already_marked",
            "term_mismatch",
            "occurred_in_future",
        ]
    );
    let distinct: std::collections::BTreeSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), codes.len());
    for err in &all {
        let message = err.to_string();
        assert!(!message.is_empty());
        assert!(
            message.chars().next().is_some_and(|c| !c.is_uppercase()),
            "messages are lowercase: {message}"
        );
    }
    assert_eq!(
        DomainError::ContractNotFound("c7".into()).to_string(),
        "contract c7 not found"
    );
    assert_eq!(
        DomainError::FieldTooLong {
            field: "name",
            max: 2_000
        }
        .to_string(),
        "name is longer than 2000 characters"
    );
}
