//! The lifecycle-stage model, walked through with events that `decide` really accepts.

use crm_domain::command::*;
use crm_domain::event::*;
use crm_domain::health::Tier;
use crm_domain::lifecycle::{Lifecycle, Stage, Transition};
use crm_domain::{Command, CustomerState, Event, decide};
use serde_json::json;
use time::macros::{date, datetime};
use time::{Duration, OffsetDateTime};

use crate::harness::*;

/// A customer's state and lifecycle, advanced one accepted command at a time.
#[derive(Default)]
struct Walk {
    state: CustomerState,
    lifecycle: Lifecycle,
    transitions: Vec<Transition>,
}

impl Walk {
    /// Decides `command` at business time `at`, applies the event to both folds and
    /// returns the event and the transition it caused.
    #[track_caller]
    fn step(&mut self, command: Command, at: OffsetDateTime) -> (Event, Option<Transition>) {
        let event = decide(&self.state, &command, at, at + Duration::seconds(1))
            .unwrap_or_else(|e| panic!("{command:?} refused: {} ({e})", e.code()));
        self.state = self.state.clone().apply(&event);
        let transition = self
            .lifecycle
            .apply(&event, at, self.state.version, &policy());
        if let Some(t) = &transition {
            self.transitions.push(t.clone());
        }
        (event, transition)
    }

    /// A customer registered and signed to contract `c1` at `at`: in growth.
    fn signed(at: OffsetDateTime) -> Self {
        let mut w = Walk::default();
        w.step(Command::RegisterCustomer(register("Acme")), at);
        w.step(Command::SignContract(sign("c1")), at);
        w
    }

    fn stage(&self) -> Option<Stage> {
        self.lifecycle.stage
    }
}

fn t(from: Option<Stage>, to: Stage, at: OffsetDateTime, version: u64, ty: &str) -> Transition {
    Transition {
        from,
        to,
        at,
        version,
        event_type: ty.to_owned(),
    }
}

