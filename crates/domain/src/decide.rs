//! The invariants: a pure function from state and command to exactly one event.

use time::{Date, Duration, OffsetDateTime};

use crate::command::*;
use crate::error::DomainError;
use crate::event::*;
use crate::state::{Contract, CustomerState};

/// How far in the future a command's `occurred_at` may lie (clock skew between services).
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
/// First-response SLA in minutes (seed 004).
pub const RESPONSE_SLA_MINUTES: u32 = 120;
/// Default renewal notice window (seed 000).
pub const DEFAULT_NOTICE_DAYS: u32 = 90;
/// Longest accepted identifier (contract, service, complaint, order, request ids).
pub const MAX_ID_LEN: usize = 200;
/// Longest accepted free text (names, notes, reasons, comments).
pub const MAX_TEXT_LEN: usize = 2_000;

/// `at` as the business time the log stores: the same instant in UTC, refused when that
/// instant has no RFC 3339 form (its UTC year outside 0000..=9999, e.g.
/// `9999-12-31T23:00:00-01:00` or `0000-01-01T00:00:00+01:00`), which the envelope could
/// not be written with.
pub fn business_time(at: OffsetDateTime) -> Result<OffsetDateTime, DomainError> {
    at.checked_to_offset(time::UtcOffset::UTC)
        .filter(|utc| (0..=9999).contains(&utc.year()))
        .ok_or(DomainError::OutOfRange {
            field: "occurred_at",
            detail: "in UTC it must lie between 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
        })
}

/// Checks `command` against `state` and returns the one event it becomes.
///
/// `occurred_at` is the business time of the command, `now` the recording time; both are
/// passed in so the function stays deterministic.
pub fn decide(
    state: &CustomerState,
    command: &Command,
    occurred_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Event, DomainError> {
    if occurred_at > now + MAX_CLOCK_SKEW {
        return Err(DomainError::OccurredInFuture);
    }
    if let Command::RegisterCustomer(c) = command {
        return register(state, c);
    }
    if !state.registered {
        return Err(DomainError::CustomerNotRegistered);
    }
    if state.churned
        && !matches!(
            command,
            Command::SignContract(_) | Command::LogIntervention(_)
        )
    {
        return Err(DomainError::CustomerChurned);
    }
    match command {
        Command::RegisterCustomer(_) => Err(DomainError::CustomerAlreadyRegistered),
        Command::SignContract(c) => contracts::sign(state, c),
        Command::MarkRenewalDue(c) => contracts::mark_renewal_due(state, c, occurred_at),
        Command::RenewContract(c) => contracts::renew(state, c),
        Command::ExpandContract(c) => contracts::expand(state, c),
        Command::TerminateContract(c) => contracts::terminate(state, c, occurred_at),
        Command::DeliverService(c) => service::deliver(state, c),
        Command::DelayService(c) => service::delay(state, c),
        Command::RespondToRequest(c) => service::respond(state, c),
        Command::LogComplaint(c) => complaints::log(state, c),
        Command::ResolveComplaint(c) => complaints::resolve(state, c),
        Command::DeliverValueAdd(c) => care::value_add(c),
        Command::RecordCareTouch(c) => care::care_touch(c),
        Command::RecordSurvey(c) => care::survey(c),
        Command::LogIntervention(c) => care::intervention(c),
        Command::RecordPurchase(c) => usage::purchase(state, c, occurred_at),
        Command::RecordActivity(c) => usage::activity(c, occurred_at),
        Command::FlagInactivity(c) => usage::inactivity(state, c, occurred_at),
        Command::ChangeKeyContact(c) => usage::key_contact(c),
    }
}

fn register(state: &CustomerState, c: &RegisterCustomer) -> Result<Event, DomainError> {
    if state.registered {
        return Err(DomainError::CustomerAlreadyRegistered);
    }
    let name = text("name", &c.name, MAX_TEXT_LEN)?;
    Ok(Event::CustomerRegistered(CustomerRegistered {
        name,
        segment: opt_text("segment", &c.segment)?,
        region: opt_text("region", &c.region)?,
        account_manager: opt_text("account_manager", &c.account_manager)?,
        acquisition_channel: opt_text("acquisition_channel", &c.acquisition_channel)?,
    }))
}

/// A trimmed, non-empty string of at most `max` characters.
fn text(field: &'static str, value: &str, max: usize) -> Result<String, DomainError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(DomainError::EmptyField { field });
    }
    if v.chars().count() > max {
        return Err(DomainError::FieldTooLong { field, max });
    }
    Ok(v.to_owned())
}

