//! Property tests of the fold: any sequence of commands, over small id pools so contracts,
//! complaints and orders collide often, keeps the aggregate's invariants; replaying the
//! accepted events reproduces the state, and the lifecycle view agrees with it.

use std::collections::BTreeSet;

use crate::harness::policy;
use crm_domain::aggregate::Customer;
use crm_domain::command::*;
use crm_domain::lifecycle::{Lifecycle, Stage, Transition};
use crm_domain::types::*;
use crm_domain::{Command, CustomerState, Event, decide};
use eventually_core::aggregate::AggregateExt;
use proptest::prelude::*;
use proptest::sample::select;
use time::macros::{date, datetime};
use time::{Date, Duration, OffsetDateTime};

/// Every code `decide` may refuse with.
const CODES: &[&str] = &[
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
    "service_already_delivered",
    "request_already_responded",
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
    "recently_active",
];

const FIRST_DAY: OffsetDateTime = datetime!(2024-06-01 09:00 UTC);

// ---------------------------------------------------------------------------------------
// Strategies.

fn s(v: &'static str) -> String {
    v.to_owned()
}

fn contract_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec!["c1", "c2", "c3"]).prop_map(s),
        1 => select(vec!["", " ", " c1 "]).prop_map(s),
    ]
}

fn complaint_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec!["k1", "k2"]).prop_map(s),
        1 => Just(String::new()),
    ]
}

fn order_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec!["o1", "o2", "o3"]).prop_map(s),
        1 => select(vec!["", " o1"]).prop_map(s),
    ]
}

/// Contract start dates.
fn start() -> impl Strategy<Value = Date> {
    select(vec![
        date!(2024 - 01 - 01),
        date!(2025 - 01 - 01),
        date!(2025 - 07 - 01),
    ])
}

/// Contract end dates: a small pool with one favourite, so `mark_renewal_due` often names
/// the current term (and names it twice).
fn end() -> impl Strategy<Value = Date> {
    prop_oneof![
        3 => Just(date!(2025 - 12 - 31)),
        2 => select(vec![
            date!(2025 - 01 - 01),
            date!(2025 - 06 - 30),
            date!(2026 - 06 - 30),
            date!(2026 - 12 - 31),
            date!(2027 - 12 - 31),
        ]),
    ]
}

fn day() -> impl Strategy<Value = Date> {
    (0i64..900).prop_map(|d| date!(2024 - 01 - 01) + Duration::days(d))
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        1 => -2i64..=0,
        8 => 1i64..100_000,
        1 => Just(i64::MAX),
    ]
}

fn currency() -> impl Strategy<Value = String> {
    prop_oneof![8 => Just(s("EUR")), 1 => Just(s("USD")), 1 => Just(s("eur"))]
}

