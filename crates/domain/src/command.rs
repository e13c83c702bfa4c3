//! Commands: what an internal service asks the system to record.
//!
//! The wire form is a JSON object with a snake_case `type` and the command's fields; unknown
//! fields are refused. `occurred_at` is not part of a command: it travels beside it in a
//! [`Submission`](crate::Submission).

use serde::{Deserialize, Serialize};
use time::Date;

use crate::types::{
    CareTouchKind, ContactRole, ExpansionKind, InterventionAction, Severity, SurveyKind,
    ValueAddKind,
};

/// Every command the Customer aggregate accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    RegisterCustomer(RegisterCustomer),
    SignContract(SignContract),
    DeliverService(DeliverService),
    DelayService(DelayService),
    RespondToRequest(RespondToRequest),
    LogComplaint(LogComplaint),
    ResolveComplaint(ResolveComplaint),
    DeliverValueAdd(DeliverValueAdd),
    RecordCareTouch(RecordCareTouch),
    RecordSurvey(RecordSurvey),
    RecordPurchase(RecordPurchase),
    RecordActivity(RecordActivity),
    ChangeKeyContact(ChangeKeyContact),
    MarkRenewalDue(MarkRenewalDue),
    RenewContract(RenewContract),
    ExpandContract(ExpandContract),
    TerminateContract(TerminateContract),
    FlagInactivity(FlagInactivity),
    LogIntervention(LogIntervention),
}

impl Command {
    /// Every command `type` accepted on the wire.
    pub const TYPES: &'static [&'static str] = &[
        "register_customer",
        "sign_contract",
        "deliver_service",
        "delay_service",
        "respond_to_request",
        "log_complaint",
        "resolve_complaint",
        "deliver_value_add",
        "record_care_touch",
        "record_survey",
        "record_purchase",
        "record_activity",
        "change_key_contact",
        "mark_renewal_due",
        "renew_contract",
        "expand_contract",
        "terminate_contract",
        "flag_inactivity",
        "log_intervention",
    ];

    /// The `type` of the event this command becomes when accepted.
    pub fn event_type(&self) -> &'static str {
        let i = Command::TYPES
            .iter()
            .position(|t| *t == self.command_type())
            .unwrap_or(0);
        crate::event::Event::TYPES[i]
    }

    /// The snake_case `type` of this command.
    pub fn command_type(&self) -> &'static str {
        match self {
            Command::RegisterCustomer(_) => "register_customer",
            Command::SignContract(_) => "sign_contract",
            Command::DeliverService(_) => "deliver_service",
            Command::DelayService(_) => "delay_service",
            Command::RespondToRequest(_) => "respond_to_request",
            Command::LogComplaint(_) => "log_complaint",
            Command::ResolveComplaint(_) => "resolve_complaint",
            Command::DeliverValueAdd(_) => "deliver_value_add",
            Command::RecordCareTouch(_) => "record_care_touch",
            Command::RecordSurvey(_) => "record_survey",
            Command::RecordPurchase(_) => "record_purchase",
            Command::RecordActivity(_) => "record_activity",
            Command::ChangeKeyContact(_) => "change_key_contact",
            Command::MarkRenewalDue(_) => "mark_renewal_due",
            Command::RenewContract(_) => "renew_contract",
            Command::ExpandContract(_) => "expand_contract",
            Command::TerminateContract(_) => "terminate_contract",
            Command::FlagInactivity(_) => "flag_inactivity",
            Command::LogIntervention(_) => "log_intervention",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterCustomer {
    pub name: String,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub account_manager: Option<String>,
    #[serde(default)]
    pub acquisition_channel: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignContract {
    pub contract_id: String,
    pub value_minor: i64,
    pub currency: String,
    pub starts_on: Date,
    pub ends_on: Date,
    #[serde(default)]
    pub notice_days: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeliverService {
    pub contract_id: String,
    pub service_id: String,
    pub promised_on: Date,
    pub delivered_on: Date,
    #[serde(default)]
    pub exceeded_expectations: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DelayService {
    pub contract_id: String,
    pub service_id: String,
    pub promised_on: Date,
    pub days_late: u32,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RespondToRequest {
    pub request_id: String,
    pub response_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogComplaint {
    pub complaint_id: String,
    pub severity: Severity,
    #[serde(default)]
    pub topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResolveComplaint {
    pub complaint_id: String,
    pub resolution_hours: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeliverValueAdd {
    pub kind: ValueAddKind,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordCareTouch {
    pub kind: CareTouchKind,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordSurvey {
    pub kind: SurveyKind,
    pub score: u8,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordPurchase {
    pub order_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub ordered_on: Date,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordActivity {
    pub day: Date,
    pub logins: u32,
    #[serde(default)]
    pub active_users: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangeKeyContact {
    pub role: ContactRole,
    #[serde(default)]
    pub previous_contact: Option<String>,
    pub new_contact: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MarkRenewalDue {
    pub contract_id: String,
    pub term_ends_on: Date,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewContract {
    pub contract_id: String,
    pub new_ends_on: Date,
    #[serde(default)]
    pub value_minor: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExpandContract {
    pub contract_id: String,
    pub kind: ExpansionKind,
    pub added_value_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TerminateContract {
    pub contract_id: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// The term being ended: when given, the command is refused with `term_mismatch` if
    /// the contract's current term ends on another day (it was renewed meanwhile). The
    /// scheduler's lapse pass always gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_ends_on: Option<Date>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FlagInactivity {
    pub days_inactive: u32,
    #[serde(default)]
    pub last_activity_on: Option<Date>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogIntervention {
    pub action: InterventionAction,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub alert_id: Option<String>,
}
