//! Reading an envelope in exactly the form the log stores it, without serde's general
//! machinery.
//!
//! Every envelope [`Envelope::seal_encoded`] writes has the same layout: compact JSON, the
//! keys in one fixed order (sorted, then `hash`), `request_hash` present or not. serde's
//! derived decoder does not know that: for every key it reads the name, matches it against
//! every field, and checks the order-free struct for duplicates, and each string goes
//! through its escape scanner. On a projector catching up, that decoding was about a sixth
//! of the process's CPU (docs/benchmarks.md, 2026-12-04 night).
//!
//! [`decode`] expects the stored layout literally: each key at its place, strings without
//! escapes or control characters, plain unsigned integers, the payload an object (checked by
//! serde as a raw value, as before). Anything else, such as an envelope written by hand,
//! with whitespace, escapes, another key order, unknown or missing keys, is `None`, and the
//! caller decodes it with serde as before, which also gives the error for malformed input.
//! So where this returns an envelope it is the one serde would have returned (a test
//! checks it on generated and mutated envelopes).

use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::{Envelope, Payload};
use crm_domain::CustomerId;

/// The envelope in `bytes` if they have the stored layout; `None` for anything else.
pub(super) fn decode(bytes: &[u8]) -> Option<Envelope> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut p = Cursor { text, at: 0 };
    p.expect("{\"actor\":")?;
    let actor = p.string()?.to_owned();
    p.expect(",\"causation_id\":")?;
    let causation_id = p.optional_string()?;
    p.expect(",\"correlation_id\":")?;
    let correlation_id = p.optional_string()?;
    p.expect(",\"customer_id\":")?;
    let customer_id = CustomerId::new(Uuid::try_parse(p.string()?).ok()?);
    p.expect(",\"event_id\":")?;
    let event_id = Uuid::try_parse(p.string()?).ok()?;
    p.expect(",\"idempotency_key\":")?;
    let idempotency_key = p.optional_string()?;
    p.expect(",\"occurred_at\":")?;
    let occurred_at = OffsetDateTime::parse(p.string()?, &Rfc3339).ok()?;
    p.expect(",\"payload\":")?;
    let payload = p.object()?;
    p.expect(",\"prev_hash\":")?;
    let prev_hash = p.string()?.to_owned();
    p.expect(",\"recorded_at\":")?;
    let recorded_at = OffsetDateTime::parse(p.string()?, &Rfc3339).ok()?;
    let request_hash = if p.skip(",\"request_hash\":") {
        p.optional_string()?
    } else {
        None
    };
    p.expect(",\"schema_version\":")?;
    let schema_version = u32::try_from(p.unsigned()?).ok()?;
    p.expect(",\"type\":")?;
    let event_type = p.string()?.to_owned();
    p.expect(",\"version\":")?;
    let version = p.unsigned()?;
    p.expect(",\"hash\":")?;
    let hash = p.string()?.to_owned();
    p.expect("}")?;
    if p.at != text.len() {
        return None;
    }
    Some(Envelope {
        event_id,
        customer_id,
        event_type,
        schema_version,
        version,
        occurred_at,
        recorded_at,
        actor,
        correlation_id,
        causation_id,
        idempotency_key,
        request_hash,
        payload: Payload(payload),
        prev_hash,
        hash,
    })
}