fn note() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some(s("   "))),
        3 => Just(Some(s(" a note "))),
        1 => Just(Some("x".repeat(2_001))),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => select(vec!["Acme", " "]).prop_map(|name| Command::RegisterCustomer(RegisterCustomer {
            name: name.into(), segment: None, region: None, account_manager: None,
            acquisition_channel: None,
        })),
        6 => (contract_id(), amount(), currency(), start(), end(),
              prop::option::weighted(0.3, prop_oneof![0u32..400, Just(3_651)]))
            .prop_map(|(contract_id, value_minor, currency, starts_on, ends_on, notice_days)| {
                Command::SignContract(SignContract {
                    contract_id, value_minor, currency, starts_on, ends_on, notice_days,
                })
            }),
        2 => (contract_id(), select(vec!["s1", " "]), day(), -3i64..3, any::<Option<bool>>())
            .prop_map(|(contract_id, service, promised_on, early, exceeded_expectations)| {
                Command::DeliverService(DeliverService {
                    contract_id, service_id: service.into(), promised_on,
                    delivered_on: promised_on - Duration::days(early), exceeded_expectations,
                })
            }),
        2 => (contract_id(), day(), prop_oneof![0u32..20, Just(3_651)], note())
            .prop_map(|(contract_id, promised_on, days_late, reason)| {
                Command::DelayService(DelayService {
                    contract_id, service_id: s("s1"), promised_on, days_late, reason,
                })
            }),
        1 => (select(vec!["r1", ""]), 100u32..140).prop_map(|(r, response_minutes)| {
            Command::RespondToRequest(RespondToRequest { request_id: r.into(), response_minutes })
        }),
        3 => (complaint_id(), select(Severity::ALL.to_vec()), note())
            .prop_map(|(complaint_id, severity, topic)| {
                Command::LogComplaint(LogComplaint { complaint_id, severity, topic })
            }),
        3 => (complaint_id(), 0u32..100).prop_map(|(complaint_id, resolution_hours)| {
            Command::ResolveComplaint(ResolveComplaint { complaint_id, resolution_hours })
        }),
        1 => (select(ValueAddKind::ALL.to_vec()), note())
            .prop_map(|(kind, note)| Command::DeliverValueAdd(DeliverValueAdd { kind, note })),
        1 => (select(CareTouchKind::ALL.to_vec()), note())
            .prop_map(|(kind, note)| Command::RecordCareTouch(RecordCareTouch { kind, note })),
        1 => (select(SurveyKind::ALL.to_vec()), 0u8..12, note())
            .prop_map(|(kind, score, comment)| {
                Command::RecordSurvey(RecordSurvey { kind, score, comment })
            }),
        3 => (order_id(), amount(), currency(), day())
            .prop_map(|(order_id, amount_minor, currency, ordered_on)| {
                Command::RecordPurchase(RecordPurchase { order_id, amount_minor, currency, ordered_on })
            }),
        2 => (day(), 0u32..50, any::<Option<u32>>()).prop_map(|(day, logins, active_users)| {
            Command::RecordActivity(RecordActivity { day, logins, active_users })
        }),
        1 => (select(ContactRole::ALL.to_vec()), note(), select(vec!["Jane", " "]))
            .prop_map(|(role, previous_contact, new)| {
                Command::ChangeKeyContact(ChangeKeyContact {
                    role, previous_contact, new_contact: new.into(),
                })
            }),
        4 => (contract_id(), end()).prop_map(|(contract_id, term_ends_on)| {
            Command::MarkRenewalDue(MarkRenewalDue { contract_id, term_ends_on })
        }),
        4 => (contract_id(), end(), prop::option::of(amount()))
            .prop_map(|(contract_id, new_ends_on, value_minor)| {
                Command::RenewContract(RenewContract { contract_id, new_ends_on, value_minor })
            }),
        3 => (contract_id(), select(ExpansionKind::ALL.to_vec()), amount())
            .prop_map(|(contract_id, kind, added_value_minor)| {
                Command::ExpandContract(ExpandContract { contract_id, kind, added_value_minor })
            }),
        2 => (contract_id(), note(), prop::option::of(day())).prop_map(|(contract_id, reason, term_ends_on)| {
            Command::TerminateContract(TerminateContract { contract_id, reason, term_ends_on })
        }),
        2 => (0u32..60, prop::option::of(day())).prop_map(|(days_inactive, last_activity_on)| {
            Command::FlagInactivity(FlagInactivity { days_inactive, last_activity_on })
        }),
        2 => (select(InterventionAction::ALL.to_vec()), note(),
              prop::option::weighted(0.5, select(vec!["a1", " "])))
            .prop_map(|(action, note, alert)| {
                Command::LogIntervention(LogIntervention {
                    action, note, alert_id: alert.map(str::to_owned),
                })
            }),
    ]
}

/// A command with its business time (days after [`FIRST_DAY`]) and whether the sending
/// service's clock runs ahead of the recorder's by more than the skew.
#[derive(Debug, Clone)]
struct Step {
    command: Command,
    day: i64,
    ahead: bool,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step =
        (command(), 0i64..1_000, prop::bool::weighted(0.05)).prop_map(|(command, day, ahead)| {
            Step {
                command,
                day,
                ahead,
            }
        });
    // Most histories start with a registration, so most commands get past that rule.
    (
        prop::bool::weighted(0.9),
        prop::collection::vec(step, 0..60),
    )
        .prop_map(|(register, mut steps)| {
            if register {
                steps.insert(
                    0,
                    Step {
                        command: Command::RegisterCustomer(RegisterCustomer {
                            name: s("Acme"),
                            segment: None,
                            region: None,
                            account_manager: None,
                            acquisition_channel: None,
                        }),
                        day: 0,
                        ahead: false,
                    },
                );
            }
            steps
        })
}

// ---------------------------------------------------------------------------------------
// Running a history.

/// One accepted command: its event, business time and the state right after it.
struct Accepted {
    event: Event,
    at: OffsetDateTime,
    after: CustomerState,
}

struct Run {
    state: CustomerState,
    accepted: Vec<Accepted>,
    refused: Vec<&'static str>,
}

