//! The event envelope: one JSON object per message, with a per-customer hash chain.
//!
//! The hash is SHA-256 over the canonical encoding of the envelope without its `hash`
//! field: compact JSON with object keys sorted (`jq -cS 'del(.hash)'` gives the same bytes
//! for ASCII content). Each envelope carries the previous event's hash of the same customer
//! (`prev_hash`, [`GENESIS_HASH`] for the first), so altering, removing or reordering any
//! event breaks every later link.

use std::borrow::Cow;

use crm_domain::{CustomerId, Event};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::LogError;

mod stored;

/// `prev_hash` of a customer's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who sent a command and why: recorded on the event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Service or principal that sent the command.
    pub actor: String,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// One event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope {
    pub event_id: Uuid,
    pub customer_id: CustomerId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    /// Per-customer version, 1..n without gaps.
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    pub actor: String,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// With an idempotency key: SHA-256 of the request the key came with (the command's
    /// type and fields, and `occurred_at` when the caller gave it), so the key reused for a
    /// different request is refused instead of answered with this event. Absent without a
    /// key, and on events written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Payload,
    pub prev_hash: String,
    pub hash: String,
}

/// An event's payload: its JSON text, kept as the log stores it. Reading an event parses the
/// text once, straight into the domain event (no `serde_json::Value` in between), and
/// writing one copies it.
///
/// Payloads written by [`Envelope::seal`] are canonical (compact, object keys sorted); two
/// payloads are equal when their texts are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// The canonical text of `value` (`serde_json::Value` keeps object keys sorted).
    pub fn from_value(value: &serde_json::Value) -> Self {
        // Writing a `Value` out cannot fail, and its output is valid JSON.
        let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        Self(RawValue::from_string(text).unwrap_or_else(|_| null_payload()))
    }

    /// The payload as a JSON value (for reading single fields, or rewriting it).
    pub fn to_value(&self) -> serde_json::Value {
        // The text was valid JSON when it was parsed or written.
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The canonical form: compact, keys sorted (itself when it already is; only a payload
    /// written by someone else, or altered, can differ).
    fn canonical(&self) -> Cow<'_, RawValue> {
        let canonical = Self::from_value(&self.to_value());
        if canonical.get() == self.get() {
            Cow::Borrowed(&self.0)
        } else {
            Cow::Owned(canonical.0)
        }
    }
}

fn null_payload() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Payload {}

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        Self::from_value(&value)
    }
}

/// Why an envelope could not be turned into a domain event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid envelope JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown schema version {version} of {event_type}")]
    UnknownSchema { event_type: String, version: u32 },
}

impl Envelope {
    /// Builds and seals a new envelope for `event`.
    #[allow(clippy::too_many_arguments)] // a constructor of a flat record; a builder adds nothing
    pub fn seal(
        event_id: Uuid,
        customer_id: CustomerId,
        version: u64,
        event: &Event,
        occurred_at: OffsetDateTime,
        recorded_at: OffsetDateTime,
        meta: &Metadata,
        request_hash: Option<String>,
        prev_hash: &str,
    ) -> Result<Self, LogError> {
        Self::seal_encoded(
            event_id,
            customer_id,
            version,
            event,
            occurred_at,
            recorded_at,
            meta,
            request_hash,
            prev_hash,
        )
        .map(|(envelope, _)| envelope)
    }