/// The id of something the customer already has, as it was stored: trimmed and bounded
/// like a new one, but not refused for control characters, so what was stored before new
/// ids were checked for them can still be acted on.
fn existing_id(field: &'static str, value: &str) -> Result<String, DomainError> {
    text(field, value, MAX_ID_LEN)
}

/// A new identifier: text of at most [`MAX_ID_LEN`] characters, and no control characters
/// (an id ends up in keys and headers, where a line break cannot go).
fn id(field: &'static str, value: &str) -> Result<String, DomainError> {
    let id = text(field, value, MAX_ID_LEN)?;
    if id.chars().any(char::is_control) {
        return Err(DomainError::ControlCharacter { field });
    }
    Ok(id)
}

/// Optional free text: blank becomes absent.
fn opt_text(field: &'static str, value: &Option<String>) -> Result<Option<String>, DomainError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => text(field, v, MAX_TEXT_LEN).map(Some),
    }
}

fn positive(field: &'static str, amount: i64) -> Result<i64, DomainError> {
    if amount <= 0 {
        return Err(DomainError::InvalidAmount { field });
    }
    Ok(amount)
}

fn currency(code: &str) -> Result<String, DomainError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code.to_owned())
    } else {
        Err(DomainError::InvalidCurrency(code.to_owned()))
    }
}

/// The active contract a command names, and its id as `sign_contract` stored it (checked
/// and trimmed the same way, so `" c1 "` finds `c1`).
fn active_contract<'s>(
    state: &'s CustomerState,
    contract_id: &str,
) -> Result<(String, &'s Contract), DomainError> {
    let contract_id = existing_id("contract_id", contract_id)?;
    let contract = state
        .contracts
        .get(&contract_id)
        .ok_or_else(|| DomainError::ContractNotFound(contract_id.clone()))?;
    if !contract.is_active() {
        return Err(DomainError::ContractNotActive(contract_id));
    }
    Ok((contract_id, contract))
}

mod contracts {
    use super::*;

    pub(super) fn sign(state: &CustomerState, c: &SignContract) -> Result<Event, DomainError> {
        let contract_id = id("contract_id", &c.contract_id)?;
        if state.contracts.contains_key(&contract_id) {
            return Err(DomainError::ContractAlreadyExists(contract_id));
        }
        positive("value_minor", c.value_minor)?;
        let currency = currency(&c.currency)?;
        if c.ends_on <= c.starts_on {
            return Err(DomainError::InvalidDates("ends_on must be after starts_on"));
        }
        let notice_days = c.notice_days.unwrap_or(DEFAULT_NOTICE_DAYS);
        if notice_days > 3_650 {
            return Err(DomainError::OutOfRange {
                field: "notice_days",
                detail: "at most 3650",
            });
        }
        Ok(Event::ContractSigned(ContractSigned {
            contract_id,
            value_minor: c.value_minor,
            currency,
            starts_on: c.starts_on,
            ends_on: c.ends_on,
            notice_days,
            win_back: state.churned,
        }))
    }