#[test]
fn a_customer_walks_through_every_stage_and_is_won_back() {
    let mut w = Walk::default();
    assert_eq!(w.stage(), None);

    let t1 = datetime!(2025-01-01 09:00 UTC);
    w.step(Command::RegisterCustomer(register("Acme")), t1);
    assert_eq!(w.stage(), Some(Stage::Acquisition));

    let t2 = datetime!(2025-01-10 09:00 UTC);
    w.step(Command::SignContract(sign("c1")), t2);
    assert_eq!(w.stage(), Some(Stage::Growth));

    let t3 = datetime!(2025-02-01 09:00 UTC);
    let (_, none) = w.step(Command::RecordActivity(activity_on(t3.date())), t3);
    assert_eq!(none, None, "activity in growth changes nothing");

    let t4 = datetime!(2025-11-01 09:00 UTC);
    w.step(
        Command::RenewContract(renew("c1", date!(2026 - 12 - 31))),
        t4,
    );
    assert_eq!(w.stage(), Some(Stage::Maturity));

    let t5 = datetime!(2026-02-01 09:00 UTC);
    let (event, _) = w.step(Command::TerminateContract(terminate("c1")), t5);
    assert_eq!(
        event,
        Event::ContractTerminated(ContractTerminated {
            contract_id: "c1".into(),
            reason: None,
            churned: true,
            lapsed: false,
        })
    );
    assert_eq!(w.stage(), Some(Stage::Churned));
    assert!(w.state.churned);
    assert!(!w.lifecycle.won_back);

    let t6 = datetime!(2026-03-01 09:00 UTC);
    let (event, _) = w.step(
        Command::SignContract(SignContract {
            starts_on: date!(2026 - 03 - 01),
            ends_on: date!(2027 - 02 - 28),
            ..sign("c2")
        }),
        t6,
    );
    assert!(matches!(
        event,
        Event::ContractSigned(ContractSigned { win_back: true, .. })
    ));
    assert_eq!(w.stage(), Some(Stage::Growth), "a win-back starts over");
    assert!(w.lifecycle.won_back);
    assert!(w.state.won_back && !w.state.churned);
    assert_eq!(w.lifecycle.relationship_started_at, Some(t6));
    assert!(!w.lifecycle.renewed_or_expanded);

    let t7 = datetime!(2026-04-01 09:00 UTC);
    let (_, none) = w.step(
        Command::FlagInactivity(inactivity(policy().health.no_activity_days - 1)),
        t7,
    );
    assert_eq!(none, None, "29 days are not yet a decline");

    let t8 = datetime!(2026-04-02 09:00 UTC);
    w.step(
        Command::FlagInactivity(inactivity(policy().health.no_activity_days)),
        t8,
    );
    assert_eq!(w.stage(), Some(Stage::Decline));

    let t9 = datetime!(2026-04-03 09:00 UTC);
    w.step(Command::RecordActivity(activity_on(t9.date())), t9);
    assert_eq!(w.stage(), Some(Stage::Growth), "activity ends the decline");

    let t10 = datetime!(2026-05-01 09:00 UTC);
    w.step(Command::ExpandContract(expand("c2", 100)), t10);
    assert_eq!(w.stage(), Some(Stage::Maturity));

    use Stage::*;
    assert_eq!(
        w.transitions,
        vec![
            t(None, Acquisition, t1, 1, "customer_registered"),
            t(Some(Acquisition), Growth, t2, 2, "contract_signed"),
            t(Some(Growth), Maturity, t4, 4, "contract_renewed"),
            t(Some(Maturity), Churned, t5, 5, "contract_terminated"),
            t(Some(Churned), Growth, t6, 6, "contract_signed"),
            t(Some(Growth), Decline, t8, 8, "inactivity_flagged"),
            t(Some(Decline), Growth, t9, 9, "activity_recorded"),
            t(Some(Growth), Maturity, t10, 10, "contract_expanded"),
        ]
    );
    assert_eq!(w.lifecycle.version, 10);
    assert_eq!(w.lifecycle.since, Some(t10));
    assert_eq!(
        w.lifecycle.active_contracts,
        ["c2".to_owned()].into_iter().collect()
    );
}

#[test]
fn events_before_the_first_contract_stay_in_acquisition() {
    let mut w = Walk::default();
    w.step(Command::RegisterCustomer(register("Acme")), AT);
    for command in [
        Command::LogComplaint(log_complaint("k1")),
        Command::FlagInactivity(inactivity(90)),
        Command::RecordActivity(activity()),
        Command::RecordPurchase(purchase("o1")),
        Command::LogIntervention(intervention()),
    ] {
        let (_, transition) = w.step(command, AT);
        assert_eq!(transition, None);
    }
    assert_eq!(w.stage(), Some(Stage::Acquisition));
    assert_eq!(w.transitions.len(), 1);
}

/// "12 months in good health": the relationship's first day a year on, by the calendar
/// (365 days from 1 March 2023 is 29 February 2024, a day short).
#[test]
fn maturity_comes_with_a_year_of_relationship() {
    use crm_domain::calendar::one_year_after;
    assert_eq!(one_year_after(date!(2023 - 03 - 01)), date!(2024 - 03 - 01));
    assert_eq!(one_year_after(date!(2024 - 02 - 29)), date!(2025 - 02 - 28));
    assert_eq!(one_year_after(time::Date::MAX), time::Date::MAX);
    let signed_at = datetime!(2023-03-01 12:00 UTC);
    let mut w = Walk::signed(signed_at);
    let active_on = |day| Command::RecordActivity(RecordActivity { day, ..activity() });
    let (_, none) = w.step(
        active_on(date!(2024 - 02 - 29)),
        datetime!(2024-02-29 23:59 UTC),
    );
    assert_eq!(none, None);
    assert_eq!(w.stage(), Some(Stage::Growth));
    let a_year_on = datetime!(2024-03-01 00:00 UTC);
    let (_, transition) = w.step(active_on(date!(2024 - 03 - 01)), a_year_on);
    assert_eq!(
        transition,
        Some(t(
            Some(Stage::Growth),
            Stage::Maturity,
            a_year_on,
            4,
            "activity_recorded"
        ))
    );
}