    /// [`Envelope::seal`], with the bytes the log stores for the envelope (what
    /// [`Envelope::to_bytes`] gives), written from the canonical encoding the hash was
    /// computed over instead of serialising the envelope a second time.
    #[allow(clippy::too_many_arguments)] // as `seal`
    pub fn seal_encoded(
        event_id: Uuid,
        customer_id: CustomerId,
        version: u64,
        event: &Event,
        occurred_at: OffsetDateTime,
        recorded_at: OffsetDateTime,
        meta: &Metadata,
        request_hash: Option<String>,
        prev_hash: &str,
    ) -> Result<(Self, Vec<u8>), LogError> {
        // Serialising a derived enum of plain data cannot fail. The `Value` sorts the
        // payload's keys; it is written out once, without being parsed back.
        let payload = match serde_json::to_value(event) {
            Ok(serde_json::Value::Object(mut tagged)) => {
                let value = tagged.remove("payload").unwrap_or_default();
                serde_json::value::to_raw_value(&value).unwrap_or_else(|_| null_payload())
            }
            _ => null_payload(),
        };
        let mut envelope = Envelope {
            event_id,
            customer_id,
            event_type: event.event_type().to_owned(),
            schema_version: Event::SCHEMA_VERSION,
            version,
            occurred_at: truncate_micros(occurred_at),
            recorded_at: truncate_micros(recorded_at),
            actor: meta.actor.clone(),
            correlation_id: meta.correlation_id.clone(),
            causation_id: meta.causation_id.clone(),
            idempotency_key: meta.idempotency_key.clone(),
            request_hash,
            payload: Payload(payload),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        // The payload was just written canonically.
        // The one way this fails is a time with no RFC 3339 form (a UTC year outside
        // 0000..=9999): refused here, so nothing unreadable is ever published.
        let mut bytes = envelope
            .encode(&envelope.payload.0, None)
            .map_err(|e| LogError::Encode(format!("event {}: {e}", envelope.event_id)))?;
        envelope.hash = sha256_hex(&bytes);
        // The stored form is the canonical one with `hash` as its last field: the same
        // bytes `encode` writes with the hash.
        bytes.pop();
        bytes.extend_from_slice(br#","hash":""#);
        bytes.extend_from_slice(envelope.hash.as_bytes());
        bytes.extend_from_slice(br#""}"#);
        Ok((envelope, bytes))
    }

    /// The hash this envelope should carry: SHA-256 of [`Envelope::canonical_bytes`].
    pub fn compute_hash(&self) -> String {
        sha256_hex(&self.canonical_bytes())
    }

    /// The canonical encoding the hash covers: compact JSON of every field but `hash`, keys
    /// sorted. Written in one pass from borrowed fields and the payload in its canonical
    /// form; byte for byte what serialising the envelope into a `Value`, removing `hash` and
    /// writing it out gives, which is how it was computed before (a test holds the two
    /// equal).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // An envelope that was sealed or read from the log encodes (sealing refuses any
        // that does not).
        self.encode(&self.payload.canonical(), None)
            .unwrap_or_default()
    }

    /// Every field but `hash` with keys sorted, `payload` in place of the envelope's, and
    /// then `hash` when given: the canonical encoding without it, the stored form with it.
    fn encode(&self, payload: &RawValue, hash: Option<&str>) -> serde_json::Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Fields<'a> {
            actor: &'a str,
            causation_id: &'a Option<String>,
            correlation_id: &'a Option<String>,
            customer_id: &'a CustomerId,
            event_id: &'a Uuid,
            idempotency_key: &'a Option<String>,
            #[serde(with = "time::serde::rfc3339")]
            occurred_at: OffsetDateTime,
            payload: &'a RawValue,
            prev_hash: &'a str,
            #[serde(with = "time::serde::rfc3339")]
            recorded_at: OffsetDateTime,
            #[serde(skip_serializing_if = "Option::is_none")]
            request_hash: &'a Option<String>,
            schema_version: u32,
            #[serde(rename = "type")]
            event_type: &'a str,
            version: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            hash: Option<&'a str>,
        }
        let fields = Fields {
            actor: &self.actor,
            causation_id: &self.causation_id,
            correlation_id: &self.correlation_id,
            customer_id: &self.customer_id,
            event_id: &self.event_id,
            idempotency_key: &self.idempotency_key,
            occurred_at: self.occurred_at,
            payload,
            prev_hash: &self.prev_hash,
            recorded_at: self.recorded_at,
            request_hash: &self.request_hash,
            schema_version: self.schema_version,
            event_type: &self.event_type,
            version: self.version,
            hash,
        };
        // Plain data with string keys: only a time outside RFC 3339's years fails.
        serde_json::to_vec(&fields)
    }

    /// Whether the stored hash matches the content.
    pub fn hash_is_valid(&self) -> bool {
        self.hash == self.compute_hash()
    }

    /// The JSON bytes written to the log: the fields in canonical order (keys sorted, the
    /// payload as it is), then `hash`.
    pub fn to_bytes(&self) -> Vec<u8> {
        // As `canonical_bytes`: a sealed or stored envelope encodes.
        self.encode(&self.payload.0, Some(&self.hash))
            .unwrap_or_default()
    }

