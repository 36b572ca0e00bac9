//! Clock helpers: every timestamp on the wire is RFC 3339 UTC with `Z`, millisecond precision.

use chrono::{DateTime, Datelike, Duration, NaiveTime, SecondsFormat, Timelike, Utc};

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as chrono's `to_rfc3339_opts(Millis, true)` writes it. Written
/// digit by digit: chrono's formatter walks a format-item list through `fmt` and cost more
/// than the rest of building a submission's script arguments (callgrind, issue 25). Years
/// outside 0–9999 and leap seconds, which a clock never gives here, go to chrono.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    let ns = t.nanosecond();
    let Some(mut s) = date_digits(t, 24).filter(|_| ns < 1_000_000_000) else {
        return t.to_rfc3339_opts(SecondsFormat::Millis, true);
    };
    s.insert(4, '-');
    s.insert(7, '-');
    s.push('T');
    digits(&mut s, t.hour(), 2);
    s.push(':');
    digits(&mut s, t.minute(), 2);
    s.push(':');
    digits(&mut s, t.second(), 2);
    s.push('.');
    digits(&mut s, ns / 1_000_000, 3);
    s.push('Z');
    s
}

/// `YYYYMMDD` in a string with room for `capacity`, or `None` outside years 0–9999.
fn date_digits(t: DateTime<Utc>, capacity: usize) -> Option<String> {
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let mut s = String::with_capacity(capacity);
    digits(&mut s, year, 4);
    digits(&mut s, t.month(), 2);
    digits(&mut s, t.day(), 2);
    Some(s)
}

/// `n` in exactly `width` decimal digits (`n` has no more).
fn digits(s: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        s.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
    }
}

/// Seconds from `t` until the next UTC midnight (at least 1), for `Retry-After` on quota.
pub fn seconds_to_utc_midnight(t: DateTime<Utc>) -> u64 {
    let next = (t.date_naive() + Duration::days(1)).and_time(NaiveTime::MIN);
    let secs = (next.and_utc() - t).num_seconds();
    u64::try_from(secs).unwrap_or(0).max(1)
}

/// The UTC day a quota counter belongs to.
pub fn utc_day(t: DateTime<Utc>) -> String {
    date_digits(t, 8).unwrap_or_else(|| t.format("%Y%m%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn midnight_countdown() {
        let t = Utc.with_ymd_and_hms(2026, 11, 21, 23, 59, 30).single().expect("valid");
        assert_eq!(seconds_to_utc_midnight(t), 30);
        let t = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).single().expect("valid");
        assert_eq!(seconds_to_utc_midnight(t), 86_400);
        assert_eq!(utc_day(t), "20261121");
    }

    proptest::proptest! {
        /// The same text as chrono's, from 0001 to 9999 and past both ends.
        #[test]
        fn the_same_as_chrono(ms in -62_200_000_000_000i64..260_000_000_000_000i64, sub_ms in 0u32..1_000_000) {
            let t = DateTime::from_timestamp_millis(ms).expect("in range") + Duration::nanoseconds(i64::from(sub_ms));
            proptest::prop_assert_eq!(rfc3339(t), t.to_rfc3339_opts(SecondsFormat::Millis, true));
            proptest::prop_assert_eq!(utc_day(t), t.format("%Y%m%d").to_string());
        }
    }

    #[test]
    fn timestamps_end_in_z() {
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid");
        assert_eq!(rfc3339(t), "2026-01-02T03:04:05.000Z");
    }
}