/// Business days are UTC days in the folds too, for events stored with their sender's
/// offset (as they were before the command path stored UTC): signed at 00:30 on 1 March
/// 2024 at UTC+2 is 29 February in UTC, so the relationship is a year old on 28 February
/// 2025.
#[test]
fn the_folds_count_utc_days_whatever_offset_an_event_was_stored_with() {
    let signed_at = datetime!(2024-03-01 00:30 +02:00);
    let mut w = Walk::signed(signed_at);
    let (_, transition) = w.step(
        Command::RecordActivity(RecordActivity {
            day: date!(2025 - 02 - 28),
            ..activity()
        }),
        datetime!(2025-02-28 12:00 UTC),
    );
    assert_eq!(
        transition.map(|t| t.to),
        Some(Stage::Maturity),
        "{:?}",
        w.transitions
    );
}

/// A back-filled event (business time before the latest seen) does not take a customer
/// who has come of age back to growth: the stage is judged at the latest business time.
#[test]
fn a_back_filled_event_does_not_move_the_stage_back_in_time() {
    let signed_at = datetime!(2025-01-10 09:00 UTC);
    let mut w = Walk::signed(signed_at);
    w.step(
        Command::RecordActivity(activity()),
        datetime!(2026-02-01 09:00 UTC),
    );
    assert_eq!(w.stage(), Some(Stage::Maturity));
    let (_, none) = w.step(
        Command::DeliverValueAdd(value_add()),
        datetime!(2025-06-01 09:00 UTC),
    );
    assert_eq!(none, None, "a back-filled event made a transition");
    assert_eq!(w.stage(), Some(Stage::Maturity));
    assert_eq!(w.lifecycle.as_of, Some(datetime!(2026-02-01 09:00 UTC)));
}

/// A back-filled event that does change the stage dates the change when it was learnt (the
/// latest business time seen), so the history never runs backwards: maturity on 1 June,
/// then a flag back-dated to 20 May, is decline since 1 June.
#[test]
fn a_back_filled_event_that_changes_the_stage_is_dated_when_learnt() {
    let mut w = Walk::signed(datetime!(2025-01-02 09:00 UTC));
    let june = datetime!(2025-06-01 09:00 UTC);
    w.step(
        Command::RenewContract(renew("c1", date!(2026 - 12 - 31))),
        june,
    );
    assert_eq!(w.stage(), Some(Stage::Maturity));
    let (_, transition) = w.step(
        Command::FlagInactivity(inactivity(45)),
        datetime!(2025-05-20 09:00 UTC),
    );
    let transition = transition.expect("the flag moves the stage");
    assert_eq!((transition.to, transition.at), (Stage::Decline, june));
    assert_eq!(w.lifecycle.since, Some(june));
    let dates: Vec<_> = w.transitions.iter().map(|t| t.at).collect();
    assert!(dates.is_sorted(), "{dates:?}");
}

#[test]
fn inactivity_turns_maturity_into_decline_and_activity_turns_it_back() {
    let mut w = Walk::signed(AT);
    w.step(Command::ExpandContract(expand("c1", 5)), AT);
    assert_eq!(w.stage(), Some(Stage::Maturity));
    w.step(Command::FlagInactivity(inactivity(45)), AT);
    assert_eq!(w.stage(), Some(Stage::Decline));
    // A shorter flag neither deepens nor lifts the decline.
    let (_, none) = w.step(Command::FlagInactivity(inactivity(3)), AT);
    assert_eq!(none, None);
    assert_eq!(w.stage(), Some(Stage::Decline));
    // Activity on a day after the one the flag counted from (the relationship's start).
    let next_day = AT + Duration::days(1);
    w.step(
        Command::RecordActivity(activity_on(next_day.date())),
        next_day,
    );
    assert_eq!(w.stage(), Some(Stage::Maturity));
}