    pub(super) fn mark_renewal_due(
        state: &CustomerState,
        c: &MarkRenewalDue,
        occurred_at: OffsetDateTime,
    ) -> Result<Event, DomainError> {
        let (contract_id, contract) = active_contract(state, &c.contract_id)?;
        if c.term_ends_on != contract.ends_on {
            return Err(DomainError::TermMismatch {
                contract_id: contract_id.clone(),
            });
        }
        if contract.renewal_due_for == Some(contract.ends_on) {
            return Err(DomainError::RenewalAlreadyMarked {
                contract_id: contract_id.clone(),
            });
        }
        let window_opens =
            crate::calendar::days_before(contract.ends_on, i64::from(contract.notice_days));
        // The window runs from `notice_days` before the term's end to its last day: a
        // term that has ended (the contract lapsed) is no longer due for renewal.
        if occurred_at.date() < window_opens || occurred_at.date() > contract.ends_on {
            return Err(DomainError::RenewalNotDue {
                contract_id: contract_id.clone(),
            });
        }
        Ok(Event::RenewalMarkedDue(RenewalMarkedDue {
            contract_id: contract_id.clone(),
            term_ends_on: c.term_ends_on,
            notice_days: contract.notice_days,
        }))
    }

    pub(super) fn renew(state: &CustomerState, c: &RenewContract) -> Result<Event, DomainError> {
        let (contract_id, contract) = active_contract(state, &c.contract_id)?;
        if c.new_ends_on <= contract.ends_on {
            return Err(DomainError::InvalidDates(
                "new_ends_on must be after the contract's current end",
            ));
        }
        if let Some(v) = c.value_minor {
            positive("value_minor", v)?;
        }
        Ok(Event::ContractRenewed(ContractRenewed {
            contract_id: contract_id.clone(),
            previous_ends_on: contract.ends_on,
            new_ends_on: c.new_ends_on,
            value_minor: c.value_minor,
        }))
    }

    pub(super) fn expand(state: &CustomerState, c: &ExpandContract) -> Result<Event, DomainError> {
        let (contract_id, _) = active_contract(state, &c.contract_id)?;
        positive("added_value_minor", c.added_value_minor)?;
        Ok(Event::ContractExpanded(ContractExpanded {
            contract_id: contract_id.clone(),
            kind: c.kind,
            added_value_minor: c.added_value_minor,
        }))
    }

    /// Ends a contract. One whose term ended before the termination's business day
    /// without a renewal is recorded as lapsed.
    pub(super) fn terminate(
        state: &CustomerState,
        c: &TerminateContract,
        occurred_at: OffsetDateTime,
    ) -> Result<Event, DomainError> {
        let (contract_id, contract) = active_contract(state, &c.contract_id)?;
        if c.term_ends_on.is_some_and(|end| end != contract.ends_on) {
            return Err(DomainError::TermMismatch { contract_id });
        }
        let others_active = state
            .contracts
            .iter()
            .any(|(id, k)| *id != contract_id && k.is_active());
        Ok(Event::ContractTerminated(ContractTerminated {
            reason: opt_text("reason", &c.reason)?,
            churned: !others_active,
            lapsed: contract.ends_on < occurred_at.date(),
            contract_id,
        }))
    }
}

mod service {
    use super::*;

    pub(super) fn deliver(state: &CustomerState, c: &DeliverService) -> Result<Event, DomainError> {
        let (contract_id, _) = active_contract(state, &c.contract_id)?;
        let service_id = id("service_id", &c.service_id)?;
        if state.delivered_services.contains(&service_id) {
            return Err(DomainError::ServiceAlreadyDelivered(service_id));
        }
        if c.delivered_on > c.promised_on {
            return Err(DomainError::DeliveryLate);
        }
        Ok(Event::ServiceDelivered(ServiceDelivered {
            contract_id: contract_id.clone(),
            service_id,
            promised_on: c.promised_on,
            delivered_on: c.delivered_on,
            exceeded_expectations: c.exceeded_expectations.unwrap_or(false),
        }))
    }

