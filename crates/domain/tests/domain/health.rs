//! The health fold with back-filled events: business time decides, not arrival order.

use crm_domain::command::*;
use crm_domain::health::{AlertChange, Color, Health};
use crm_domain::types::{Severity, SurveyKind};
use crm_domain::{Command, CustomerState, decide};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::harness::*;

/// A customer's state and health, advanced one accepted command at a time.
#[derive(Default)]
struct Walk {
    state: CustomerState,
    health: Health,
}

impl Walk {
    #[track_caller]
    fn step(&mut self, command: Command, at: OffsetDateTime) -> Option<AlertChange> {
        let event = decide(&self.state, &command, at, at + Duration::seconds(1))
            .unwrap_or_else(|e| panic!("{command:?} refused: {} ({e})", e.code()));
        self.state = self.state.clone().apply(&event);
        self.health.apply(&event, at, self.state.version, &policy())
    }
}

fn survey(kind: SurveyKind, score: u8) -> Command {
    Command::RecordSurvey(RecordSurvey {
        kind,
        score,
        comment: None,
    })
}

/// A survey back-filled from before the latest one does not replace it, and an alert is
/// never resolved at a time before it was raised.
#[test]
fn a_back_filled_survey_does_not_replace_a_later_one() {
    let mut w = Walk::default();
    w.step(
        Command::RegisterCustomer(register("Acme")),
        datetime!(2025-01-01 09:00 UTC),
    );
    w.step(
        Command::DeliverValueAdd(value_add()),
        datetime!(2025-01-02 09:00 UTC),
    );
    let march = datetime!(2025-03-10 09:00 UTC);
    w.step(survey(SurveyKind::Nps, 3), march);
    w.step(survey(SurveyKind::Csat, 1), march);
    let raised = w.step(
        Command::LogComplaint(LogComplaint {
            complaint_id: "k1".into(),
            severity: Severity::Minor,
            topic: None,
        }),
        march,
    );
    let alert = match raised {
        Some(AlertChange::Raised(a) | AlertChange::Updated(a)) => a,
        other => panic!("no alert after a poor survey and a complaint: {other:?}"),
    };
    assert_ne!(alert.color, Color::Green);
    let color = alert.color;

    // A glowing CSAT from January arrives late: March's answer is still the latest.
    let late = w.step(survey(SurveyKind::Csat, 5), datetime!(2025-01-15 09:00 UTC));
    assert_eq!(w.health.latest_csat, Some(1));
    assert_eq!(w.health.latest_csat_at, Some(march));
    assert!(
        !matches!(late, Some(AlertChange::Resolved(_))),
        "a January survey resolved a March alert: {late:?}"
    );
    let open = w.health.open_alert.as_ref().expect("the alert stays open");
    assert_eq!(open.color, color);

    // Surveys from March 20, back-filled after an April event, are newer than March
    // 10's: they count. The alert they resolve is resolved when that was learnt (the
    // latest business time, April 1), never before its own raising.
    let april = datetime!(2025-04-01 09:00 UTC);
    let changes = [
        w.step(Command::DeliverValueAdd(value_add()), april),
        w.step(survey(SurveyKind::Nps, 9), datetime!(2025-03-20 09:00 UTC)),
        w.step(survey(SurveyKind::Csat, 5), datetime!(2025-03-20 09:00 UTC)),
    ];
    assert_eq!(w.health.latest_csat, Some(5));
    // The promoter's answer takes it back to green.
    match changes[1].clone() {
        Some(AlertChange::Resolved(a)) => {
            assert_eq!(a.alert_id, alert.alert_id);
            assert_eq!(a.resolved_at, Some(april));
        }
        other => panic!("the alert was not resolved: {other:?} ({changes:?})"),
    }
    assert!(w.health.open_alert.is_none());
}