/// Activity recorded for `day`.
fn activity_on(day: time::Date) -> RecordActivity {
    RecordActivity { day, ..activity() }
}

#[test]
fn back_filled_activity_from_before_the_flag_does_not_lift_it() {
    // "No activity for 30 days: an inactivity_flagged event with 30 or more days, not
    // followed by an activity_recorded" (business time throughout).
    let mut w = Walk::signed(datetime!(2025-01-01 09:00 UTC));
    w.step(
        Command::RecordActivity(activity_on(date!(2025 - 01 - 10))),
        datetime!(2025-01-10 18:00 UTC),
    );
    w.step(
        Command::FlagInactivity(FlagInactivity {
            days_inactive: 30,
            last_activity_on: Some(date!(2025 - 01 - 10)),
        }),
        datetime!(2025-02-09 06:00 UTC),
    );
    assert_eq!(w.stage(), Some(Stage::Decline));
    // Analytics back-fills a day before the one the flag counted from: still inactive.
    let (_, none) = w.step(
        Command::RecordActivity(activity_on(date!(2025 - 01 - 05))),
        datetime!(2025-01-05 18:00 UTC),
    );
    assert_eq!(none, None);
    assert_eq!(w.stage(), Some(Stage::Decline));
    assert_eq!(w.lifecycle.health.inactive_days, Some(30));
    // The same day again is not later activity either; the day after is.
    w.step(
        Command::RecordActivity(activity_on(date!(2025 - 01 - 10))),
        datetime!(2025-02-10 08:00 UTC),
    );
    assert_eq!(w.stage(), Some(Stage::Decline));
    w.step(
        Command::RecordActivity(activity_on(date!(2025 - 02 - 10))),
        datetime!(2025-02-10 18:00 UTC),
    );
    assert_eq!(w.stage(), Some(Stage::Growth));
    assert_eq!(w.lifecycle.health.inactive_days, None);
}

#[test]
fn churn_outranks_decline() {
    let mut w = Walk::signed(AT);
    w.step(Command::FlagInactivity(inactivity(60)), AT);
    assert_eq!(w.stage(), Some(Stage::Decline));
    w.step(Command::TerminateContract(terminate("c1")), AT);
    assert_eq!(w.stage(), Some(Stage::Churned));
}

#[test]
fn a_flag_without_a_last_activity_day_claims_its_days_before_it() {
    // Activity on Jan 10; a 30-day flag on Mar 31 claims Mar 1 to Mar 31 without activity.
    let mut w = Walk::signed(datetime!(2025-01-01 09:00 UTC));
    w.step(
        Command::RecordActivity(activity_on(date!(2025 - 01 - 10))),
        datetime!(2025-01-10 18:00 UTC),
    );
    w.step(
        Command::FlagInactivity(inactivity(30)),
        datetime!(2025-03-31 06:00 UTC),
    );
    assert_eq!(w.stage(), Some(Stage::Decline));
    // Feb 15, back-filled, is before what the flag claims: it stands.
    w.step(
        Command::RecordActivity(activity_on(date!(2025 - 02 - 15))),
        datetime!(2025-04-01 08:00 UTC),
    );
    assert_eq!(w.stage(), Some(Stage::Decline));
    // Mar 15 is inside it: the flag was wrong, and is lifted.
    w.step(
        Command::RecordActivity(activity_on(date!(2025 - 03 - 15))),
        datetime!(2025-04-01 09:00 UTC),
    );
    assert_eq!(w.stage(), Some(Stage::Growth));
}