    pub(super) fn delay(state: &CustomerState, c: &DelayService) -> Result<Event, DomainError> {
        let (contract_id, _) = active_contract(state, &c.contract_id)?;
        let service_id = id("service_id", &c.service_id)?;
        // A delay before delivery (even a second slip) is news; one after it is not.
        if state.delivered_services.contains(&service_id) {
            return Err(DomainError::ServiceAlreadyDelivered(service_id));
        }
        if c.days_late == 0 || c.days_late > 3_650 {
            return Err(DomainError::OutOfRange {
                field: "days_late",
                detail: "between 1 and 3650",
            });
        }
        Ok(Event::ServiceDelayed(ServiceDelayed {
            contract_id: contract_id.clone(),
            service_id,
            promised_on: c.promised_on,
            days_late: c.days_late,
            reason: opt_text("reason", &c.reason)?,
        }))
    }

    /// The first response to a request; a second one for the same request is refused (it
    /// would count against the SLA, and in the trust account, twice).
    pub(super) fn respond(
        state: &CustomerState,
        c: &RespondToRequest,
    ) -> Result<Event, DomainError> {
        let request_id = id("request_id", &c.request_id)?;
        if state.responded_requests.contains(&request_id) {
            return Err(DomainError::RequestAlreadyResponded(request_id));
        }
        Ok(Event::RequestResponded(RequestResponded {
            request_id,
            response_minutes: c.response_minutes,
            within_sla: c.response_minutes <= RESPONSE_SLA_MINUTES,
        }))
    }
}

mod complaints {
    use super::*;

    pub(super) fn log(state: &CustomerState, c: &LogComplaint) -> Result<Event, DomainError> {
        let complaint_id = id("complaint_id", &c.complaint_id)?;
        if state.complaints.contains_key(&complaint_id) {
            return Err(DomainError::ComplaintAlreadyExists(complaint_id));
        }
        Ok(Event::ComplaintLogged(ComplaintLogged {
            complaint_id,
            severity: c.severity,
            topic: opt_text("topic", &c.topic)?,
        }))
    }

    pub(super) fn resolve(
        state: &CustomerState,
        c: &ResolveComplaint,
    ) -> Result<Event, DomainError> {
        let complaint_id = existing_id("complaint_id", &c.complaint_id)?;
        let complaint = state
            .complaints
            .get(&complaint_id)
            .ok_or_else(|| DomainError::ComplaintNotFound(complaint_id.clone()))?;
        if !complaint.open {
            return Err(DomainError::ComplaintNotOpen(complaint_id));
        }
        Ok(Event::ComplaintResolved(ComplaintResolved {
            complaint_id,
            severity: complaint.severity,
            resolution_hours: c.resolution_hours,
        }))
    }
}

mod care {
    use super::*;
    use crate::types::SurveyKind;

    pub(super) fn value_add(c: &DeliverValueAdd) -> Result<Event, DomainError> {
        Ok(Event::ValueAddDelivered(ValueAddDelivered {
            kind: c.kind,
            note: opt_text("note", &c.note)?,
        }))
    }

    pub(super) fn care_touch(c: &RecordCareTouch) -> Result<Event, DomainError> {
        Ok(Event::CareTouchRecorded(CareTouchRecorded {
            kind: c.kind,
            note: opt_text("note", &c.note)?,
        }))
    }

    pub(super) fn survey(c: &RecordSurvey) -> Result<Event, DomainError> {
        let ok = match c.kind {
            SurveyKind::Csat => (1..=5).contains(&c.score),
            SurveyKind::Nps => c.score <= 10,
        };
        if !ok {
            return Err(DomainError::OutOfRange {
                field: "score",
                detail: "csat is 1-5, nps is 0-10",
            });
        }
        Ok(Event::SurveyAnswered(SurveyAnswered {
            kind: c.kind,
            score: c.score,
            comment: opt_text("comment", &c.comment)?,
        }))
    }

    pub(super) fn intervention(c: &LogIntervention) -> Result<Event, DomainError> {
        Ok(Event::InterventionLogged(InterventionLogged {
            action: c.action,
            note: opt_text("note", &c.note)?,
            alert_id: match &c.alert_id {
                Some(a) => Some(id("alert_id", a)?),
                None => None,
            },
        }))
    }
}

