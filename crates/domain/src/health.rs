//! Health score, three-colour warnings and churn alerts (seeds 002–004), and the value tier
//! (seed 000). Pure: a customer's [`Health`] folds its events; [`Health::assess`] scores it
//! as of the latest event's business time, never the wall clock.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime};

use crate::calendar::{days_before, instant_days_before};
use crate::event::Event;
use crate::policy::Policy;
use crate::trust::{self, Balances};
use crate::types::{ContactRole, SurveyKind};

/// Warning colour.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Color {
    #[default]
    Green,
    Yellow,
    Red,
}

impl Color {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Color::Green => "green",
            Color::Yellow => "yellow",
            Color::Red => "red",
        }
    }

    /// The recommended action for this colour: (code, human sentence).
    pub fn recommended_action(&self) -> (&'static str, &'static str) {
        match self {
            Color::Green => ("routine_quarterly_care", "Routine quarterly care."),
            Color::Yellow => (
                "dedicated_care_plan",
                "Put a dedicated care plan in place and review it with the account manager.",
            ),
            Color::Red => (
                "executive_escalation",
                "Escalate to an executive (CEO-level) intervention now.",
            ),
        }
    }
}

/// Why a customer's health is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reason {
    pub code: String,
    pub message: String,
}

/// The reason code for order value down against the previous window.
pub const ORDER_VALUE_DOWN: &str = "order_value_down_20";
/// The reason code for purchases falling three calendar months in a row.
pub const PURCHASES_DOWN_3_MONTHS: &str = "purchases_down_3_months";

/// The colour and the purchase trend without the reasons' messages ([`Health::verdict`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub color: Color,
    /// Calendar-month purchase totals fell three months in a row. A single 90-day drop in
    /// order value is not a trend; it counts towards red instead.
    pub purchases_falling: bool,
}

fn reason(code: &str, message: String) -> Reason {
    Reason {
        code: code.to_owned(),
        message,
    }
}

/// Value tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    A,
    B,
    C,
}

impl Tier {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::A => "A",
            Tier::B => "B",
            Tier::C => "C",
        }
    }
}

/// The outcome of scoring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    pub score: u32,
    pub color: Color,
    pub reasons: Vec<Reason>,
    pub tier: Tier,
}

/// An intervention logged against an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intervention {
    pub action: String,
    pub note: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub version: u64,
}

/// A churn alert: raised when a customer leaves green, escalated on red, resolved back in
/// green.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub color: Color,
    pub reasons: Vec<Reason>,
    pub score: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub raised_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub escalated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    pub interventions: Vec<Intervention>,
}

/// What the health rules remember about one customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub version: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub as_of: Option<OffsetDateTime>,
    /// Purchases (day, amount), pruned to a little over a year before `as_of`.
    pub purchases: Vec<(Date, i64)>,
    /// Contract revenue (business day, amount): signatures, renewals, expansions.
    pub contract_revenue: Vec<(Date, i64)>,
    pub complaints: Vec<OffsetDateTime>,
    pub key_contact_changes: Vec<(ContactRole, OffsetDateTime)>,
    pub delays: Vec<OffsetDateTime>,
    pub slow_responses: Vec<OffsetDateTime>,
    /// Days inactive of the longest inactivity flag not yet followed by activity.
    pub inactive_days: Option<u32>,
    /// The first day without activity the standing flags claim (a flag's
    /// `last_activity_on`, or `days_inactive` before its day): only activity on a later
    /// day follows them. `None` in state folded before it was kept.
    #[serde(default)]
    pub inactive_since: Option<Date>,
    /// The business day of the latest standing flag.
    #[serde(default)]
    pub inactive_flagged_on: Option<Date>,
    pub last_activity_on: Option<Date>,
    /// Day the customer was registered (business time): the inactivity reference before
    /// any activity.
    pub registered_on: Option<Date>,
    /// The activity reference day the last inactivity flag of at least the policy's
    /// `no_activity_days` was raised for.
    pub inactivity_flagged_for: Option<Date>,
    pub latest_csat: Option<u8>,
    pub latest_nps: Option<u8>,
    /// Business time of the survey `latest_csat` came from: a survey back-filled from
    /// before it does not replace it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub latest_csat_at: Option<OffsetDateTime>,
    /// Business time of the survey `latest_nps` came from.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub latest_nps_at: Option<OffsetDateTime>,
    pub trust: Balances,
    /// When the current relationship's first contract was signed (set again on a
    /// win-back): loyalty counts from it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_contract_at: Option<OffsetDateTime>,
    /// Day the current relationship's first contract was signed (set again on a win-back):
    /// there is no usage to miss before it.
    #[serde(default)]
    pub relationship_started_on: Option<Date>,
    pub active_contracts: BTreeSet<String>,
    pub assessment: Option<Assessment>,
    pub open_alert: Option<Alert>,
}