#[test]
fn a_first_contract_back_filled_to_before_a_flag_leaves_the_flag_standing() {
    let mut w = Walk::default();
    w.step(
        Command::RegisterCustomer(register("Prospect")),
        datetime!(2025-01-01 09:00 UTC),
    );
    w.step(
        Command::FlagInactivity(inactivity(59)),
        datetime!(2025-03-01 09:00 UTC),
    );
    assert_eq!(w.stage(), Some(Stage::Acquisition));
    w.step(
        Command::SignContract(sign("c1")),
        datetime!(2025-01-02 09:00 UTC),
    );
    assert_eq!(w.stage(), Some(Stage::Decline));
    assert_eq!(w.lifecycle.health.inactive_days, Some(59));
}

#[test]
fn a_win_back_starts_without_the_old_relationships_inactivity_flag() {
    // A churned customer cannot record activity, so a flag of the old relationship would
    // otherwise put every won-back customer in decline from the day they sign again. The
    // new relationship's inactivity counts from its first contract, as the health view's
    // activity reference does.
    let mut w = Walk::signed(AT);
    w.step(Command::FlagInactivity(inactivity(60)), AT);
    assert_eq!(w.stage(), Some(Stage::Decline));
    let later = AT + Duration::days(30);
    w.step(Command::TerminateContract(terminate("c1")), later);
    assert_eq!(w.stage(), Some(Stage::Churned));
    let won_back_at = AT + Duration::days(300);
    w.step(Command::SignContract(sign("c2")), won_back_at);
    assert_eq!(w.stage(), Some(Stage::Growth));
    assert!(w.lifecycle.won_back);
    assert_eq!(w.lifecycle.health.inactive_days, None);
    assert_eq!(
        w.lifecycle.health.activity_reference(),
        Some(won_back_at.date())
    );
    // A flag raised in the new relationship counts as ever.
    let flag_at = won_back_at + Duration::days(31);
    w.step(Command::FlagInactivity(inactivity(31)), flag_at);
    assert_eq!(w.stage(), Some(Stage::Decline));
}

/// Loyalty ("a year since the first contract") counts from the current relationship: a
/// customer won back yesterday is not loyal for a contract that ended years ago.
#[test]
fn a_win_back_starts_loyalty_for_the_value_tier_again() {
    let large = |id: &str| {
        Command::SignContract(SignContract {
            value_minor: 12_000_000,
            ..sign(id)
        })
    };
    let tier = |w: &Walk| w.lifecycle.health.assess(&policy()).tier;
    let first = datetime!(2021-01-01 09:00 UTC);
    let now = datetime!(2025-06-01 09:00 UTC);

    let mut loyal = Walk::default();
    loyal.step(Command::RegisterCustomer(register("Acme")), first);
    loyal.step(large("c1"), first);
    loyal.step(large("c2"), now);
    assert_eq!(tier(&loyal), Tier::A, "revenue and four years of loyalty");

    let mut won_back = Walk::default();
    won_back.step(Command::RegisterCustomer(register("Acme")), first);
    won_back.step(large("c1"), first);
    won_back.step(
        Command::TerminateContract(terminate("c1")),
        datetime!(2022-01-01 09:00 UTC),
    );
    won_back.step(large("c2"), now);
    assert_eq!(won_back.lifecycle.health.first_contract_at, Some(now));
    assert_eq!(
        tier(&won_back),
        Tier::B,
        "the same revenue, loyal for a day"
    );
}

#[test]
fn terminating_one_of_two_contracts_keeps_the_stage() {
    let mut w = Walk::signed(AT);
    w.step(Command::SignContract(sign("c2")), AT);
    let (_, none) = w.step(Command::TerminateContract(terminate("c1")), AT);
    assert_eq!(none, None);
    assert_eq!(w.stage(), Some(Stage::Growth));
    w.step(Command::TerminateContract(terminate("c2")), AT);
    assert_eq!(w.stage(), Some(Stage::Churned));
}

