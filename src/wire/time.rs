//! Times and dates in UTC: RFC 3339 as clients and log readers see them, and the calendar conversions budget windows use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds as an RFC 3339 UTC time (days to a civil date: H. Hinnant's algorithm).
pub fn rfc3339(seconds: i64) -> String {
    let (date, rest) = civil(seconds);
    format!(
        "{date}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A moment as an RFC 3339 UTC time with milliseconds (`2026-12-06T03:12:45.123Z`).
pub fn rfc3339_millis(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (date, rest) = civil(since.as_secs() as i64);
    format!(
        "{date}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The UTC calendar day (`YYYY-MM-DD`) of a moment.
pub fn utc_day(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    civil(since.as_secs() as i64).0
}

/// The `YYYY-MM-DD` of a Unix time, and the seconds into that day.
fn civil(seconds: i64) -> (String, i64) {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    (format!("{year:04}-{month:02}-{day:02}"), rest)
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31). H. Hinnant's algorithm.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// (year, month 1-12, day 1-31) → days since 1970-01-01. H. Hinnant's algorithm.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let at = super::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(super::rfc3339_millis(at), "2023-11-14T22:13:20.123Z");
    }
}