/// What changed for alerts when an event was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertChange {
    Raised(Alert),
    Updated(Alert),
    Resolved(Alert),
}

impl Health {
    /// Folds one event with its business time and per-customer version. Events at or below
    /// the stored version are ignored (re-delivery is harmless). Returns the alert change,
    /// if any.
    pub fn apply(
        &mut self,
        event: &Event,
        occurred_at: OffsetDateTime,
        version: u64,
        policy: &Policy,
    ) -> Option<AlertChange> {
        if !self.observe(event, occurred_at, version, policy) {
            return None;
        }
        let assessment = self.assess(policy);
        self.assessment = Some(assessment.clone());
        // An alert changes when the change is learnt: at the latest business time seen, so
        // a back-filled event never dates a resolution before its alert was raised.
        let at = self.as_of.unwrap_or(occurred_at);
        self.update_alert(
            &assessment,
            at,
            version,
            matches!(event, Event::InterventionLogged(_)),
        )
    }

    /// Folds one event into the facts only (no scoring): `false` for an event at or below
    /// the stored version, which is ignored.
    pub fn observe(
        &mut self,
        event: &Event,
        occurred_at: OffsetDateTime,
        version: u64,
        policy: &Policy,
    ) -> bool {
        if version <= self.version {
            return false;
        }
        self.version = version;
        // Business days are UTC days, also for events stored with the sender's offset
        // before the command path stored them in UTC.
        let occurred_at = occurred_at.to_offset(time::UtcOffset::UTC);
        // Business time only moves forward for the rules, even for back-filled events.
        let as_of = self.as_of.map_or(occurred_at, |t| t.max(occurred_at));
        self.as_of = Some(as_of);
        for e in trust::price(event, &policy.trust) {
            self.trust.add(&e);
        }
        let day = occurred_at.date();
        match event {
            Event::CustomerRegistered(_) => self.registered_on = Some(day),
            Event::ContractSigned(e) => {
                if self.active_contracts.is_empty() {
                    // A relationship starts (the first, or a win-back): loyalty counts
                    // from here, and no usage was missed before it, so an inactivity flag
                    // raised before it (of the relationship before) does not stand. A
                    // contract back-filled to before the flag leaves the flag standing.
                    self.relationship_started_on = Some(day);
                    self.first_contract_at = Some(occurred_at);
                    if self.inactive_flagged_on.is_none_or(|on| on < day) {
                        self.clear_inactivity();
                    }
                }
                self.active_contracts.insert(e.contract_id.clone());
                self.contract_revenue.push((day, e.value_minor));
            }
            Event::ContractRenewed(e) => {
                if let Some(v) = e.value_minor {
                    self.contract_revenue.push((day, v));
                }
            }
            Event::ContractExpanded(e) => self.contract_revenue.push((day, e.added_value_minor)),
            Event::ContractTerminated(e) => {
                self.active_contracts.remove(&e.contract_id);
            }
            Event::PurchaseRecorded(e) => self.purchases.push((e.ordered_on, e.amount_minor)),
            Event::ComplaintLogged(_) => self.complaints.push(occurred_at),
            Event::KeyContactChanged(e) => self.key_contact_changes.push((e.role, occurred_at)),
            Event::ServiceDelayed(_) => self.delays.push(occurred_at),
            Event::RequestResponded(e)
                if e.response_minutes > policy.trust.response_sla_minutes =>
            {
                self.slow_responses.push(occurred_at);
            }
            Event::ActivityRecorded(e) => {
                // Only activity after the first day the flags claim without activity
                // follows them: a day back-filled from before that does not lift "no
                // activity for 30 days".
                if self.inactive_since.is_none_or(|since| e.day > since) {
                    self.clear_inactivity();
                }
                self.last_activity_on = Some(self.last_activity_on.map_or(e.day, |d| d.max(e.day)));
            }
            Event::InactivityFlagged(e) => {
                // Until activity is recorded the longest standing flag counts: a later,
                // shorter one does not lift "no activity for 30 days".
                let since = e.last_activity_on.unwrap_or_else(|| {
                    crate::calendar::days_before(day, i64::from(e.days_inactive))
                });
                self.inactive_since = Some(self.inactive_since.map_or(since, |s| s.min(since)));
                self.inactive_flagged_on =
                    Some(self.inactive_flagged_on.map_or(day, |on| on.max(day)));
                self.inactive_days = Some(
                    self.inactive_days
                        .map_or(e.days_inactive, |d| d.max(e.days_inactive)),
                );
                // Only a flag the rule counts settles the reference for the scheduler: after
                // a shorter one (sent by hand, or under a policy with a lower threshold) it
                // still flags the customer once the threshold is reached.
                if e.days_inactive >= policy.health.no_activity_days {
                    self.inactivity_flagged_for = Some(self.activity_reference().unwrap_or(day));
                }
            }
            Event::SurveyAnswered(e) => {
                // The latest answer by business time counts, not the latest to arrive.
                let (score, at) = match e.kind {
                    SurveyKind::Csat => (&mut self.latest_csat, &mut self.latest_csat_at),
                    SurveyKind::Nps => (&mut self.latest_nps, &mut self.latest_nps_at),
                };
                if at.is_none_or(|t| occurred_at >= t) {
                    *score = Some(e.score);
                    *at = Some(occurred_at);
                }
            }
            Event::InterventionLogged(e) => {
                if let Some(alert) = &mut self.open_alert
                    && e.alert_id.as_ref().is_none_or(|id| id == &alert.alert_id)
                {
                    alert.interventions.push(Intervention {
                        action: e.action.as_str().to_owned(),
                        note: e.note.clone(),
                        at: occurred_at,
                        version,
                    });
                }
            }
            _ => {}
        }
        self.prune(as_of);
        true
    }