#[test]
fn redelivered_and_stale_versions_are_ignored() {
    let mut lc = Lifecycle::default();
    assert!(lc.apply(&registered(), AT, 1, &policy()).is_some());
    assert!(lc.apply(&signed("c1"), AT, 2, &policy()).is_some());
    let before = lc.clone();
    // The same version again, an older one, and version 0.
    assert_eq!(lc.apply(&signed("c1"), AT, 2, &policy()), None);
    assert_eq!(lc.apply(&terminated("c1", true), AT, 2, &policy()), None);
    assert_eq!(lc.apply(&terminated("c1", true), AT, 1, &policy()), None);
    assert_eq!(lc.apply(&terminated("c1", true), AT, 0, &policy()), None);
    assert_eq!(lc, before);
    // A gap (a version this customer's projection skipped) is still applied.
    assert!(
        lc.apply(&terminated("c1", true), AT, 5, &policy())
            .is_some()
    );
    assert_eq!(lc.version, 5);
    assert_eq!(lc.stage, Some(Stage::Churned));
}

#[test]
fn stage_names_on_the_wire() {
    let names: Vec<&str> = Stage::ALL.iter().map(Stage::as_str).collect();
    assert_eq!(
        names,
        ["acquisition", "growth", "maturity", "decline", "churned"]
    );
    for stage in Stage::ALL {
        assert_eq!(Stage::parse(stage.as_str()), Some(stage));
        assert_eq!(
            serde_json::to_value(stage).expect("serialises"),
            json!(stage.as_str())
        );
    }
    assert_eq!(Stage::parse("Growth"), None);
    assert_eq!(Stage::parse(""), None);
}

#[test]
fn transitions_and_lifecycles_serialise_with_rfc3339_times() {
    let transition = t(
        Some(Stage::Growth),
        Stage::Maturity,
        datetime!(2025-11-01 09:00 UTC),
        4,
        "contract_renewed",
    );
    let value = serde_json::to_value(&transition).expect("serialises");
    assert_eq!(
        value,
        json!({
            "from": "growth",
            "to": "maturity",
            "at": "2025-11-01T09:00:00Z",
            "version": 4,
            "event_type": "contract_renewed"
        })
    );
    let back: Transition = serde_json::from_value(value).expect("parses");
    assert_eq!(back, transition);

    let w = Walk::signed(AT);
    let text = serde_json::to_string(&w.lifecycle).expect("serialises");
    let back: Lifecycle = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, w.lifecycle);
    let fresh = serde_json::to_value(Lifecycle::default()).expect("serialises");
    assert_eq!(fresh["stage"], json!(null));
    assert_eq!(fresh["since"], json!(null));
}

/// An inactivity flag of `days`, as the scheduler raises it.
fn flagged(days: u32) -> Event {
    Event::InactivityFlagged(InactivityFlagged {
        days_inactive: days,
        last_activity_on: None,
    })
}

/// A purchase of `amount` on `day`, at noon that day.
fn purchase_on(w: &mut Walk, order: &str, day: time::Date, amount: i64) {
    w.step(
        Command::RecordPurchase(RecordPurchase {
            amount_minor: amount,
            ordered_on: day,
            ..purchase(order)
        }),
        day.with_hms(12, 0, 0).unwrap().assume_utc(),
    );
}

