//! Events: immutable facts, past-tense, snake_case `type` names on the wire.
//!
//! Payload shapes are versioned by [`Event::SCHEMA_VERSION`]; older versions are upcast by
//! the log adapter when read.

use serde::{Deserialize, Serialize};
use time::Date;

use crate::types::{
    CareTouchKind, ContactRole, ExpansionKind, InterventionAction, Severity, SurveyKind,
    ValueAddKind,
};

/// Every event the Customer aggregate records. Serialised adjacently tagged:
/// `{"type": "contract_signed", "payload": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum Event {
    CustomerRegistered(CustomerRegistered),
    ContractSigned(ContractSigned),
    ServiceDelivered(ServiceDelivered),
    ServiceDelayed(ServiceDelayed),
    RequestResponded(RequestResponded),
    ComplaintLogged(ComplaintLogged),
    ComplaintResolved(ComplaintResolved),
    ValueAddDelivered(ValueAddDelivered),
    CareTouchRecorded(CareTouchRecorded),
    SurveyAnswered(SurveyAnswered),
    PurchaseRecorded(PurchaseRecorded),
    ActivityRecorded(ActivityRecorded),
    KeyContactChanged(KeyContactChanged),
    RenewalMarkedDue(RenewalMarkedDue),
    ContractRenewed(ContractRenewed),
    ContractExpanded(ContractExpanded),
    ContractTerminated(ContractTerminated),
    InactivityFlagged(InactivityFlagged),
    InterventionLogged(InterventionLogged),
}

impl Event {
    /// The current schema version of every event payload written today.
    pub const SCHEMA_VERSION: u32 = 1;

    /// Every event `type` on the wire.
    pub const TYPES: &'static [&'static str] = &[
        "customer_registered",
        "contract_signed",
        "service_delivered",
        "service_delayed",
        "request_responded",
        "complaint_logged",
        "complaint_resolved",
        "value_add_delivered",
        "care_touch_recorded",
        "survey_answered",
        "purchase_recorded",
        "activity_recorded",
        "key_contact_changed",
        "renewal_marked_due",
        "contract_renewed",
        "contract_expanded",
        "contract_terminated",
        "inactivity_flagged",
        "intervention_logged",
    ];

    /// The snake_case `type` of this event.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::CustomerRegistered(_) => "customer_registered",
            Event::ContractSigned(_) => "contract_signed",
            Event::ServiceDelivered(_) => "service_delivered",
            Event::ServiceDelayed(_) => "service_delayed",
            Event::RequestResponded(_) => "request_responded",
            Event::ComplaintLogged(_) => "complaint_logged",
            Event::ComplaintResolved(_) => "complaint_resolved",
            Event::ValueAddDelivered(_) => "value_add_delivered",
            Event::CareTouchRecorded(_) => "care_touch_recorded",
            Event::SurveyAnswered(_) => "survey_answered",
            Event::PurchaseRecorded(_) => "purchase_recorded",
            Event::ActivityRecorded(_) => "activity_recorded",
            Event::KeyContactChanged(_) => "key_contact_changed",
            Event::RenewalMarkedDue(_) => "renewal_marked_due",
            Event::ContractRenewed(_) => "contract_renewed",
            Event::ContractExpanded(_) => "contract_expanded",
            Event::ContractTerminated(_) => "contract_terminated",
            Event::InactivityFlagged(_) => "inactivity_flagged",
            Event::InterventionLogged(_) => "intervention_logged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub name: String,
    pub segment: Option<String>,
    pub region: Option<String>,
    pub account_manager: Option<String>,
    pub acquisition_channel: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractSigned {
    pub contract_id: String,
    pub value_minor: i64,
    pub currency: String,
    pub starts_on: Date,
    pub ends_on: Date,
    pub notice_days: u32,
    /// True when a churned customer signs again.
    pub win_back: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDelivered {
    pub contract_id: String,
    pub service_id: String,
    pub promised_on: Date,
    pub delivered_on: Date,
    pub exceeded_expectations: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDelayed {
    pub contract_id: String,
    pub service_id: String,
    pub promised_on: Date,
    pub days_late: u32,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestResponded {
    pub request_id: String,
    pub response_minutes: u32,
    /// Whether the first response met the 120-minute SLA.
    pub within_sla: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplaintLogged {
    pub complaint_id: String,
    pub severity: Severity,
    pub topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplaintResolved {
    pub complaint_id: String,
    pub severity: Severity,
    pub resolution_hours: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueAddDelivered {
    pub kind: ValueAddKind,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CareTouchRecorded {
    pub kind: CareTouchKind,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyAnswered {
    pub kind: SurveyKind,
    pub score: u8,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRecorded {
    pub order_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub ordered_on: Date,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRecorded {
    pub day: Date,
    pub logins: u32,
    pub active_users: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyContactChanged {
    pub role: ContactRole,
    pub previous_contact: Option<String>,
    pub new_contact: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalMarkedDue {
    pub contract_id: String,
    pub term_ends_on: Date,
    pub notice_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractRenewed {
    pub contract_id: String,
    pub previous_ends_on: Date,
    pub new_ends_on: Date,
    pub value_minor: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractExpanded {
    pub contract_id: String,
    pub kind: ExpansionKind,
    pub added_value_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractTerminated {
    pub contract_id: String,
    pub reason: Option<String>,
    /// True when this was the customer's last active contract: the customer churns.
    pub churned: bool,
    /// True when the contract's term had already ended on the termination's business day
    /// without a renewal: it lapsed (the scheduler ends such contracts), rather than being
    /// ended early. Absent (false) in events written before it existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lapsed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InactivityFlagged {
    pub days_inactive: u32,
    pub last_activity_on: Option<Date>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterventionLogged {
    pub action: InterventionAction,
    pub note: Option<String>,
    pub alert_id: Option<String>,
}