    /// Parses stored bytes: those in the layout the log stores ([`Envelope::to_bytes`])
    /// without serde's general decoder ([`stored`]), anything else with it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        match stored::decode(bytes) {
            Some(envelope) => Ok(envelope),
            None => Ok(serde_json::from_slice(bytes)?),
        }
    }

    /// The domain event, upcast from older schema versions. The payload text is parsed
    /// once, straight into the event: the tag comes first, so serde knows the variant
    /// before it reaches the payload and does not buffer it.
    pub fn event(&self) -> Result<Event, DecodeError> {
        let payload = upcast(&self.event_type, self.schema_version, &self.payload)?;
        let payload = payload.get();
        let mut tagged = Vec::with_capacity(payload.len() + self.event_type.len() + 24);
        tagged.extend_from_slice(br#"{"type":"#);
        serde_json::to_writer(&mut tagged, &self.event_type)?;
        tagged.extend_from_slice(br#","payload":"#);
        tagged.extend_from_slice(payload.as_bytes());
        tagged.push(b'}');
        Ok(serde_json::from_slice(&tagged)?)
    }
}

/// SHA-256 hex of the canonical encoding of a JSON value. `serde_json::Value` keeps object
/// keys sorted (the `preserve_order` feature is off), which makes the encoding canonical.
pub fn hash_canonical(value: &serde_json::Value) -> String {
    sha256_hex(&serde_json::to_vec(value).unwrap_or_default())
}

/// SHA-256 of `bytes` in lower-case hex.
fn sha256_hex(bytes: &[u8]) -> String {
    let mut hex = [0u8; 64];
    // 32 bytes always fit 64 hex digits, which are ASCII.
    let _ = hex::encode_to_slice(Sha256::digest(bytes), &mut hex);
    String::from_utf8_lossy(&hex).into_owned()
}

/// Upcasts a payload to the current schema version. Version 1 is the only one so far; a
/// future version 2 adds an arm here that rewrites version-1 payloads (through
/// [`Payload::to_value`] and [`Payload::from_value`]), so readers only ever see current
/// shapes.
pub fn upcast<'a>(
    event_type: &str,
    schema_version: u32,
    payload: &'a Payload,
) -> Result<Cow<'a, Payload>, DecodeError> {
    match schema_version {
        Event::SCHEMA_VERSION => Ok(Cow::Borrowed(payload)),
        other => Err(DecodeError::UnknownSchema {
            event_type: event_type.to_owned(),
            version: other,
        }),
    }
}

