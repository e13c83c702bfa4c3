//! One module per resource.

pub mod admin;
pub mod audit;
pub mod commands;
pub mod customers;
pub mod health;
pub mod views;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use crm_domain::CustomerId;

use crate::error::ApiError;

/// The `{customer_id}` path segment as sent. It never refuses a request itself, so the
/// handler checks the caller's key first (an anonymous caller hears 401 whatever the path):
/// a segment that is not even text (a percent-encoded byte that is not UTF-8) becomes the
/// empty string, which [`customer_id`] refuses as `invalid_customer_id` in the JSON error
/// shape, where axum's own `Path` would answer in plain text.
pub struct CustomerPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for CustomerPath {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(CustomerPath(
            Path::<String>::from_request_parts(parts, state)
                .await
                .map_or_else(|_| String::new(), |Path(raw)| raw),
        ))
    }
}

/// A refusal sent before the request's body was read: the connection cannot carry
/// another request, so the answer says `Connection: close` (a client would otherwise send
/// its next request on a connection the server is closing).
pub(crate) fn refused_unread(refusal: ApiError) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = refusal.into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// Parses the `{customer_id}` path segment.
pub fn customer_id(raw: &str) -> Result<CustomerId, ApiError> {
    CustomerId::parse(raw)
        .map_err(|_| ApiError::bad_request("invalid_customer_id", "customer_id must be a UUID"))
}

/// Deserialises an optional query parameter, taking an empty value (`?type=`) for an absent
/// one, as the gRPC doors take an empty field: a template such as
/// `/v1/audit/events?customer_id=&type=` filled in part means "no filter" for the rest.
pub(crate) fn empty_is_absent<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let raw: Option<String> = serde::Deserialize::deserialize(d)?;
    match raw.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(serde::de::Error::custom),
    }
}