fn run(steps: &[Step]) -> Result<Run, TestCaseError> {
    let mut state = CustomerState::default();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for step in steps {
        let at = FIRST_DAY + Duration::days(step.day);
        let now = if step.ahead {
            at - Duration::minutes(6)
        } else {
            at + Duration::seconds(1)
        };
        let before = state.clone();
        match decide(&state, &step.command, at, now) {
            Ok(event) => {
                prop_assert!(!step.ahead, "a command from the future was accepted");
                prop_assert_eq!(event.event_type(), step.command.event_type());
                state = state.apply(&event);
                prop_assert_eq!(state.version, before.version + 1);
                accepted.push(Accepted {
                    event,
                    at,
                    after: state.clone(),
                });
            }
            Err(err) => {
                prop_assert!(CODES.contains(&err.code()), "unknown code {}", err.code());
                prop_assert!(!err.to_string().is_empty());
                if step.ahead {
                    prop_assert_eq!(err.code(), "occurred_in_future");
                }
                prop_assert_eq!(&state, &before, "a refusal changed the state");
                refused.push(err.code());
            }
        }
    }
    Ok(Run {
        state,
        accepted,
        refused,
    })
}

/// The invariants the aggregate keeps after every accepted command.
fn check_state(state: &CustomerState) -> Result<(), TestCaseError> {
    if state.version > 0 {
        prop_assert!(state.registered, "only a registration can come first");
    }
    prop_assert_eq!(
        state.churned,
        !state.contracts.is_empty() && !state.has_active_contract(),
        "churned exactly when every contract is terminated"
    );
    if state.won_back {
        prop_assert!(!state.contracts.is_empty());
    }
    for (id, c) in &state.contracts {
        prop_assert!(
            !id.is_empty() && id.trim() == id,
            "stored ids are trimmed: {id:?}"
        );
        prop_assert!(c.value_minor > 0, "{id}: {c:?}");
        prop_assert!(c.ends_on > c.starts_on, "{id}: {c:?}");
        prop_assert!(c.currency.len() == 3, "{id}: {c:?}");
        prop_assert!(c.notice_days <= 3_650, "{id}: {c:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn accepted_commands_give_contiguous_versions_and_replay_to_the_same_state(
        steps in steps()
    ) {
        let Run { state, accepted, .. } = run(&steps)?;
        let versions: Vec<u64> = accepted.iter().map(|a| a.after.version).collect();
        let expected: Vec<u64> = (1..=accepted.len() as u64).collect();
        prop_assert_eq!(versions, expected);
        prop_assert_eq!(state.version, accepted.len() as u64);
        for a in &accepted {
            check_state(&a.after)?;
        }

        // Replay determinism, by hand and through `eventually`.
        let events: Vec<Event> = accepted.iter().map(|a| a.event.clone()).collect();
        let replayed = events.iter().fold(CustomerState::default(), |s, e| s.apply(e));
        prop_assert_eq!(&replayed, &state);
        let folded = Customer::fold(CustomerState::default(), events.clone().into_iter())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&folded, &state);

        // Replaying the history of commands decides the same events again.
        let again = run(&steps)?;
        let events_again: Vec<Event> = again.accepted.into_iter().map(|a| a.event).collect();
        prop_assert_eq!(&events_again, &events);
    }

    #[test]
    fn accepted_events_and_their_commands_survive_the_wire(steps in steps()) {
        for step in &steps {
            let text = serde_json::to_string(&step.command)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: Command = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(&back, &step.command);
        }
        let Run { state, accepted, .. } = run(&steps)?;
        let mut replayed = CustomerState::default();
        for a in &accepted {
            let text = serde_json::to_string(&a.event)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: Event = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(&back, &a.event);
            replayed = replayed.apply(&back);
        }
        prop_assert_eq!(replayed, state);
    }

    #[test]
    fn the_lifecycle_view_agrees_with_the_aggregate(steps in steps()) {
        let Run { accepted, .. } = run(&steps)?;
        let policy = policy();
        let mut lc = Lifecycle::default();
        let mut transitions: Vec<Transition> = Vec::new();
        let mut signed_any = false;
        let mut latest = None;
        for (i, a) in accepted.iter().enumerate() {
            let version = i as u64 + 1;
            // A change is dated at the latest business time seen, never before one
            // already recorded.
            let learnt = latest.map_or(a.at, |l: OffsetDateTime| l.max(a.at));
            latest = Some(learnt);
            if let Some(t) = lc.apply(&a.event, a.at, version, &policy) {
                prop_assert_eq!(t.version, version);
                prop_assert_eq!(t.at, learnt);
                prop_assert_eq!(t.event_type.as_str(), a.event.event_type());
                prop_assert_eq!(Some(t.to), lc.stage);
                prop_assert_eq!(lc.since, Some(learnt));
                prop_assert_ne!(t.from, Some(t.to));
                transitions.push(t);
            }
            prop_assert_eq!(lc.version, version);

            // Re-delivery of this version, or of an older one, is harmless.
            let before = lc.clone();
            prop_assert_eq!(lc.apply(&a.event, a.at, version, &policy), None);
            prop_assert_eq!(lc.apply(&a.event, a.at, version / 2, &policy), None);
            prop_assert_eq!(&lc, &before);

            let state = &a.after;
            signed_any |= matches!(a.event, Event::ContractSigned(_));
            if signed_any {
                prop_assert_eq!(lc.stage == Some(Stage::Churned), state.churned);
                prop_assert_eq!(lc.won_back, state.won_back);
            } else {
                prop_assert_eq!(lc.stage, Some(Stage::Acquisition));
            }
            let active: BTreeSet<String> = state
                .contracts
                .iter()
                .filter(|(_, c)| c.is_active())
                .map(|(id, _)| id.clone())
                .collect();
            prop_assert_eq!(&lc.active_contracts, &active);
        }

        // Transitions chain: each starts where the previous one ended.
        if let Some(first) = transitions.first() {
            prop_assert_eq!(first.from, None);
            prop_assert_eq!(first.to, Stage::Acquisition);
            prop_assert_eq!(first.version, 1);
        }
        for pair in transitions.windows(2) {
            prop_assert_eq!(pair[1].from, Some(pair[0].to));
            prop_assert!(pair[1].version > pair[0].version);
        }

        // Folding again gives the same view and history.
        let mut again = Lifecycle::default();
        let mut transitions_again = Vec::new();
        for (i, a) in accepted.iter().enumerate() {
            transitions_again.extend(again.apply(&a.event, a.at, i as u64 + 1, &policy));
        }
        prop_assert_eq!(again, lc);
        prop_assert_eq!(transitions_again, transitions);
    }
}

