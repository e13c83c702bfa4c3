//! Why the domain refused a command.

use thiserror::Error;

/// A business rule refused the command. Each variant has a stable snake_case
/// [`code`](DomainError::code) that clients can rely on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("customer is not registered")]
    CustomerNotRegistered,
    #[error("customer is already registered")]
    CustomerAlreadyRegistered,
    #[error(
        "customer has churned; only sign_contract (win-back) and log_intervention are accepted"
    )]
    CustomerChurned,
    #[error("contract {0} already exists")]
    ContractAlreadyExists(String),
    #[error("contract {0} not found")]
    ContractNotFound(String),
    #[error("contract {0} is not active")]
    ContractNotActive(String),
    #[error("complaint {0} already exists")]
    ComplaintAlreadyExists(String),
    #[error("complaint {0} not found")]
    ComplaintNotFound(String),
    #[error("complaint {0} is already resolved")]
    ComplaintNotOpen(String),
    #[error("order {0} is already recorded")]
    DuplicateOrder(String),
    #[error("service {0} is already delivered")]
    ServiceAlreadyDelivered(String),
    #[error("request {0} already has its response")]
    RequestAlreadyResponded(String),
    #[error("{field} must be greater than zero")]
    InvalidAmount { field: &'static str },
    #[error("currency must be a three-letter ISO 4217 code, got {0:?}")]
    InvalidCurrency(String),
    #[error("{0}")]
    InvalidDates(&'static str),
    #[error("delivered_on is after promised_on; record a late delivery with delay_service")]
    DeliveryLate,
    #[error("{field} is out of range: {detail}")]
    OutOfRange {
        field: &'static str,
        detail: &'static str,
    },
    #[error("{field} must not be empty")]
    EmptyField { field: &'static str },
    #[error("{field} is longer than {max} characters")]
    FieldTooLong { field: &'static str, max: usize },
    #[error("{field} must not contain control characters (line breaks, tabs)")]
    ControlCharacter { field: &'static str },
    #[error(
        "contract {contract_id} is not inside its renewal notice window (not yet open, or the term has ended)"
    )]
    RenewalNotDue { contract_id: String },
    #[error("renewal of contract {contract_id} is already marked due for this term")]
    RenewalAlreadyMarked { contract_id: String },
    #[error("term_ends_on does not match the current end of contract {contract_id}")]
    TermMismatch { contract_id: String },
    #[error("occurred_at is in the future")]
    OccurredInFuture,
    #[error("the customer was active on {day}, inside the period flagged as inactive")]
    RecentlyActive { day: time::Date },
}

impl DomainError {
    /// One refusal of every kind, for documentation (the gateway's OpenAPI examples).
    pub fn examples() -> Vec<DomainError> {
        let c = || "c-2025-001".to_owned();
        vec![
            DomainError::CustomerNotRegistered,
            DomainError::CustomerAlreadyRegistered,
            DomainError::CustomerChurned,
            DomainError::ContractAlreadyExists(c()),
            DomainError::ContractNotFound(c()),
            DomainError::ContractNotActive(c()),
            DomainError::ComplaintAlreadyExists("q-7".into()),
            DomainError::ComplaintNotFound("q-7".into()),
            DomainError::ComplaintNotOpen("q-7".into()),
            DomainError::DuplicateOrder("o-42".into()),
            DomainError::ServiceAlreadyDelivered("s-3".into()),
            DomainError::RequestAlreadyResponded("r-9".into()),
            DomainError::InvalidAmount {
                field: "value_minor",
            },
            DomainError::InvalidCurrency("euro".into()),
            DomainError::InvalidDates("ends_on must be after starts_on"),
            DomainError::DeliveryLate,
            DomainError::OutOfRange {
                field: "score",
                detail: "NPS is 0..=10",
            },
            DomainError::EmptyField { field: "name" },
            DomainError::FieldTooLong {
                field: "name",
                max: 200,
            },
            DomainError::ControlCharacter {
                field: "contract_id",
            },
            DomainError::RenewalNotDue { contract_id: c() },
            DomainError::RenewalAlreadyMarked { contract_id: c() },
            DomainError::TermMismatch { contract_id: c() },
            DomainError::OccurredInFuture,
            DomainError::RecentlyActive {
                day: time::macros::date!(2025 - 05 - 31),
            },
        ]
    }

    /// The stable, machine-readable code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::CustomerNotRegistered => "customer_not_registered",
            DomainError::CustomerAlreadyRegistered => "customer_already_registered",
            DomainError::CustomerChurned => "customer_churned",
            DomainError::ContractAlreadyExists(_) => "contract_already_exists",
            DomainError::ContractNotFound(_) => "contract_not_found",
            DomainError::ContractNotActive(_) => "contract_not_active",
            DomainError::ComplaintAlreadyExists(_) => "complaint_already_exists",
            DomainError::ComplaintNotFound(_) => "complaint_not_found",
            DomainError::ComplaintNotOpen(_) => "complaint_not_open",
            DomainError::DuplicateOrder(_) => "duplicate_order",
            DomainError::ServiceAlreadyDelivered(_) => "service_already_delivered",
            DomainError::RequestAlreadyResponded(_) => "request_already_responded",
            DomainError::InvalidAmount { .. } => "invalid_amount",
            DomainError::InvalidCurrency(_) => "invalid_currency",
            DomainError::InvalidDates(_) => "invalid_dates",
            DomainError::DeliveryLate => "delivery_late",
            DomainError::OutOfRange { .. } => "out_of_range",
            DomainError::EmptyField { .. } => "empty_field",
            DomainError::FieldTooLong { .. } => "field_too_long",
            DomainError::ControlCharacter { .. } => "control_character",
            DomainError::RenewalNotDue { .. } => "renewal_not_due",
            DomainError::RenewalAlreadyMarked { .. } => "renewal_already_marked",
            DomainError::TermMismatch { .. } => "term_mismatch",
            DomainError::OccurredInFuture => "occurred_in_future",
            DomainError::RecentlyActive { .. } => "recently_active",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DomainError;

    /// `code()` matches exhaustively, so a new variant needs a new code; this keeps the
    /// documented examples in step: one per code, each code once.
    #[test]
    fn examples_cover_every_code_once() {
        let codes: Vec<&str> = DomainError::examples()
            .iter()
            .map(DomainError::code)
            .collect();
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "{codes:?}");
        assert_eq!(codes.len(), 25, "a DomainError variant has no example");
    }
}
