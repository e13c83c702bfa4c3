//! Day arithmetic that cannot panic.
//!
//! Dates come off the wire and `time` accepts years -9999..=9999, so shifting a date by a
//! notice period or a scoring window can leave the representable range. These helpers
//! saturate at the ends of that range instead: a notice window that would open before the
//! earliest date opened at the earliest date, which is what every rule wants.

use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime, Time};

/// More days than separate the first and last representable dates; any larger shift
/// saturates anyway, and clamping keeps `Duration::days` from overflowing.
const MAX_SPAN_DAYS: i64 = 8_000_000;

/// `date` moved back by `days` (forward when negative), clamped to the representable range.
pub fn days_before(date: Date, days: i64) -> Date {
    date.checked_sub(Duration::days(days.clamp(-MAX_SPAN_DAYS, MAX_SPAN_DAYS)))
        .unwrap_or(if days >= 0 { Date::MIN } else { Date::MAX })
}

/// `date` moved forward by `days` (back when negative), clamped to the representable range.
pub fn days_after(date: Date, days: i64) -> Date {
    days_before(date, days.saturating_neg())
}

/// The same day a year later: 29 February gives 28 February. The last representable year
/// gives the last representable date.
pub fn one_year_after(date: Date) -> Date {
    match date.year().checked_add(1).map(|y| date.replace_year(y)) {
        Some(Ok(d)) => d,
        // 29 February in a year followed by a common one.
        Some(Err(_)) if date.year() < 9999 => days_after(date, 365),
        _ => Date::MAX,
    }
}

/// `at` moved back by `days`, clamped to the first instant of the representable range.
pub fn instant_days_before(at: OffsetDateTime, days: i64) -> OffsetDateTime {
    at.checked_sub(Duration::days(days.clamp(-MAX_SPAN_DAYS, MAX_SPAN_DAYS)))
        .unwrap_or_else(|| {
            let edge = if days >= 0 {
                PrimitiveDateTime::new(Date::MIN, Time::MIDNIGHT)
            } else {
                PrimitiveDateTime::new(Date::MAX, Time::MAX)
            };
            edge.assume_offset(at.offset())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn shifts_inside_the_range_are_plain_arithmetic() {
        assert_eq!(days_before(date!(2025 - 03 - 01), 1), date!(2025 - 02 - 28));
        assert_eq!(days_after(date!(2024 - 02 - 28), 1), date!(2024 - 02 - 29));
        assert_eq!(
            instant_days_before(datetime!(2025-01-31 10:00 UTC), 30),
            datetime!(2025-01-01 10:00 UTC)
        );
    }

    #[test]
    fn shifts_past_the_ends_saturate() {
        assert_eq!(days_before(Date::MIN, 90), Date::MIN);
        assert_eq!(days_after(Date::MAX, 90), Date::MAX);
        assert_eq!(days_before(Date::MAX, i64::MIN), Date::MAX);
        let early = PrimitiveDateTime::new(Date::MIN, Time::MIDNIGHT).assume_utc();
        assert_eq!(instant_days_before(early, 400).date(), Date::MIN);
    }
}