/// The generator is not vacuous: over a few hundred histories every event type is
/// produced and every refusal is met.
#[test]
fn the_histories_reach_every_event_and_every_refusal() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = steps();
    let mut events = BTreeSet::new();
    let mut codes = BTreeSet::new();
    for _ in 0..400 {
        let steps = strategy.new_tree(&mut runner).expect("a history").current();
        let run = run(&steps).expect("the fold holds");
        events.extend(run.accepted.iter().map(|a| a.event.event_type()));
        codes.extend(run.refused);
    }
    let all_events: BTreeSet<_> = Event::TYPES.iter().copied().collect();
    assert_eq!(events, all_events);
    let all_codes: BTreeSet<_> = CODES.iter().copied().collect();
    assert_eq!(codes, all_codes);
}

/// Dates anywhere in `time`'s range, edges included: `decide` must refuse or accept,
/// never panic, whatever dates a client sends.
fn any_date() -> impl Strategy<Value = Date> {
    prop_oneof![
        1 => select(vec![
            Date::MIN,
            Date::MIN.next_day().unwrap_or(Date::MIN),
            Date::MAX,
            date!(0000 - 01 - 01),
        ]),
        3 => (Date::MIN.to_julian_day()..=Date::MAX.to_julian_day())
            .prop_map(|d| Date::from_julian_day(d).unwrap_or(Date::MIN)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decide_never_panics_on_extreme_dates(
        starts_on in any_date(),
        ends_on in any_date(),
        notice_days in prop::option::of(0u32..=3_650),
        new_ends_on in any_date(),
    ) {
        let mut state = CustomerState::default().apply(&Event::CustomerRegistered(
            crm_domain::event::CustomerRegistered {
                name: s("Acme"),
                segment: None,
                region: None,
                account_manager: None,
                acquisition_channel: None,
            },
        ));
        let sign = Command::SignContract(SignContract {
            contract_id: s("c1"),
            value_minor: 1,
            currency: s("EUR"),
            starts_on,
            ends_on,
            notice_days,
        });
        let at = FIRST_DAY;
        let now = at;
        if let Ok(event) = decide(&state, &sign, at, now) {
            state = state.apply(&event);
        }
        for command in [
            Command::MarkRenewalDue(MarkRenewalDue { contract_id: s("c1"), term_ends_on: ends_on }),
            Command::RenewContract(RenewContract {
                contract_id: s("c1"), new_ends_on, value_minor: None,
            }),
            Command::DeliverService(DeliverService {
                contract_id: s("c1"), service_id: s("s1"), promised_on: starts_on,
                delivered_on: ends_on, exceeded_expectations: None,
            }),
            Command::FlagInactivity(FlagInactivity {
                days_inactive: 30, last_activity_on: Some(new_ends_on),
            }),
        ] {
            if let Ok(event) = decide(&state, &command, at, now) {
                state = state.apply(&event);
            }
        }
    }
}
