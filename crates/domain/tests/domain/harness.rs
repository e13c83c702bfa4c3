//! A given/when/then harness in the style of cqrs-es' `TestFramework`, plus fixtures.
//!
//! `given(events).when(command).then_event(expected)` folds `events` into a
//! [`CustomerState`], runs [`decide`] with fixed business and recording times and checks the
//! one resulting event; `.then_refused(code)` checks the refusal's stable
//! [`DomainError::code`].

use crm_domain::command::*;
use crm_domain::event::*;
use crm_domain::types::*;
use crm_domain::{Command, CustomerState, DomainError, Event, decide};
use time::macros::{date, datetime};
use time::{Date, Duration, OffsetDateTime};

/// Business time of every `when` unless a test picks another.
pub const AT: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);
/// Recording time: a few seconds after the business time.
pub const NOW: OffsetDateTime = datetime!(2025-06-01 12:00:05 UTC);

/// The shipped default policy (`policy/default.toml`).
pub fn policy() -> crm_domain::policy::Policy {
    toml::from_str(crm_domain::policy::DEFAULT_POLICY_TOML).expect("the shipped policy parses")
}

/// The state folded from `events`, before a command is tried.
pub struct Given {
    state: CustomerState,
    occurred_at: OffsetDateTime,
    now: OffsetDateTime,
}

/// Starts a scenario from the events already in the customer's log.
pub fn given(events: Vec<Event>) -> Given {
    let state = events
        .iter()
        .fold(CustomerState::default(), |s, e| s.apply(e));
    assert_eq!(
        state.version,
        events.len() as u64,
        "every given event counts as one version"
    );
    Given {
        state,
        occurred_at: AT,
        now: NOW,
    }
}

impl Given {
    /// Sets the business time; recording follows five seconds later.
    pub fn at(mut self, occurred_at: OffsetDateTime) -> Self {
        self.occurred_at = occurred_at;
        self.now = occurred_at + Duration::seconds(5);
        self
    }

    /// Sets the recording time alone (for clock-skew cases).
    pub fn recorded_at(mut self, now: OffsetDateTime) -> Self {
        self.now = now;
        self
    }

    /// The state the command will be decided against.
    pub fn state(&self) -> &CustomerState {
        &self.state
    }

    /// Decides `command` against the given state.
    pub fn when(self, command: Command) -> Then {
        let before = self.state.clone();
        let result = decide(&self.state, &command, self.occurred_at, self.now);
        assert_eq!(self.state, before, "decide must not change the state");
        Then {
            state: self.state,
            command,
            result,
        }
    }
}

/// The outcome of one `when`.
pub struct Then {
    state: CustomerState,
    command: Command,
    result: Result<Event, DomainError>,
}

impl Then {
    /// Asserts the command was accepted as exactly `expected` (every field), that the event's
    /// type is the one the command advertises, and that applying it bumps the version by
    /// one. Returns the state after the event for further checks.
    #[track_caller]
    pub fn then_event(self, expected: Event) -> CustomerState {
        let event = match self.result {
            Ok(event) => event,
            Err(err) => panic!(
                "expected {expected:?}\nbut {:?} was refused with {} ({err})",
                self.command,
                err.code()
            ),
        };
        assert_eq!(event, expected);
        assert_eq!(event.event_type(), self.command.event_type());
        let version = self.state.version;
        let after = self.state.apply(&event);
        assert_eq!(after.version, version + 1);
        after
    }

    /// Asserts the command was accepted, whatever the event; returns it.
    #[track_caller]
    pub fn then_accepted(self) -> Event {
        match self.result {
            Ok(event) => event,
            Err(err) => panic!(
                "expected {:?} to be accepted, refused with {} ({err})",
                self.command,
                err.code()
            ),
        }
    }

