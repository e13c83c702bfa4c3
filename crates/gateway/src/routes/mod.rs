//! One module per resource.

pub mod admin;
pub mod audit;
pub mod commands;
pub mod customers;
pub mod health;
pub mod views;

use crm_domain::CustomerId;

use crate::error::ApiError;

/// Parses the `{customer_id}` path segment.
pub fn customer_id(raw: &str) -> Result<CustomerId, ApiError> {
    CustomerId::parse(raw)
        .map_err(|_| ApiError::bad_request("invalid_customer_id", "customer_id must be a UUID"))
}