#[test]
fn red_health_puts_a_customer_in_decline_until_it_recovers() {
    use crm_domain::health::Color;
    use crm_domain::types::SurveyKind;
    let mut w = Walk::signed(AT);
    w.step(Command::ExpandContract(expand("c1", 5)), AT);
    assert_eq!(w.stage(), Some(Stage::Maturity));

    // A decision-maker change: at least yellow, which is not a decline.
    w.step(Command::ChangeKeyContact(key_contact()), AT);
    assert_eq!(w.lifecycle.color(), Color::Yellow);
    assert_eq!(w.stage(), Some(Stage::Maturity));
    // A major complaint (on record, and trust 10 − 20 below zero) and an NPS detractor:
    // still yellow (100 − 20 − 15 − 10 − 15 = 40).
    w.step(Command::LogComplaint(log_complaint("k1")), AT);
    w.step(Command::RecordSurvey(survey(SurveyKind::Nps, 3)), AT);
    assert_eq!(w.lifecycle.color(), Color::Yellow);
    assert_eq!(w.stage(), Some(Stage::Maturity));
    // A low CSAT takes the score below 40: red is a decline.
    let (_, transition) = w.step(Command::RecordSurvey(survey(SurveyKind::Csat, 1)), AT);
    assert_eq!(w.lifecycle.color(), Color::Red);
    assert_eq!(
        transition,
        Some(t(
            Some(Stage::Maturity),
            Stage::Decline,
            AT,
            7,
            "survey_answered"
        ))
    );
    // A good CSAT lifts it out of red, and the customer is mature again.
    let (_, transition) = w.step(Command::RecordSurvey(survey(SurveyKind::Csat, 5)), AT);
    assert_eq!(w.lifecycle.color(), Color::Yellow);
    assert_eq!(transition.map(|t| t.to), Some(Stage::Maturity));
}

#[test]
fn falling_purchases_put_a_customer_in_decline() {
    let start = datetime!(2025-01-02 09:00 UTC);
    let mut w = Walk::default();
    w.step(Command::RegisterCustomer(register("Acme")), start);
    w.step(
        Command::SignContract(SignContract {
            starts_on: date!(2025 - 01 - 02),
            ends_on: date!(2027 - 01 - 01),
            ..sign("c1")
        }),
        start,
    );
    // Monthly totals 4,000 > 3,000 > 2,000: not yet three falls in a row, and the 90
    // days before each purchase hold no earlier window to fall from.
    purchase_on(&mut w, "o1", date!(2025 - 01 - 15), 4000);
    purchase_on(&mut w, "o2", date!(2025 - 02 - 15), 3000);
    purchase_on(&mut w, "o3", date!(2025 - 03 - 15), 2000);
    assert!(!w.lifecycle.purchases_falling());
    assert_eq!(w.stage(), Some(Stage::Growth));
    // 1,000 in April: January > February > March > April.
    purchase_on(&mut w, "o4", date!(2025 - 04 - 15), 1000);
    assert!(w.lifecycle.purchases_falling());
    assert_eq!(w.stage(), Some(Stage::Decline));
    assert_eq!(
        w.transitions.last().map(|t| (t.to, t.event_type.as_str())),
        Some((Stage::Decline, "purchase_recorded"))
    );
    // A bigger May: while April is the latest complete month, its three falls still count.
    purchase_on(&mut w, "o5", date!(2025 - 05 - 15), 9000);
    assert!(w.lifecycle.purchases_falling());
    assert_eq!(w.stage(), Some(Stage::Decline));
    // In June, May is the latest complete month and ended the falls. The decline ends.
    let (_, transition) = w.step(
        Command::RecordActivity(activity()),
        datetime!(2025-06-01 09:00 UTC),
    );
    assert!(!w.lifecycle.purchases_falling());
    assert_eq!(transition.map(|t| t.to), Some(Stage::Growth));
}

