//! Turning untrusted JSON into a [`Command`], with stable error codes. Shared by every door.

use crm_domain::Command;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;

/// Largest accepted command body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A parsed command and its optional business time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCommand {
    pub command: Command,
    pub occurred_at: Option<OffsetDateTime>,
}

/// Parses a command body.
///
/// Codes: `malformed_json` (not JSON), `invalid_command` (not an object, a field of the
/// wrong type or missing), `missing_command_type`, `unknown_command_type`, `unknown_field`,
/// `invalid_occurred_at`.
pub fn parse_command(body: &[u8]) -> Result<ParsedCommand, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("body is not valid JSON: {e}"))
    })?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::bad_request(
            "invalid_command",
            "body must be a JSON object",
        ));
    };
    let ty = match obj.get("type") {
        None => {
            return Err(ApiError::bad_request(
                "missing_command_type",
                "body has no \"type\" field",
            ));
        }
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_command",
                "\"type\" must be a string",
            ));
        }
    };
    if !Command::TYPES.contains(&ty.as_str()) {
        let shown: String = ty.chars().take(64).collect();
        return Err(ApiError::bad_request(
            "unknown_command_type",
            format!("unknown command type {shown:?}"),
        ));
    }
    let occurred_at = match obj.remove("occurred_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let at = OffsetDateTime::parse(&s, &Rfc3339).map_err(|e| {
                ApiError::bad_request(
                    "invalid_occurred_at",
                    format!("occurred_at must be an RFC 3339 timestamp: {e}"),
                )
            })?;
            // A timestamp whose UTC instant has no RFC 3339 form cannot be stored.
            crm_domain::business_time(at)
                .map_err(|e| ApiError::bad_request("invalid_occurred_at", format!("{e}")))?;
            Some(at)
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_occurred_at",
                "occurred_at must be an RFC 3339 timestamp string",
            ));
        }
    };
    let command: Command = serde_json::from_value(Value::Object(obj)).map_err(|e| {
        let msg = e.to_string();
        let code = if msg.starts_with("unknown field") {
            "unknown_field"
        } else {
            "invalid_command"
        };
        ApiError::bad_request(code, format!("{ty}: {msg}"))
    })?;
    Ok(ParsedCommand {
        command,
        occurred_at,
    })
}

/// Validates an `Idempotency-Key` value.
pub fn idempotency_key(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw.map(str::trim) {
        None => Ok(None),
        Some("") => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must not be empty",
        )),
        Some(k) if k.len() > MAX_IDEMPOTENCY_KEY_LEN || k.chars().any(char::is_control) => {
            Err(ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY_LEN} printable characters"
                ),
            ))
        }
        Some(k) => Ok(Some(k.to_owned())),
    }
}

/// Longest `X-Correlation-Id` / `X-Causation-Id` kept on an event.
pub const MAX_TRACE_ID_LEN: usize = 255;

/// Validates an `X-Correlation-Id` or `X-Causation-Id` value (`name` for the message): at
/// most [`MAX_TRACE_ID_LEN`] printable characters, since it is kept on the event forever.
pub fn trace_id(name: &str, raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.len() > MAX_TRACE_ID_LEN || v.chars().any(char::is_control) => {
            Err(ApiError::bad_request(
                "invalid_header",
                format!("{name} must be at most {MAX_TRACE_ID_LEN} printable characters"),
            ))
        }
        Some(v) => Ok(Some(v.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> &'static str {
        match parse_command(body.as_bytes()) {
            Err(e) => e.status_and_code().1,
            Ok(_) => "ok",
        }
    }

    #[test]
    fn codes_for_bad_bodies() {
        assert_eq!(code("{"), "malformed_json");
        assert_eq!(code("[]"), "invalid_command");
        assert_eq!(code("{}"), "missing_command_type");
        assert_eq!(code(r#"{"type":"launch_rocket"}"#), "unknown_command_type");
        assert_eq!(
            code(r#"{"type":"register_customer","name":"A","x":1}"#),
            "unknown_field"
        );
        assert_eq!(code(r#"{"type":"register_customer"}"#), "invalid_command");
        assert_eq!(
            code(r#"{"type":"register_customer","name":5}"#),
            "invalid_command"
        );
        assert_eq!(
            code(r#"{"type":"register_customer","name":"A","occurred_at":"yesterday"}"#),
            "invalid_occurred_at"
        );
        assert_eq!(
            code(r#"{"type":"register_customer","name":"A","occurred_at":"2025-01-01T00:00:00Z"}"#),
            "ok"
        );
    }

    /// Timestamps RFC 3339 parses whose UTC instant it cannot write (the log stores UTC):
    /// refused at the door, not a panic (9999-12-31T23:00-01:00 is year 10000 in UTC) or
    /// an unreadable event (0000-01-01T00:00+01:00 is year -1).
    #[test]
    fn occurred_at_outside_the_years_utc_can_write_is_refused() {
        for at in [
            "9999-12-31T23:00:00-01:00",
            "9999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00+01:00",
        ] {
            let body = format!(r#"{{"type":"register_customer","name":"A","occurred_at":"{at}"}}"#);
            assert_eq!(code(&body), "invalid_occurred_at", "{at}");
        }
        for at in ["9999-12-31T23:00:00+01:00", "0000-01-01T00:00:00-01:00"] {
            let body = format!(r#"{{"type":"register_customer","name":"A","occurred_at":"{at}"}}"#);
            assert_eq!(code(&body), "ok", "{at}");
        }
    }
}
