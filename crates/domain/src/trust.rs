//! The trust account (seed 000): kept promises and acts beyond the contract are deposits;
//! delays, mistakes and complaints are withdrawals. Pure pricing of one event.

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::policy::TrustPolicy;
use crate::types::Severity;

/// The three tiers of credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustTier {
    /// Contract fulfilment, response speed, problem-resolution speed.
    Basic,
    /// Insight reports, partner introductions, custom solutions.
    ValueAdded,
    /// Birthday and holiday care, shared community activities.
    Emotional,
}

impl TrustTier {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            TrustTier::Basic => "basic",
            TrustTier::ValueAdded => "value_added",
            TrustTier::Emotional => "emotional",
        }
    }
}

/// One deposit (positive) or withdrawal (negative) and the rule that priced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub tier: TrustTier,
    pub points: i64,
    pub rule: &'static str,
}

fn entry(tier: TrustTier, points: i64, rule: &'static str) -> Option<Entry> {
    (points != 0).then_some(Entry { tier, points, rule })
}

/// The entries one event produces under `policy` (none for most event types).
pub fn price(event: &Event, policy: &TrustPolicy) -> Vec<Entry> {
    use TrustTier::*;
    let entries = match event {
        Event::ServiceDelivered(e) => vec![
            entry(Basic, policy.on_time_delivery, "on_time_delivery"),
            if e.exceeded_expectations {
                entry(
                    Basic,
                    policy.exceeded_expectations_bonus,
                    "exceeded_expectations",
                )
            } else {
                None
            },
        ],
        Event::ServiceDelayed(e) => {
            let raw = policy.delay_per_day.saturating_mul(i64::from(e.days_late));
            // Withdrawals are negative: the cap is the most negative value allowed.
            vec![entry(Basic, raw.max(policy.delay_cap), "service_delay")]
        }
        Event::RequestResponded(e) => {
            if e.response_minutes <= policy.response_sla_minutes {
                vec![entry(Basic, policy.fast_response, "fast_response")]
            } else {
                vec![entry(Basic, policy.slow_response, "slow_response")]
            }
        }
        Event::ComplaintLogged(e) => vec![match e.severity {
            Severity::Minor => entry(Basic, policy.complaint_minor, "complaint_minor"),
            Severity::Major => entry(Basic, policy.complaint_major, "complaint_major"),
            Severity::Critical => entry(Basic, policy.complaint_critical, "complaint_critical"),
        }],
        Event::ComplaintResolved(e) if e.resolution_hours <= policy.fast_resolution_hours => {
            vec![entry(Basic, policy.fast_resolution, "fast_resolution")]
        }
        Event::ContractRenewed(_) => vec![entry(Basic, policy.renewal, "renewal")],
        Event::ContractExpanded(_) => vec![entry(Basic, policy.expansion, "expansion")],
        Event::ValueAddDelivered(_) => vec![entry(ValueAdded, policy.value_add, "value_add")],
        Event::CareTouchRecorded(_) => vec![entry(Emotional, policy.care_touch, "care_touch")],
        _ => vec![],
    };
    entries.into_iter().flatten().collect()
}

/// Balances per tier and in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    pub basic: i64,
    pub value_added: i64,
    pub emotional: i64,
}

impl Balances {
    /// Adds one entry.
    pub fn add(&mut self, e: &Entry) {
        match e.tier {
            TrustTier::Basic => self.basic += e.points,
            TrustTier::ValueAdded => self.value_added += e.points,
            TrustTier::Emotional => self.emotional += e.points,
        }
    }

    /// The total balance.
    pub fn total(&self) -> i64 {
        self.basic + self.value_added + self.emotional
    }
}