    /// No inactivity flag stands any more.
    fn clear_inactivity(&mut self) {
        self.inactive_days = None;
        self.inactive_since = None;
        self.inactive_flagged_on = None;
    }

    /// The day inactivity is counted from: the last activity or the start of the current
    /// relationship (the first contract signed since the customer had none), whichever is
    /// later; registration before either.
    pub fn activity_reference(&self) -> Option<Date> {
        match (self.last_activity_on, self.relationship_started_on) {
            (Some(a), Some(r)) => Some(a.max(r)),
            (a, r) => a.or(r).or(self.registered_on),
        }
    }

    fn prune(&mut self, as_of: OffsetDateTime) {
        let keep_from = instant_days_before(as_of, 400);
        let day = keep_from.date();
        self.purchases.retain(|(d, _)| *d >= day);
        self.contract_revenue.retain(|(d, _)| *d >= day);
        self.complaints.retain(|t| *t >= keep_from);
        self.key_contact_changes.retain(|(_, t)| *t >= keep_from);
        self.delays.retain(|t| *t >= keep_from);
        self.slow_responses.retain(|t| *t >= keep_from);
    }

    fn update_alert(
        &mut self,
        a: &Assessment,
        at: OffsetDateTime,
        version: u64,
        intervention: bool,
    ) -> Option<AlertChange> {
        match (&mut self.open_alert, a.color) {
            (None, Color::Green) => None,
            (None, color) => {
                let alert = Alert {
                    alert_id: format!("alert-{version}"),
                    color,
                    reasons: a.reasons.clone(),
                    score: a.score,
                    raised_at: at,
                    escalated_at: (color == Color::Red).then_some(at),
                    resolved_at: None,
                    interventions: Vec::new(),
                };
                self.open_alert = Some(alert.clone());
                Some(AlertChange::Raised(alert))
            }
            (Some(open), Color::Green) => {
                let mut resolved = open.clone();
                resolved.resolved_at = Some(at);
                self.open_alert = None;
                Some(AlertChange::Resolved(resolved))
            }
            (Some(open), color) => {
                let changed =
                    open.color != color || open.reasons != a.reasons || open.score != a.score;
                if color == Color::Red && open.escalated_at.is_none() {
                    open.escalated_at = Some(at);
                }
                open.color = color;
                open.reasons = a.reasons.clone();
                open.score = a.score;
                (changed || intervention).then(|| AlertChange::Updated(open.clone()))
            }
        }
    }