mod usage {
    use super::*;

    /// Whether `day`, a day the command reports as past (an order, a day of usage), is at
    /// most one day after the command's business time (the day may be a local one, up to
    /// a day ahead of UTC). A later one would sit in the rules' future: an activity day
    /// there would hold off inactivity flags until it came, an order outside every window.
    fn not_after_business_time(day: Date, occurred_at: OffsetDateTime) -> bool {
        day <= occurred_at.date().next_day().unwrap_or(Date::MAX)
    }

    pub(super) fn purchase(
        state: &CustomerState,
        c: &RecordPurchase,
        occurred_at: OffsetDateTime,
    ) -> Result<Event, DomainError> {
        let order_id = id("order_id", &c.order_id)?;
        if state.orders.contains(&order_id) {
            return Err(DomainError::DuplicateOrder(order_id));
        }
        positive("amount_minor", c.amount_minor)?;
        if !not_after_business_time(c.ordered_on, occurred_at) {
            return Err(DomainError::InvalidDates(
                "ordered_on must not be after the command's occurred_at",
            ));
        }
        Ok(Event::PurchaseRecorded(PurchaseRecorded {
            order_id,
            amount_minor: c.amount_minor,
            currency: currency(&c.currency)?,
            ordered_on: c.ordered_on,
        }))
    }

    pub(super) fn activity(
        c: &RecordActivity,
        occurred_at: OffsetDateTime,
    ) -> Result<Event, DomainError> {
        if !not_after_business_time(c.day, occurred_at) {
            return Err(DomainError::InvalidDates(
                "day must not be after the command's occurred_at",
            ));
        }
        Ok(Event::ActivityRecorded(ActivityRecorded {
            day: c.day,
            logins: c.logins,
            active_users: c.active_users,
        }))
    }

    /// An inactivity flag covers the days from its last activity (given, or `days_inactive`
    /// before its business time) to its business time: activity recorded inside that
    /// period means the flag was decided on stale views. Activity after the flag's time
    /// (history imported out of order) does not refute it.
    pub(super) fn inactivity(
        state: &CustomerState,
        c: &FlagInactivity,
        occurred_at: OffsetDateTime,
    ) -> Result<Event, DomainError> {
        if c.days_inactive == 0 {
            return Err(DomainError::OutOfRange {
                field: "days_inactive",
                detail: "at least 1",
            });
        }
        let today = occurred_at.date();
        if let Some(last) = c.last_activity_on {
            // A last activity after the flag's own day would keep the flag standing until
            // then (activity clears it only when recorded after it), and more days than
            // have passed since it contradict it.
            if last > today {
                return Err(DomainError::OutOfRange {
                    field: "last_activity_on",
                    detail: "not after the day of occurred_at",
                });
            }
            if i64::from(c.days_inactive) > (today - last).whole_days() {
                return Err(DomainError::OutOfRange {
                    field: "days_inactive",
                    detail: "at most the days from last_activity_on to occurred_at",
                });
            }
        }
        let since = c
            .last_activity_on
            .unwrap_or_else(|| crate::calendar::days_before(today, i64::from(c.days_inactive)));
        if let Some(day) = state.last_activity_on.filter(|d| *d > since && *d <= today) {
            return Err(DomainError::RecentlyActive { day });
        }
        Ok(Event::InactivityFlagged(InactivityFlagged {
            days_inactive: c.days_inactive,
            last_activity_on: c.last_activity_on,
        }))
    }

    pub(super) fn key_contact(c: &ChangeKeyContact) -> Result<Event, DomainError> {
        Ok(Event::KeyContactChanged(KeyContactChanged {
            role: c.role,
            previous_contact: opt_text("previous_contact", &c.previous_contact)?,
            new_contact: text("new_contact", &c.new_contact, MAX_TEXT_LEN)?,
        }))
    }
}