#[test]
fn a_year_makes_a_customer_mature_only_in_good_health() {
    use crm_domain::health::Color;
    let signed_at = datetime!(2025-01-01 00:00 UTC);
    let mut w = Walk::signed(signed_at);
    // A decision-maker change ten months in keeps the customer yellow for 90 days.
    w.step(
        Command::ChangeKeyContact(key_contact()),
        signed_at + Duration::days(300),
    );
    let a_year_on = signed_at + Duration::days(365);
    w.step(Command::RecordActivity(activity()), a_year_on);
    assert_eq!(w.lifecycle.color(), Color::Yellow);
    assert_eq!(
        w.stage(),
        Some(Stage::Growth),
        "a year, but not in good health"
    );
    // Once the change is out of the window the customer is green, and mature.
    let green_again = signed_at + Duration::days(391);
    let (_, transition) = w.step(Command::RecordActivity(activity()), green_again);
    assert_eq!(w.lifecycle.color(), Color::Green);
    assert_eq!(
        transition,
        Some(t(
            Some(Stage::Growth),
            Stage::Maturity,
            green_again,
            5,
            "activity_recorded"
        ))
    );
    assert!(w.lifecycle.matured_in_good_health);
    // Maturity, once reached, lasts through a later yellow spell.
    w.step(
        Command::ChangeKeyContact(key_contact()),
        signed_at + Duration::days(400),
    );
    assert_eq!(w.lifecycle.color(), Color::Yellow);
    assert_eq!(w.stage(), Some(Stage::Maturity));
}

#[test]
fn the_inactivity_threshold_comes_from_the_policy() {
    let mut policy = policy();
    policy.health.no_activity_days = 45;
    let mut lc = Lifecycle::default();
    lc.apply(&registered(), AT, 1, &policy);
    lc.apply(&signed("c1"), AT, 2, &policy);
    assert_eq!(lc.apply(&flagged(30), AT, 3, &policy), None);
    assert_eq!(lc.stage, Some(Stage::Growth), "30 days are not 45");
    let t = lc.apply(&flagged(45), AT, 4, &policy);
    assert_eq!(t.map(|t| t.to), Some(Stage::Decline));
}

#[test]
fn a_year_spent_inactive_does_not_make_a_customer_mature() {
    use crm_domain::types::ContactRole;
    let policy = policy();
    let signed_at = datetime!(2025-01-01 00:00 UTC);
    let day = |n: i64| signed_at + Duration::days(n);
    let mut lc = Lifecycle::default();
    lc.apply(&registered(), signed_at, 1, &policy);
    lc.apply(&signed("c1"), signed_at, 2, &policy);
    lc.apply(&flagged(60), day(360), 3, &policy);
    assert_eq!(lc.stage, Some(Stage::Decline));
    // Past the year, inactive but green by score (inactivity alone costs 25 points).
    lc.apply(&flagged(66), day(366), 4, &policy);
    assert_eq!(lc.color(), crm_domain::health::Color::Green);
    assert!(!lc.matured_in_good_health, "inactive is not good health");
    // A key-contact change (yellow), then activity: back to growth, not to maturity.
    let change = Event::KeyContactChanged(KeyContactChanged {
        role: ContactRole::Influencer,
        previous_contact: None,
        new_contact: "Jo".into(),
    });
    lc.apply(&change, day(367), 5, &policy);
    let activity = Event::ActivityRecorded(ActivityRecorded {
        day: day(370).date(),
        logins: 3,
        active_users: None,
    });
    let t = lc.apply(&activity, day(370), 6, &policy);
    assert_eq!(t.map(|t| t.to), Some(Stage::Growth));
}

/// A row written by a build whose lifecycle did not judge health still reads: the new
/// facts start empty.
#[test]
fn a_lifecycle_stored_before_it_judged_health_still_reads() {
    let w = Walk::signed(AT);
    let mut old = serde_json::to_value(&w.lifecycle).expect("serialises");
    let fields = old.as_object_mut().expect("an object");
    for key in ["health", "verdict", "matured_in_good_health"] {
        assert!(fields.remove(key).is_some(), "{key} is stored");
    }
    let back: Lifecycle = serde_json::from_value(old).expect("an old row parses");
    assert_eq!(back.stage, Some(Stage::Growth));
    assert_eq!(back.version, 2);
    assert_eq!(back.active_contracts, w.lifecycle.active_contracts);
    assert_eq!(back.health, Default::default());
    assert!(!back.matured_in_good_health);
}