    /// Scores the customer as of its latest event.
    pub fn assess(&self, policy: &Policy) -> Assessment {
        let Some(as_of) = self.as_of else {
            return Assessment {
                score: 100,
                color: Color::Green,
                reasons: Vec::new(),
                tier: Tier::C,
            };
        };
        let mut reasons = Vec::new();
        let (score, color) = self.judge(as_of, policy, &mut |code, message| {
            reasons.push(reason(code, message()));
        });
        Assessment {
            score,
            color,
            reasons,
            tier: self.tier(as_of, policy),
        }
    }

    /// The colour as of the latest event and whether purchases are falling, by the same
    /// rules as [`Health::assess`] but without writing the reasons' messages or cutting the
    /// tier: what the lifecycle stage needs, for every event.
    pub fn verdict(&self, policy: &Policy) -> Verdict {
        let Some(as_of) = self.as_of else {
            return Verdict::default();
        };
        let mut purchases_falling = false;
        let (_, color) = self.judge(as_of, policy, &mut |code, _| {
            purchases_falling |= code == PURCHASES_DOWN_3_MONTHS;
        });
        Verdict {
            color,
            purchases_falling,
        }
    }

    /// Applies every rule as of `as_of`: returns the score and colour, and calls `note` with
    /// each reason's code and a way to write its message.
    fn judge(
        &self,
        as_of: OffsetDateTime,
        policy: &Policy,
        note: &mut dyn FnMut(&'static str, &dyn Fn() -> String),
    ) -> (u32, Color) {
        let p = &policy.health;
        let window_start = instant_days_before(as_of, p.window_days);
        let mut penalty = 0u32;
        let mut floor = Color::Green;

        let inactive = self.inactive_days.filter(|d| *d >= p.no_activity_days);
        if let Some(days) = inactive {
            penalty += p.no_activity;
            note("no_activity_30_days", &|| {
                format!("no login or usage for {days} days")
            });
        }
        let drop = self.order_value_drop(as_of, p.window_days);
        let order_down = drop.is_some_and(|pct| pct >= i64::from(p.order_value_drop_percent));
        if order_down {
            penalty += p.order_value_down;
            note(ORDER_VALUE_DOWN, &|| {
                format!(
                    "order value down {}% against the previous {} days",
                    drop.unwrap_or(0),
                    p.window_days
                )
            });
        }
        let complaints = self
            .complaints
            .iter()
            .filter(|t| **t > window_start)
            .count();
        if complaints > 0 {
            penalty += p.complaint_on_record;
            note("complaint_on_record", &|| {
                format!(
                    "{complaints} complaint(s) in the last {} days",
                    p.window_days
                )
            });
        }
        if inactive.is_some() && order_down && complaints > 0 {
            // Seed 003: together these mean about 85 % churn risk within two months.
            floor = Color::Red;
        }
        if self.purchases_down_three_months(as_of) {
            penalty += p.purchases_down_3_months;
            floor = floor.max(Color::Yellow);
            note(PURCHASES_DOWN_3_MONTHS, &|| {
                "purchase volume fell three months in a row".to_owned()
            });
        }
        let changes = || {
            self.key_contact_changes
                .iter()
                .filter(|(_, t)| *t > window_start)
        };
        if changes().next().is_some() {
            floor = floor.max(Color::Yellow);
            let dm = changes().any(|(r, _)| *r == ContactRole::DecisionMaker);
            penalty += if dm {
                p.decision_maker_changed
            } else {
                p.key_contact_changed
            };
            let code = if dm {
                "decision_maker_changed"
            } else {
                "key_contact_changed"
            };
            note(code, &|| {
                let roles: BTreeSet<&str> = changes().map(|(r, _)| r.as_str()).collect();
                format!(
                    "key contact changed ({})",
                    roles.into_iter().collect::<Vec<_>>().join(", ")
                )
            });
        }
        if let Some(nps) = self.latest_nps.filter(|s| *s <= 6) {
            penalty += p.nps_detractor;
            note("nps_detractor", &|| format!("NPS detractor (score {nps})"));
        }
        if let Some(csat) = self.latest_csat.filter(|s| *s <= 2) {
            penalty += p.low_csat;
            note("low_csat", &|| format!("low satisfaction (CSAT {csat})"));
        }
        let delays = self.delays.iter().filter(|t| **t > window_start).count();
        if delays >= 2 {
            penalty += p.repeated_delays;
            note("repeated_delays", &|| {
                format!("{delays} service delays in the last {} days", p.window_days)
            });
        }
        let slow = self
            .slow_responses
            .iter()
            .filter(|t| **t > window_start)
            .count();
        if slow >= 2 {
            penalty += p.slow_responses;
            note("slow_responses", &|| {
                format!("{slow} first responses slower than the SLA")
            });
        }
        let balance = self.trust.total();
        if balance < p.low_trust_threshold {
            penalty += p.low_trust_balance;
            note("low_trust_balance", &|| {
                format!("trust balance is {balance}")
            });
        }
        let score = 100u32.saturating_sub(penalty);
        let by_score = if score >= p.green_min {
            Color::Green
        } else if score >= p.yellow_min {
            Color::Yellow
        } else {
            Color::Red
        };
        (score, by_score.max(floor))
    }

    /// Percentage drop of purchases in the window before `as_of` against the window before
    /// that; `None` when the earlier window is empty.
    fn order_value_drop(&self, as_of: OffsetDateTime, window_days: i64) -> Option<i64> {
        let end = as_of.date();
        let mid = days_before(end, window_days);
        let start = days_before(mid, window_days);
        // Sums in i128: amounts are any positive i64, and a few large ones must not wrap.
        let sum = |from: Date, to: Date| -> i128 {
            self.purchases
                .iter()
                .filter(|(d, _)| *d > from && *d <= to)
                .map(|(_, a)| i128::from(*a))
                .sum()
        };
        let recent = sum(mid, end);
        let before = sum(start, mid);
        (before > 0).then(|| i64::try_from((before - recent) * 100 / before).unwrap_or(i64::MIN))
    }

    /// M1 > M2 > M3 > M4 for calendar-month totals, M4 being the current month or the
    /// latest complete one.
    fn purchases_down_three_months(&self, as_of: OffsetDateTime) -> bool {
        let month_total = |year: i32, month: Month| -> i128 {
            self.purchases
                .iter()
                .filter(|(d, _)| d.year() == year && d.month() == month)
                .map(|(_, a)| i128::from(*a))
                .sum()
        };
        let step_back = |(y, m): (i32, Month)| {
            if m == Month::January {
                (y - 1, Month::December)
            } else {
                (y, m.previous())
            }
        };
        let current = (as_of.year(), as_of.month());
        let falling = |last: (i32, Month)| {
            let m4 = last;
            let m3 = step_back(m4);
            let m2 = step_back(m3);
            let m1 = step_back(m2);
            let t = [m1, m2, m3, m4].map(|(y, m)| month_total(y, m));
            t[0] > t[1] && t[1] > t[2] && t[2] > t[3]
        };
        falling(current) || falling(step_back(current))
    }

    /// A/B/C from trailing-12-month revenue, repurchase and loyalty.
    fn tier(&self, as_of: OffsetDateTime, policy: &Policy) -> Tier {
        let t = &policy.tier;
        let from = days_before(as_of.date(), 365);
        let purchases: Vec<_> = self.purchases.iter().filter(|(d, _)| *d > from).collect();
        let revenue: i128 = purchases.iter().map(|(_, a)| i128::from(*a)).sum::<i128>()
            + self
                .contract_revenue
                .iter()
                .filter(|(d, _)| *d > from)
                .map(|(_, a)| i128::from(*a))
                .sum::<i128>();
        let repurchase = purchases.len() >= 2;
        let loyal = self
            .first_contract_at
            .is_some_and(|f| (as_of - f).whole_days() >= t.loyalty_days)
            && !self.active_contracts.is_empty();
        if revenue >= i128::from(t.a_min_revenue_minor) && (repurchase || loyal) {
            Tier::A
        } else if revenue >= i128::from(t.b_min_revenue_minor) || (repurchase && loyal) {
            Tier::B
        } else {
            Tier::C
        }
    }
}
