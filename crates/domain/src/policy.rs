//! The scoring policy: trust pricing, health weights and thresholds, tier cuts.
//!
//! Loaded from a versioned TOML file by the projector services; the domain only defines its
//! shape and ships the default (`policy/default.toml`).

use serde::{Deserialize, Serialize};

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Recorded on every view row the policy produced.
    pub version: String,
    pub trust: TrustPolicy,
    pub health: HealthPolicy,
    pub tier: TierPolicy,
}

/// Points per event. Deposits are positive, withdrawals negative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicy {
    pub on_time_delivery: i64,
    pub exceeded_expectations_bonus: i64,
    pub delay_per_day: i64,
    pub delay_cap: i64,
    pub complaint_minor: i64,
    pub complaint_major: i64,
    pub complaint_critical: i64,
    pub fast_resolution_hours: u32,
    pub fast_resolution: i64,
    pub response_sla_minutes: u32,
    pub fast_response: i64,
    pub slow_response: i64,
    pub renewal: i64,
    pub expansion: i64,
    pub value_add: i64,
    pub care_touch: i64,
}

/// Health-score weights (points subtracted from 100) and thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthPolicy {
    pub green_min: u32,
    pub yellow_min: u32,
    pub window_days: i64,
    pub no_activity_days: u32,
    pub no_activity: u32,
    pub order_value_down: u32,
    pub order_value_drop_percent: u32,
    pub complaint_on_record: u32,
    pub purchases_down_3_months: u32,
    pub key_contact_changed: u32,
    pub decision_maker_changed: u32,
    pub nps_detractor: u32,
    pub low_csat: u32,
    pub repeated_delays: u32,
    pub slow_responses: u32,
    pub low_trust_balance: u32,
    pub low_trust_threshold: i64,
}

/// Value-tier cuts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierPolicy {
    pub a_min_revenue_minor: i64,
    pub b_min_revenue_minor: i64,
    pub loyalty_days: i64,
}

/// The shipped default policy file.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../../policy/default.toml");