    /// Asserts the command was refused with the stable `code`; returns the error so the
    /// caller can check its details.
    #[track_caller]
    pub fn then_refused(self, code: &str) -> DomainError {
        match self.result {
            Ok(event) => panic!(
                "expected {:?} to be refused with {code}, got {event:?}",
                self.command
            ),
            Err(err) => {
                assert_eq!(err.code(), code, "refusal message: {err}");
                assert!(!err.to_string().is_empty(), "a refusal explains itself");
                err
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Event fixtures.

pub fn registered() -> Event {
    Event::CustomerRegistered(CustomerRegistered {
        name: "Acme".into(),
        segment: None,
        region: None,
        account_manager: None,
        acquisition_channel: None,
    })
}

/// Contract `id`: 1000 EUR-cents, 2025-01-01 to 2025-12-31, 90 days' notice.
pub fn signed(id: &str) -> Event {
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

pub fn terminated(id: &str, churned: bool) -> Event {
    Event::ContractTerminated(ContractTerminated {
        contract_id: id.into(),
        reason: None,
        churned,
        lapsed: false,
    })
}

pub fn complaint_logged(id: &str, severity: Severity) -> Event {
    Event::ComplaintLogged(ComplaintLogged {
        complaint_id: id.into(),
        severity,
        topic: None,
    })
}

pub fn complaint_resolved(id: &str, severity: Severity) -> Event {
    Event::ComplaintResolved(ComplaintResolved {
        complaint_id: id.into(),
        severity,
        resolution_hours: 4,
    })
}

pub fn purchased(order: &str) -> Event {
    Event::PurchaseRecorded(PurchaseRecorded {
        order_id: order.into(),
        amount_minor: 500,
        currency: "EUR".into(),
        ordered_on: date!(2025 - 05 - 01),
    })
}

pub fn renewal_marked(id: &str, term_ends_on: Date) -> Event {
    Event::RenewalMarkedDue(RenewalMarkedDue {
        contract_id: id.into(),
        term_ends_on,
        notice_days: 90,
    })
}

pub fn renewed(id: &str, previous_ends_on: Date, new_ends_on: Date) -> Event {
    Event::ContractRenewed(ContractRenewed {
        contract_id: id.into(),
        previous_ends_on,
        new_ends_on,
        value_minor: None,
    })
}

/// Not registered yet.
pub fn nothing() -> Vec<Event> {
    Vec::new()
}

/// Registered, no contract.
pub fn prospect() -> Vec<Event> {
    vec![registered()]
}

/// Registered with one active contract `c1`.
pub fn active() -> Vec<Event> {
    vec![registered(), signed("c1")]
}

/// Registered; `c1` terminated, `c2` still active.
pub fn one_terminated() -> Vec<Event> {
    vec![
        registered(),
        signed("c1"),
        signed("c2"),
        terminated("c1", false),
    ]
}

/// Registered; the only contract `c1` terminated.
pub fn churned() -> Vec<Event> {
    vec![registered(), signed("c1"), terminated("c1", true)]
}

// ---------------------------------------------------------------------------------------
// Command fixtures: one valid instance of each command, used with struct-update syntax
// (`SignContract { value_minor: 0, ..sign("c1") }`) to vary one field at a time.

pub fn register(name: &str) -> RegisterCustomer {
    RegisterCustomer {
        name: name.into(),
        segment: None,
        region: None,
        account_manager: None,
        acquisition_channel: None,
    }
}

pub fn sign(id: &str) -> SignContract {
    SignContract {
        contract_id: id.into(),
        value_minor: 1_000,
        currency: "EUR".into(),
        starts_on: date!(2025 - 01 - 01),
        ends_on: date!(2025 - 12 - 31),
        notice_days: None,
    }
}

pub fn deliver(contract: &str) -> DeliverService {
    DeliverService {
        contract_id: contract.into(),
        service_id: "s1".into(),
        promised_on: date!(2025 - 05 - 20),
        delivered_on: date!(2025 - 05 - 20),
        exceeded_expectations: None,
    }
}

pub fn delay(contract: &str) -> DelayService {
    DelayService {
        contract_id: contract.into(),
        service_id: "s1".into(),
        promised_on: date!(2025 - 05 - 20),
        days_late: 3,
        reason: None,
    }
}

pub fn respond(minutes: u32) -> RespondToRequest {
    RespondToRequest {
        request_id: "r1".into(),
        response_minutes: minutes,
    }
}

pub fn log_complaint(id: &str) -> LogComplaint {
    LogComplaint {
        complaint_id: id.into(),
        severity: Severity::Major,
        topic: None,
    }
}

pub fn resolve(id: &str) -> ResolveComplaint {
    ResolveComplaint {
        complaint_id: id.into(),
        resolution_hours: 4,
    }
}

pub fn value_add() -> DeliverValueAdd {
    DeliverValueAdd {
        kind: ValueAddKind::IndustryInsight,
        note: None,
    }
}

pub fn care_touch() -> RecordCareTouch {
    RecordCareTouch {
        kind: CareTouchKind::Birthday,
        note: None,
    }
}

pub fn survey(kind: SurveyKind, score: u8) -> RecordSurvey {
    RecordSurvey {
        kind,
        score,
        comment: None,
    }
}

pub fn purchase(order: &str) -> RecordPurchase {
    RecordPurchase {
        order_id: order.into(),
        amount_minor: 500,
        currency: "EUR".into(),
        ordered_on: date!(2025 - 05 - 01),
    }
}

pub fn activity() -> RecordActivity {
    RecordActivity {
        day: date!(2025 - 05 - 31),
        logins: 7,
        active_users: None,
    }
}

pub fn key_contact() -> ChangeKeyContact {
    ChangeKeyContact {
        role: ContactRole::DecisionMaker,
        previous_contact: None,
        new_contact: "Jane Doe".into(),
    }
}

pub fn mark_due(contract: &str, term_ends_on: Date) -> MarkRenewalDue {
    MarkRenewalDue {
        contract_id: contract.into(),
        term_ends_on,
    }
}

pub fn renew(contract: &str, new_ends_on: Date) -> RenewContract {
    RenewContract {
        contract_id: contract.into(),
        new_ends_on,
        value_minor: None,
    }
}

pub fn expand(contract: &str, added: i64) -> ExpandContract {
    ExpandContract {
        contract_id: contract.into(),
        kind: ExpansionKind::Upsell,
        added_value_minor: added,
    }
}

pub fn terminate(contract: &str) -> TerminateContract {
    TerminateContract {
        contract_id: contract.into(),
        reason: None,
        term_ends_on: None,
    }
}

pub fn inactivity(days: u32) -> FlagInactivity {
    FlagInactivity {
        days_inactive: days,
        last_activity_on: None,
    }
}

pub fn intervention() -> LogIntervention {
    LogIntervention {
        action: InterventionAction::Call,
        note: None,
        alert_id: None,
    }
}

/// One valid instance of every command, in `Command::TYPES` order. Against
/// [`with_everything`] at [`RENEWAL_WINDOW_AT`], each is accepted.
pub fn one_of_each() -> Vec<Command> {
    vec![
        Command::RegisterCustomer(register("Acme")),
        Command::SignContract(sign("c9")),
        Command::DeliverService(deliver("c1")),
        Command::DelayService(delay("c1")),
        Command::RespondToRequest(respond(30)),
        Command::LogComplaint(log_complaint("k9")),
        Command::ResolveComplaint(resolve("k1")),
        Command::DeliverValueAdd(value_add()),
        Command::RecordCareTouch(care_touch()),
        Command::RecordSurvey(survey(SurveyKind::Nps, 9)),
        Command::RecordPurchase(purchase("o9")),
        Command::RecordActivity(activity()),
        Command::ChangeKeyContact(key_contact()),
        Command::MarkRenewalDue(mark_due("c1", date!(2025 - 12 - 31))),
        Command::RenewContract(renew("c1", date!(2026 - 12 - 31))),
        Command::ExpandContract(expand("c1", 100)),
        Command::TerminateContract(terminate("c1")),
        Command::FlagInactivity(inactivity(30)),
        Command::LogIntervention(intervention()),
    ]
}

/// A business time inside `c1`'s notice window (it opens on 2025-10-02).
pub const RENEWAL_WINDOW_AT: OffsetDateTime = datetime!(2025-11-01 09:00 UTC);

/// Registered, `c1` active, complaint `k1` open: every command but `register_customer`
/// of [`one_of_each`] is accepted here.
pub fn with_everything() -> Vec<Event> {
    vec![
        registered(),
        signed("c1"),
        complaint_logged("k1", Severity::Major),
    ]
}

/// `n` characters.
pub fn chars(n: usize) -> String {
    "x".repeat(n)
}
