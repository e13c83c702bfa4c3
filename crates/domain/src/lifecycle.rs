//! The lifecycle-stage model (seed 000): acquisition → growth → maturity → decline, plus
//! churned and a won-back flag.
//!
//! Pure: the lifecycle projection folds each customer's events through
//! [`Lifecycle::apply`] and stores the result. Only business time (`occurred_at`) is used,
//! so a replay always gives the same stages.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::Event;

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

/// Days of good health in the first term after which a customer counts as mature.
pub const MATURITY_AFTER_DAYS: i64 = 365;
/// An inactivity flag of at least this many days puts a customer in decline.
pub const DECLINE_INACTIVE_DAYS: u32 = 30;

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
    pub inactive: bool,
    pub won_back: bool,
    /// The latest business time seen: stages that depend on time (maturity by age) are
    /// judged at it, so a back-filled event cannot move the stage back in time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub as_of: Option<OffsetDateTime>,
}

impl Lifecycle {
    /// Folds one event. Returns the transition if the stage changed. Events at or below the
    /// stored version are ignored, which makes re-delivery harmless.
    pub fn apply(
        &mut self,
        event: &Event,
        occurred_at: OffsetDateTime,
        version: u64,
    ) -> Option<Transition> {
        if version <= self.version {
            return None;
        }
        self.version = version;
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
            Event::InactivityFlagged(e) if e.days_inactive >= DECLINE_INACTIVE_DAYS => {
                self.inactive = true;
            }
            Event::ActivityRecorded(_) => self.inactive = false,
            _ => {}
        }
        let as_of = self.as_of.map_or(occurred_at, |t| t.max(occurred_at));
        self.as_of = Some(as_of);
        let next = self.derive_stage(as_of);
        if Some(next) == self.stage {
            return None;
        }
        let from = self.stage;
        self.stage = Some(next);
        self.since = Some(occurred_at);
        Some(Transition {
            from,
            to: next,
            at: occurred_at,
            version,
            event_type: event.event_type().to_owned(),
        })
    }

    fn derive_stage(&self, at: OffsetDateTime) -> Stage {
        let Some(started) = self.relationship_started_at else {
            return Stage::Acquisition;
        };
        if self.active_contracts.is_empty() {
            return Stage::Churned;
        }
        if self.inactive {
            return Stage::Decline;
        }
        let mature_by_age = (at - started).whole_days() >= MATURITY_AFTER_DAYS;
        if self.renewed_or_expanded || mature_by_age {
            Stage::Maturity
        } else {
            Stage::Growth
        }
    }
}