/// Timestamps are stored with microsecond precision, like SQL databases keep them.
fn truncate_micros(t: OffsetDateTime) -> OffsetDateTime {
    let micros = t.nanosecond() / 1_000 * 1_000;
    t.replace_nanosecond(micros).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_domain::event::CustomerRegistered;
    use time::macros::datetime;

    /// The first event of a customer, sealed with business time `occurred_at`.
    fn registered(occurred_at: OffsetDateTime) -> Result<Envelope, LogError> {
        Envelope::seal(
            Uuid::nil(),
            CustomerId::new(Uuid::nil()),
            1,
            &Event::CustomerRegistered(CustomerRegistered {
                name: "Acme".into(),
                segment: None,
                region: None,
                account_manager: None,
                acquisition_channel: None,
            }),
            occurred_at,
            datetime!(2025-01-01 00:00:01.123456789 UTC),
            &Metadata::default(),
            None,
            GENESIS_HASH,
        )
    }

    fn sample() -> Envelope {
        registered(datetime!(2025-01-01 00:00 UTC)).expect("seal")
    }

    /// A time RFC 3339 cannot write (year -1 in UTC) is refused by sealing: nothing that
    /// would read back as undecodable is ever produced.
    #[test]
    fn sealing_refuses_a_time_with_no_rfc3339_form() {
        let at = datetime!(0000-01-01 00:00 +01:00).to_offset(time::UtcOffset::UTC);
        let sealed = registered(at);
        assert!(
            matches!(sealed, Err(LogError::Encode(_))),
            "sealed: {sealed:?}"
        );
    }

    #[test]
    fn hash_survives_a_round_trip_through_bytes() {
        let e = sample();
        assert!(e.hash_is_valid());
        let back = Envelope::from_bytes(&e.to_bytes()).expect("parse");
        assert_eq!(back, e);
        assert!(back.hash_is_valid());
        assert_eq!(
            back.event().expect("decode").event_type(),
            "customer_registered"
        );
    }

    /// The bytes sealing writes are the bytes `to_bytes` writes, and without `hash` they
    /// are the canonical encoding the hash covers (`jq -cS 'del(.hash)'`).
    #[test]
    fn sealed_bytes_are_the_stored_form() {
        let meta = Metadata {
            actor: "crm \"ops\" ünïcode".into(),
            correlation_id: Some("c-1".into()),
            causation_id: None,
            idempotency_key: Some("k\n1".into()),
        };
        for request_hash in [None, Some("ab".repeat(32))] {
            let (e, bytes) = Envelope::seal_encoded(
                Uuid::now_v7(),
                CustomerId::new(Uuid::now_v7()),
                3,
                &Event::CustomerRegistered(CustomerRegistered {
                    name: "Ac\"me\u{1F600}".into(),
                    segment: Some("smb".into()),
                    region: None,
                    account_manager: None,
                    acquisition_channel: None,
                }),
                datetime!(2025-01-01 00:00 +08:00),
                datetime!(2025-01-01 00:00:01.123456789 UTC),
                &meta,
                request_hash.clone(),
                &"12".repeat(32),
            )
            .expect("seal");
            assert_eq!(bytes, e.to_bytes());
            assert!(e.hash_is_valid());
            let back = Envelope::from_bytes(&bytes).expect("parse");
            assert_eq!(back, e);
            assert_eq!(back.request_hash, request_hash);
            let mut value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            value.as_object_mut().expect("object").remove("hash");
            assert_eq!(
                serde_json::to_vec(&value).expect("json"),
                e.canonical_bytes()
            );
            assert!(bytes.ends_with(format!(r#","hash":"{}"}}"#, e.hash).as_bytes()));
        }
    }

    /// Without a request hash the field is not written at all, so envelopes written before
    /// it existed keep their bytes and their hashes; with one, the hash covers it.
    #[test]
    fn the_request_hash_is_written_and_hashed_only_when_present() {
        let e = sample();
        assert!(
            !String::from_utf8(e.to_bytes())
                .expect("utf8")
                .contains("request_hash")
        );
        assert!(
            !String::from_utf8(e.canonical_bytes())
                .expect("utf8")
                .contains("request_hash")
        );
        let mut keyed = e.clone();
        keyed.request_hash = Some("cd".repeat(32));
        assert!(!keyed.hash_is_valid(), "the request hash is not covered");
        let back = Envelope::from_bytes(&keyed.to_bytes()).expect("parse");
        assert_eq!(back.request_hash, keyed.request_hash);
    }

    #[test]
    fn any_change_breaks_the_hash() {
        let mut e = sample();
        let mut payload = e.payload.to_value();
        payload["name"] = serde_json::json!("Evil");
        e.payload = payload.into();
        assert!(!e.hash_is_valid());
        let mut e = sample();
        e.version = 2;
        assert!(!e.hash_is_valid());
    }

    /// The canonical bytes equal the reference encoding: the envelope as a `Value`
    /// (sorted keys), without `hash`, written compactly. Checked over envelopes with every
    /// optional field set and unset, nested payloads and characters that need escaping.
    #[test]
    fn canonical_bytes_equal_the_sorted_value_encoding() {
        let reference = |e: &Envelope| {
            let mut v = serde_json::to_value(e).expect("value");
            v.as_object_mut().expect("object").remove("hash");
            serde_json::to_vec(&v).expect("bytes")
        };
        let mut e = sample();
        assert_eq!(e.canonical_bytes(), reference(&e));
        e.correlation_id = Some("corr \"quoted\" \\ é ☃ \u{1}".into());
        e.causation_id = Some("cause".into());
        e.idempotency_key = Some("key-1".into());
        e.request_hash = Some("ab".repeat(32));
        e.actor = "billing/ü".into();
        e.payload = serde_json::json!({
            "z": [1, 2.5, -3, {"b": null, "a": true}],
            "a": {"y": "x", "x": 18446744073709551615u64},
            "m": "line\nbreak\ttab"
        })
        .into();
        e.version = u64::MAX;
        e.recorded_at = time::macros::datetime!(2026-11-23 12:00:00.000001 +00:00);
        assert_eq!(e.canonical_bytes(), reference(&e));
        assert_eq!(e.compute_hash(), hex::encode(Sha256::digest(reference(&e))));
    }

    /// A payload whose text is not canonical (keys out of order, spaces: written by
    /// someone else, or re-encoded) hashes as its canonical form, as `jq -cS` computes it;
    /// its text is kept as it is.
    #[test]
    fn a_payload_out_of_canonical_form_hashes_as_its_canonical_form() {
        let e = sample();
        let mut bytes: serde_json::Value = serde_json::from_slice(&e.to_bytes()).expect("json");
        bytes["payload"] = serde_json::Value::Null;
        let text = String::from_utf8(serde_json::to_vec(&bytes).expect("bytes")).expect("utf8");
        let shuffled = text.replace(
            r#""payload":null"#,
            r#""payload":{ "segment" : null, "region":null,"name":"Acme", "account_manager":null,"acquisition_channel":null}"#,
        );
        let back = Envelope::from_bytes(shuffled.as_bytes()).expect("parse");
        assert_ne!(back.payload.get(), e.payload.get());
        assert_eq!(back.canonical_bytes(), e.canonical_bytes());
        assert!(back.hash_is_valid());
        assert_eq!(back.event().expect("decode"), e.event().expect("decode"));
        assert!(
            String::from_utf8(back.to_bytes())
                .expect("utf8")
                .contains(r#""segment" : null"#)
        );
    }

    #[test]
    fn unknown_schema_versions_are_refused() {
        let mut e = sample();
        e.schema_version = 99;
        assert!(matches!(e.event(), Err(DecodeError::UnknownSchema { .. })));
    }
}
