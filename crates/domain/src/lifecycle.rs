//! The lifecycle-stage model (seed 000): acquisition → growth → maturity → decline, plus
//! churned and a won-back flag.
//!
//! Pure: the lifecycle projection folds each customer's events through
//! [`Lifecycle::apply`] and stores the result. Only business time (`occurred_at`) is used,
//! so a replay always gives the same stages.
//!
//! The stage follows the domain brief: acquisition until the first contract; growth during
//! the first term; maturity after a renewal or expansion, or after 12 months in good health
//! (green); decline while red, flagged inactive, or with purchases falling; churned when no
//! contract is active. Health is scored by the same rules and policy as the health view, so
//! the lifecycle view also depends on the policy it was built under.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::Event;
use crate::health::{Color, Health, Verdict};
use crate::policy::Policy;

/// A lifecycle stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Acquisition,
    Growth,
    Maturity,
    Decline,
    Churned,
}

impl Stage {
    /// Every stage, in lifecycle order.
    pub const ALL: [Stage; 5] = [
        Stage::Acquisition,
        Stage::Growth,
        Stage::Maturity,
        Stage::Decline,
        Stage::Churned,
    ];

    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Acquisition => "acquisition",
            Stage::Growth => "growth",
            Stage::Maturity => "maturity",
            Stage::Decline => "decline",
            Stage::Churned => "churned",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A change of stage, caused by one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Option<Stage>,
    pub to: Stage,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub version: u64,
    pub event_type: String,
}

/// The lifecycle of one customer: the stage and the facts that determine it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Lifecycle {
    pub stage: Option<Stage>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// Last applied per-customer version.
    pub version: u64,
    pub active_contracts: BTreeSet<String>,
    /// Business time the current relationship's first contract was signed (reset on
    /// win-back); maturity by age counts from here.
    #[serde(with = "time::serde::rfc3339::option")]
    pub relationship_started_at: Option<OffsetDateTime>,
    /// A renewal or expansion happened in the current relationship.
    pub renewed_or_expanded: bool,
    /// The current relationship reached 12 months (its first day a year on) while the customer was in
    /// good health (green and not flagged inactive). Like a renewal, it lasts until the
    /// relationship ends.
    #[serde(default)]
    pub matured_in_good_health: bool,
    /// Flagged inactive for at least the policy's `no_activity_days`, and no activity since.
    pub inactive: bool,
    pub won_back: bool,
    /// The latest business time seen: stages that depend on time (maturity by age) are
    /// judged at it, so a back-filled event cannot move the stage back in time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub as_of: Option<OffsetDateTime>,
    /// The health facts the stage depends on, folded under the projection's policy (the
    /// lifecycle keeps no assessment or alerts in it).
    #[serde(default)]
    pub health: Health,
    /// Health's colour and purchase trend as of the latest event.
    #[serde(default)]
    pub verdict: Verdict,
}

impl Lifecycle {
    /// Folds one event, scoring health under `policy`. Returns the transition if the stage
    /// changed. Events at or below the stored version are ignored, which makes re-delivery
    /// harmless.
    pub fn apply(
        &mut self,
        event: &Event,
        occurred_at: OffsetDateTime,
        version: u64,
        policy: &Policy,
    ) -> Option<Transition> {
        if version <= self.version {
            return None;
        }
        self.version = version;
        // Business days are UTC days, also for events stored with the sender's offset
        // before the command path stored them in UTC.
        let occurred_at = occurred_at.to_offset(time::UtcOffset::UTC);
        // Only the colour and the purchase trend are needed here: the reasons, tier and
        // alerts are the health view's business.
        self.health.observe(event, occurred_at, version, policy);
        self.verdict = self.health.verdict(policy);
        match event {
            Event::ContractSigned(e) => {
                if self.active_contracts.is_empty() {
                    if self.stage == Some(Stage::Churned) {
                        self.won_back = true;
                    }
                    if self.stage == Some(Stage::Churned) || self.relationship_started_at.is_none()
                    {
                        self.relationship_started_at = Some(occurred_at);
                        self.renewed_or_expanded = false;
                        self.matured_in_good_health = false;
                    }
                }
                self.active_contracts.insert(e.contract_id.clone());
            }
            Event::ContractRenewed(_) | Event::ContractExpanded(_) => {
                self.renewed_or_expanded = true;
            }
            Event::ContractTerminated(e) => {
                self.active_contracts.remove(&e.contract_id);
            }
            _ => {}
        }
        // Inactive as the health rule has it ("no activity for 30 days" in the shipped
        // policy): a flag at the threshold, not followed by later activity, in this
        // relationship.
        self.inactive = self
            .health
            .inactive_days
            .is_some_and(|d| d >= policy.health.no_activity_days);
        let as_of = self.as_of.map_or(occurred_at, |t| t.max(occurred_at));
        self.as_of = Some(as_of);
        if let Some(started) = self.relationship_started_at
            && !self.active_contracts.is_empty()
            && as_of.date() >= crate::calendar::one_year_after(started.date())
            && self.color() == Color::Green
            && !self.inactive
        {
            self.matured_in_good_health = true;
        }
        let next = self.derive_stage();
        if Some(next) == self.stage {
            return None;
        }
        // The change is learnt at the latest business time seen, as the health view's alerts
        // are: a back-filled event never dates a stage before one already entered.
        let from = self.stage;
        self.stage = Some(next);
        self.since = Some(as_of);
        Some(Transition {
            from,
            to: next,
            at: as_of,
            version,
            event_type: event.event_type().to_owned(),
        })
    }

    /// The health colour as of the latest event (green before any).
    pub fn color(&self) -> Color {
        self.verdict.color
    }

    /// Purchases are falling as of the latest event (monthly totals down three months in a
    /// row).
    pub fn purchases_falling(&self) -> bool {
        self.verdict.purchases_falling
    }

    fn derive_stage(&self) -> Stage {
        if self.relationship_started_at.is_none() {
            return Stage::Acquisition;
        }
        if self.active_contracts.is_empty() {
            return Stage::Churned;
        }
        if self.inactive || self.color() == Color::Red || self.purchases_falling() {
            return Stage::Decline;
        }
        if self.renewed_or_expanded || self.matured_in_good_health {
            Stage::Maturity
        } else {
            Stage::Growth
        }
    }
}
