//! A key's token-budget windows at a moment: the UTC calendar day, the UTC calendar
//! month and the whole life of the key, each with its limit, its period id and when it
//! resets. Pure date arithmetic, no clock and no I/O.

use crate::config::keys::KeyPolicy;
use crate::wire::time::{civil_from_days, days_from_civil};

/// Which budget a window counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Day,
    Month,
    Total,
}

impl WindowKind {
    /// The window's name in a `budget_exceeded` error.
    pub fn label(self) -> &'static str {
        match self {
            WindowKind::Day => "daily",
            WindowKind::Month => "monthly",
            WindowKind::Total => "total",
        }
    }
}

/// One budget window of a key, as it stands at the moment it was computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub kind: WindowKind,
    /// Tokens (input plus output) the key may spend in this window.
    pub limit: u64,
    /// `d:2026-12-06`, `m:2026-12` or `t`: a counter of one period never carries into
    /// the next, so a window resets by changing its id, not by clearing anything.
    pub period: String,
    /// Unix seconds at which the next period starts; `None` for the total.
    pub resets_at: Option<i64>,
}

impl Window {
    /// When the window resets, RFC 3339 UTC, or `"never"`.
    pub fn resets_at_text(&self) -> String {
        match self.resets_at {
            Some(at) => crate::wire::time::rfc3339(at),
            None => "never".into(),
        }
    }
}

/// The budget windows `policy` sets, at Unix time `now` (day, month, total; only those
/// with a limit).
pub fn windows(policy: &KeyPolicy, now: i64) -> Vec<Window> {
    let (year, month, day) = civil_from_days(now.div_euclid(86_400));
    let mut windows = Vec::with_capacity(3);
    if let Some(limit) = policy.tokens_per_day {
        windows.push(Window {
            kind: WindowKind::Day,
            limit,
            period: format!("d:{year:04}-{month:02}-{day:02}"),
            resets_at: Some((now.div_euclid(86_400) + 1) * 86_400),
        });
    }
    if let Some(limit) = policy.tokens_per_month {
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        windows.push(Window {
            kind: WindowKind::Month,
            limit,
            period: format!("m:{year:04}-{month:02}"),
            resets_at: Some(days_from_civil(next_year, next_month, 1) * 86_400),
        });
    }
    if let Some(limit) = policy.tokens_total {
        windows.push(Window {
            kind: WindowKind::Total,
            limit,
            period: "t".into(),
            resets_at: None,
        });
    }
    windows
}

/// The UTC day (`YYYY-MM-DD`, as `token_usage.day` stores it) and month (`YYYY-MM`) of
/// Unix time `now`: what the store's window sums select.
pub fn day_and_month(now: i64) -> (String, String) {
    let (year, month, day) = civil_from_days(now.div_euclid(86_400));
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{year:04}-{month:02}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::time::rfc3339;

    fn policy(day: Option<u64>, month: Option<u64>, total: Option<u64>) -> KeyPolicy {
        KeyPolicy {
            tokens_per_day: day,
            tokens_per_month: month,
            tokens_total: total,
            ..KeyPolicy::default()
        }
    }

    /// Unix seconds of an RFC 3339 UTC time (test helper, whole seconds).
    fn at(text: &str) -> i64 {
        let n = |range: std::ops::Range<usize>| text[range].parse::<i64>().unwrap();
        days_from_civil(n(0..4), n(5..7), n(8..10)) * 86_400
            + n(11..13) * 3600
            + n(14..16) * 60
            + n(17..19)
    }

    #[test]
    fn every_window_with_a_limit_and_none_without() {
        let now = at("2026-12-06T05:10:00Z");
        let all = windows(&policy(Some(10), Some(20), Some(30)), now);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].period, "d:2026-12-06");
        assert_eq!(all[0].limit, 10);
        assert_eq!(all[0].resets_at_text(), "2026-12-07T00:00:00Z");
        assert_eq!(all[1].period, "m:2026-12");
        assert_eq!(all[1].resets_at_text(), "2027-01-01T00:00:00Z");
        assert_eq!(all[2].period, "t");
        assert_eq!(all[2].resets_at_text(), "never");
        assert_eq!(all[2].kind.label(), "total");
        assert!(windows(&KeyPolicy::default(), now).is_empty());
        let month_only = windows(&policy(None, Some(5), None), now);
        assert_eq!(month_only.len(), 1);
        assert_eq!(month_only[0].kind, WindowKind::Month);
    }

    #[test]
    fn month_ends_leap_years_and_year_end() {
        let cases = [
            // (now, day period, day reset, month period, month reset)
            (
                "2024-02-29T23:59:59Z",
                "d:2024-02-29",
                "2024-03-01T00:00:00Z",
                "m:2024-02",
                "2024-03-01T00:00:00Z",
            ),
            (
                "2025-02-28T12:00:00Z",
                "d:2025-02-28",
                "2025-03-01T00:00:00Z",
                "m:2025-02",
                "2025-03-01T00:00:00Z",
            ),
            (
                "2026-12-31T23:59:59Z",
                "d:2026-12-31",
                "2027-01-01T00:00:00Z",
                "m:2026-12",
                "2027-01-01T00:00:00Z",
            ),
            (
                "2027-01-01T00:00:00Z",
                "d:2027-01-01",
                "2027-01-02T00:00:00Z",
                "m:2027-01",
                "2027-02-01T00:00:00Z",
            ),
            (
                "2026-04-30T08:00:00Z",
                "d:2026-04-30",
                "2026-05-01T00:00:00Z",
                "m:2026-04",
                "2026-05-01T00:00:00Z",
            ),
            (
                "2100-02-28T00:00:00Z",
                "d:2100-02-28",
                "2100-03-01T00:00:00Z",
                "m:2100-02",
                "2100-03-01T00:00:00Z",
            ),
        ];
        for (now, day, day_reset, month, month_reset) in cases {
            let w = windows(&policy(Some(1), Some(1), None), at(now));
            assert_eq!(w[0].period, day, "{now}");
            assert_eq!(w[0].resets_at_text(), day_reset, "{now}");
            assert_eq!(w[1].period, month, "{now}");
            assert_eq!(w[1].resets_at_text(), month_reset, "{now}");
            assert!(w[0].resets_at.unwrap() > at(now));
        }
    }

    #[test]
    fn day_and_month_match_the_store_format() {
        let now = at("2026-01-09T10:00:00Z");
        assert_eq!(
            day_and_month(now),
            ("2026-01-09".to_string(), "2026-01".to_string())
        );
        assert_eq!(rfc3339(now), "2026-01-09T10:00:00Z");
    }

    #[test]
    fn civil_round_trips() {
        for days in [-1, 0, 59, 60, 365, 10_957, 20_000, 47_540] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
