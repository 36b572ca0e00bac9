//! Clock helpers: every timestamp on the wire is RFC 3339 UTC with `Z`, millisecond precision.

use chrono::{DateTime, Duration, NaiveTime, SecondsFormat, Utc};

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Seconds from `t` until the next UTC midnight (at least 1), for `Retry-After` on quota.
pub fn seconds_to_utc_midnight(t: DateTime<Utc>) -> u64 {
    let next = (t.date_naive() + Duration::days(1)).and_time(NaiveTime::MIN);
    let secs = (next.and_utc() - t).num_seconds();
    u64::try_from(secs).unwrap_or(0).max(1)
}

/// The UTC day a quota counter belongs to.
pub fn utc_day(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d").to_string()
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

    #[test]
    fn timestamps_end_in_z() {
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid");
        assert_eq!(rfc3339(t), "2026-01-02T03:04:05.000Z");
    }
}