/// A position in the envelope's text. Every step either consumes what it expects or gives
/// `None`.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.at..]
    }

    /// Consumes `literal`, or `None`.
    fn expect(&mut self, literal: &str) -> Option<()> {
        self.skip(literal).then_some(())
    }

    /// Consumes `literal` if it comes next.
    fn skip(&mut self, literal: &str) -> bool {
        let found = self.rest().starts_with(literal.as_bytes());
        if found {
            self.at += literal.len();
        }
        found
    }

    /// A string with no escape and no control character: its text.
    fn string(&mut self) -> Option<&'a str> {
        let rest = self.rest();
        if rest.first() != Some(&b'"') {
            return None;
        }
        let len = rest[1..].iter().position(|&b| b == b'"')?;
        let inner = &rest[1..=len];
        if inner.iter().any(|&b| b == b'\\' || b < 0x20) {
            return None;
        }
        // The quotes are ASCII, so both ends are character boundaries of `text`.
        let start = self.at + 1;
        let text = self.text.get(start..start + len)?;
        self.at = start + len + 1;
        Some(text)
    }

    /// `null` or a string as [`Cursor::string`].
    fn optional_string(&mut self) -> Option<Option<String>> {
        if self.skip("null") {
            Some(None)
        } else {
            self.string().map(|s| Some(s.to_owned()))
        }
    }

    /// A non-negative integer without sign, fraction, exponent or leading zero that fits
    /// `u64`.
    fn unsigned(&mut self) -> Option<u64> {
        let rest = self.rest();
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        if matches!(rest.get(digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut value: u64 = 0;
        for &b in &rest[..digits] {
            value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        self.at += digits;
        Some(value)
    }

    /// A JSON object, found by its matching brace outside strings and then checked by serde
    /// as a raw value (exactly the text of the object, as serde's own decoding keeps it).
    fn object(&mut self) -> Option<Box<RawValue>> {
        let rest = self.rest();
        if rest.first() != Some(&b'{') {
            return None;
        }
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut end = None;
        for (i, &b) in rest.iter().enumerate() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        let end = end?;
        let raw = self.text.get(self.at..self.at + end)?;
        let value: Box<RawValue> = serde_json::from_str(raw).ok()?;
        self.at += end;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Metadata;
    use crm_domain::Event;
    use crm_domain::event::{ActivityRecorded, CustomerRegistered};
    use time::macros::datetime;

    /// serde's reading of `bytes`, the reference.
    fn by_serde(bytes: &[u8]) -> Option<Envelope> {
        serde_json::from_slice(bytes).ok()
    }

    /// A small deterministic generator (xorshift), so a failure is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// Text mixing plain letters with what needs care in JSON: quotes, backslashes,
        /// control characters, braces and non-ASCII characters.
        fn text(&mut self) -> String {
            const PIECES: [&str; 12] = [
                "a", "Zq", " ", "\"", "\\", "\n", "\u{1}", "{", "}", "é", "客户", "\u{7f}",
            ];
            let n = self.below(6);
            (0..n).map(|_| PIECES[self.below(PIECES.len())]).collect()
        }

        fn maybe_text(&mut self) -> Option<String> {
            (self.below(2) == 0).then(|| self.text())
        }
    }

    fn envelope(rng: &mut Rng) -> anyhow::Result<Envelope> {
        let customer = CustomerId::new(Uuid::from_u64_pair(rng.next(), rng.next()));
        let event = if rng.below(2) == 0 {
            Event::CustomerRegistered(CustomerRegistered {
                name: rng.text(),
                segment: rng.maybe_text(),
                region: rng.maybe_text(),
                account_manager: rng.maybe_text(),
                acquisition_channel: None,
            })
        } else {
            Event::ActivityRecorded(ActivityRecorded {
                day: time::macros::date!(2026 - 11 - 01),
                logins: (rng.next() % 100) as u32,
                active_users: (rng.below(2) == 0).then_some(7),
            })
        };
        let meta = Metadata {
            actor: rng.text(),
            correlation_id: rng.maybe_text(),
            causation_id: rng.maybe_text(),
            idempotency_key: rng.maybe_text(),
        };
        Ok(Envelope::seal(
            Uuid::from_u64_pair(rng.next(), rng.next()),
            customer,
            rng.next() % 1_000_000 + 1,
            &event,
            datetime!(2026-11-01 10:00:00.123456 UTC),
            datetime!(2026-11-01 10:00:01 +08:00),
            &meta,
            rng.maybe_text(),
            super::super::GENESIS_HASH,
        )?)
    }

    /// The first generated envelope with no escape anywhere (so it reads on the fast path)
    /// that `also` accepts.
    fn plain_envelope(rng: &mut Rng, also: impl Fn(&Envelope) -> bool) -> anyhow::Result<Envelope> {
        loop {
            let e = envelope(rng)?;
            if !e.to_bytes().contains(&b'\\') && also(&e) {
                return Ok(e);
            }
        }
    }

    #[test]
    fn a_stored_envelope_reads_as_serde_reads_it() -> anyhow::Result<()> {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut fast = 0;
        for _ in 0..2_000 {
            let e = envelope(&mut rng)?;
            let bytes = e.to_bytes();
            let reference = by_serde(&bytes).ok_or_else(|| anyhow::anyhow!("serde failed"))?;
            assert_eq!(reference, e);
            match decode(&bytes) {
                Some(read) => {
                    assert_eq!(read, reference);
                    fast += 1;
                }
                // Only an escape outside the payload leaves the fast path (the payload's
                // strings may hold any).
                None => {
                    let text = String::from_utf8(bytes.clone())?;
                    let outside = text.replacen(e.payload.get(), "", 1);
                    assert!(outside.contains('\\'), "{text}");
                }
            }
        }
        // Most generated envelopes have no escape anywhere; those all took the fast path.
        assert!(fast > 200, "only {fast} of 2000 read on the fast path");
        Ok(())
    }

    #[test]
    fn anything_else_is_left_to_serde() -> anyhow::Result<()> {
        let e = plain_envelope(&mut Rng(42), |_| true)?;
        let bytes = e.to_bytes();
        assert_eq!(decode(&bytes).as_ref(), Some(&e));
        let text = String::from_utf8(bytes.clone())?;
        let variants = [
            format!(" {text}"),
            format!("{text} "),
            text.replacen("\"actor\":", "\"actor\" :", 1),
            text.replacen("\"version\":", "\"version\":0", 1),
            text.replacen(",\"hash\":", ",\"extra\":1,\"hash\":", 1),
            text.replacen("\"schema_version\":1", "\"schema_version\":1.0", 1),
            text.replacen("\"schema_version\":1", "\"schema_version\":4294967296", 1),
            text.replacen("\"schema_version\":1", "\"schema_version\":-1", 1),
            text.replacen("\"payload\":{", "\"payload\":[{", 1),
        ];
        for v in &variants {
            assert_eq!(decode(v.as_bytes()), None, "{v}");
        }
        // Flipping any one byte: the fast path reads it as serde does, or leaves it.
        let mut checked = 0;
        for i in 0..bytes.len() {
            for b in [b'"', b'\\', b'{', b'}', b'0', b'9', b'x', b',', 0x01, 0xff] {
                let mut m = bytes.clone();
                m[i] = b;
                if let Some(read) = decode(&m) {
                    assert_eq!(Some(read), by_serde(&m), "byte {i} as {b}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 0);
        Ok(())
    }

    #[test]
    fn edge_values_read_as_serde_reads_them() -> anyhow::Result<()> {
        let e = plain_envelope(&mut Rng(7), |e| e.request_hash.is_none())?;
        let text = String::from_utf8(e.to_bytes())?;
        let id = e.customer_id.to_string();
        let at = "2026-11-01T10:00:00.123456Z";
        assert!(text.contains(at), "{text}");
        let version = format!(r#""version":{}"#, e.version);
        // The fast path's answer, checked against serde's where it gives one.
        let both = |v: &str| {
            let fast = decode(v.as_bytes());
            if let Some(read) = &fast {
                assert_eq!(Some(read), by_serde(v.as_bytes()).as_ref(), "{v}");
            }
            fast
        };
        // Read on the fast path, as serde reads them.
        for v in [
            text.replacen(
                r#","schema_version":"#,
                r#","request_hash":null,"schema_version":"#,
                1,
            ),
            text.replacen(&version, &format!(r#""version":{}"#, u64::MAX), 1),
            text.replacen(&id, &id.replace('-', ""), 1),
            text.replacen(&id, &format!("{{{id}}}"), 1),
            // Escapes and brackets inside the payload's strings, and deep nesting.
            text.replacen(r#""payload":{"#, r#""payload":{"n":"a\"}{\\","#, 1),
            text.replacen(
                r#""payload":{"#,
                r#""payload":{"d":[[[[[[[[[[{}]]]]]]]]]],"#,
                1,
            ),
        ] {
            assert!(both(&v).is_some(), "{v}");
        }
        // Left to serde, or read exactly as serde reads them.
        for v in [
            text.replacen(at, "2026-11-01T10:00:00.123456z", 1),
            text.replacen(at, "2026-11-01t10:00:00.123456Z", 1),
            text.replacen(at, "2026-11-01T10:00:00.123456-00:00", 1),
            text.replacen(r#""payload":{"#, r#""payload":{"x":[}],"#, 1),
        ] {
            both(&v);
        }
        // One past u64: serde refuses it, so the fast path must not read it.
        let too_big = text.replacen(&version, &format!(r#""version":{}0"#, u64::MAX), 1);
        assert_eq!(both(&too_big), None);
        assert!(by_serde(too_big.as_bytes()).is_none());
        Ok(())
    }
}
