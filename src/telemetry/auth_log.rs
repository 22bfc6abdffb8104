//! Failed authentications as an operator reads them at `info`: at most one summary line
//! per client address a minute (how many failures, and what was done about them), and a
//! line when a failed-auth throttle starts and when it ends.
//!
//! A guesser must not be able to flood the log or the memory through this: the state is
//! one small entry per address for at most [`MAX_ADDRESSES`] addresses (failures from
//! any others are summed into one line a minute), and an address gets at most three
//! lines a [`WINDOW`]: its summary, and one throttle's start and end. A guesser that
//! keeps going is throttled again every few seconds; those repeats within the minute are
//! counted in the summary ("throttled 12 times"), not logged one by one.
//!
//! When lines are written:
//! - **throttle start**: at once, when a failed authentication puts the address over its
//!   quota (`failed_auth_per_minute`), unless a start was logged for it within a minute;
//! - **summary**: when the throttle starts (its count then includes every failure that led
//!   to it), or else a minute after the address's first failure since its last summary;
//!   never twice within a minute for one address;
//! - **throttle end**: by the once-a-second sweep, within a second of the end (not when
//!   the address is next seen). With `backend = "redis"`, an instance logs only the
//!   throttles it started itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// At most one summary line per address within this long.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses with their own summary state; failures from others share one line.
pub const MAX_ADDRESSES: usize = 4096;

#[derive(Default)]
struct Entry {
    /// Failures since the last summary (or since the first one, if none was written yet).
    failures: u64,
    /// Requests refused because the throttle was on, since the last summary.
    refused: u64,
    /// When the counting for the next summary began (its first failure or refusal).
    counting_since: Option<Instant>,
    /// When this address's last summary was written.
    last_summary: Option<Instant>,
    /// While the throttle is on: when it ends.
    throttled_until: Option<Instant>,
    /// The throttle's length when it last started, for the summary's "action taken".
    throttled_for_secs: Option<u64>,
    /// Throttles started since the last summary.
    throttles: u32,
    /// When a throttle start was last logged (at most one a minute).
    start_logged: Option<Instant>,
    /// The running throttle's start was logged, so its end is too.
    end_to_log: bool,
}

#[derive(Default)]
struct Summaries {
    by_address: HashMap<IpAddr, Entry>,
    /// Failures, and requests refused while throttled, from addresses beyond
    /// `MAX_ADDRESSES`, since `overflow_since`.
    overflow: u64,
    overflow_since: Option<Instant>,
}

fn state() -> MutexGuard<'static, Summaries> {
    static STATE: OnceLock<Mutex<Summaries>> = OnceLock::new();
    let lock = STATE.get_or_init(Mutex::default);
    // A panic elsewhere while holding it leaves counts, never broken invariants.
    lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The entry for `client`, or `None` once `MAX_ADDRESSES` others are tracked.
fn entry(summaries: &mut Summaries, client: IpAddr) -> Option<&mut Entry> {
    let full = summaries.by_address.len() >= MAX_ADDRESSES;
    if full && !summaries.by_address.contains_key(&client) {
        return None;
    }
    Some(summaries.by_address.entry(client).or_default())
}

/// A key comparison from `client` failed. `throttled_for_secs` is set when this failure
/// put the address over its quota, so the throttle starts now.
pub fn failed(client: IpAddr, throttled_for_secs: Option<u64>) {
    state().failed(client, throttled_for_secs, Instant::now());
}

/// A request from `client` was refused because its throttle is on (no key was compared).
pub fn refused(client: IpAddr) {
    state().refused(client, Instant::now());
}

impl Summaries {
    fn failed(&mut self, client: IpAddr, throttled_for_secs: Option<u64>, now: Instant) {
        let Some(entry) = entry(self, client) else {
            self.overflow += 1;
            self.overflow_since.get_or_insert(now);
            return;
        };
        entry.failures += 1;
        entry.counting_since.get_or_insert(now);
        let Some(secs) = throttled_for_secs else {
            return;
        };
        if entry.throttled_until.is_none() {
            entry.throttles += 1;
            entry.end_to_log = entry.start_logged.is_none_or(|at| now - at >= WINDOW);
            if entry.end_to_log {
                entry.start_logged = Some(now);
                tracing::info!(
                    %client,
                    failures = entry.failures,
                    throttled_secs = secs,
                    "failed-auth throttle started for {client}: requests from it are refused for {secs} s"
                );
            }
        }
        entry.throttled_until = Some(now + Duration::from_secs(secs));
        entry.throttled_for_secs = Some(secs);
        if entry.last_summary.is_none_or(|at| now - at >= WINDOW) {
            summarise(client, entry, now);
        }
    }

    fn refused(&mut self, client: IpAddr, now: Instant) {
        match entry(self, client) {
            Some(entry) => {
                entry.refused += 1;
                entry.counting_since.get_or_insert(now);
            }
            // Beyond the addresses summarised one by one: still counted, in the overflow line.
            None => {
                self.overflow += 1;
                self.overflow_since.get_or_insert(now);
            }
        }
    }
}

/// Writes `entry`'s summary line and starts counting afresh.
fn summarise(client: IpAddr, entry: &mut Entry, now: Instant) {
    let action = match (entry.throttles, entry.throttled_for_secs) {
        (1, Some(secs)) => format!("throttled for {secs} s"),
        (n, Some(secs)) if n > 1 => format!("throttled {n} times, the last for {secs} s"),
        _ if entry.refused > 0 => "kept throttled".to_string(),
        _ => "none yet (under the failed-auth limit)".to_string(),
    };
    let (failures, refused) = (entry.failures, entry.refused);
    let while_throttled = match refused {
        0 => String::new(),
        n => format!(" ({n} more requests refused while throttled)"),
    };
    tracing::info!(
        %client,
        failures,
        refused,
        "failed authentications from {client} in the last minute: {failures}{while_throttled}; \
         action: {action}"
    );
    entry.failures = 0;
    entry.refused = 0;
    entry.counting_since = None;
    entry.throttled_for_secs = None;
    entry.throttles = 0;
    entry.last_summary = Some(now);
}

/// Once a second: ends throttles that are over, writes the summaries that are due, and
/// forgets addresses with nothing left to report.
pub fn sweep(now: Instant) {
    sweep_summaries(&mut state(), now);
}

fn sweep_summaries(summaries: &mut Summaries, now: Instant) {
    for (client, entry) in summaries.by_address.iter_mut() {
        if entry.throttled_until.is_some_and(|until| until <= now) {
            entry.throttled_until = None;
            if std::mem::take(&mut entry.end_to_log) {
                tracing::info!(%client, "failed-auth throttle ended for {client}");
            }
        }
        let due = entry.counting_since.is_some_and(|since| {
            now - since >= WINDOW && entry.last_summary.is_none_or(|at| now - at >= WINDOW)
        });
        if due {
            summarise(*client, entry, now);
        }
    }
    summaries.by_address.retain(|_, entry| {
        entry.throttled_until.is_some()
            || entry.counting_since.is_some()
            || entry.last_summary.is_some_and(|at| now - at < WINDOW)
            || entry.start_logged.is_some_and(|at| now - at < WINDOW)
    });
    if summaries
        .overflow_since
        .is_some_and(|since| now - since >= WINDOW)
    {
        tracing::info!(
            failures = summaries.overflow,
            "failed authentications and requests refused while throttled in the last minute from addresses beyond the {MAX_ADDRESSES} summarised one by one: {}",
            summaries.overflow
        );
        summaries.overflow = 0;
        summaries.overflow_since = None;
    }
}

/// Starts the once-a-second sweep (once per process). Must be called inside a runtime.
pub fn start_sweeping() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        tokio::spawn(async {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticks.tick().await;
                sweep(Instant::now());
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn the_state_is_bounded_and_emptied_once_nothing_is_left_to_report() {
        let mut summaries = Summaries::default();
        let start = Instant::now();
        for n in 0..(MAX_ADDRESSES as u32 + 500) {
            summaries.failed(address(n), None, start);
            summaries.refused(address(n), start);
        }
        assert_eq!(summaries.by_address.len(), MAX_ADDRESSES);
        // Both the failures and the refusals of the 500 untracked addresses are counted.
        assert_eq!(summaries.overflow, 1000);
        // A minute on, every summary is written (and the overflow's one line).
        sweep_summaries(&mut summaries, start + WINDOW);
        assert!(summaries
            .by_address
            .values()
            .all(|e| e.counting_since.is_none()));
        assert_eq!((summaries.overflow, summaries.overflow_since), (0, None));
        // Another minute without failures: nothing is left to remember.
        sweep_summaries(&mut summaries, start + 2 * WINDOW);
        assert!(summaries.by_address.is_empty());
    }

    #[test]
    fn an_address_gets_one_summary_a_minute_and_its_throttle_ends_in_the_sweep() {
        let mut summaries = Summaries::default();
        let (client, start) = (address(1), Instant::now());
        for _ in 0..30 {
            summaries.failed(client, None, start);
        }
        // The throttle starts: the summary is written now, with all 31 failures.
        summaries.failed(client, Some(2), start);
        let entry = &summaries.by_address[&client];
        assert_eq!((entry.failures, entry.last_summary), (0, Some(start)));
        // The throttle ends in the sweep after its end.
        sweep_summaries(&mut summaries, start + Duration::from_secs(3));
        assert_eq!(summaries.by_address[&client].throttled_until, None);
        // A second throttle within the minute: counted, neither its start nor its end
        // logged, and not summarised yet.
        let later = start + Duration::from_secs(10);
        summaries.failed(client, Some(4), later);
        let entry = &summaries.by_address[&client];
        assert_eq!((entry.failures, entry.last_summary), (1, Some(start)));
        assert_eq!((entry.throttles, entry.end_to_log), (1, false));
        assert_eq!(entry.start_logged, Some(start));
        assert!(entry.throttled_until.is_some());
        sweep_summaries(&mut summaries, start + Duration::from_secs(59));
        assert_eq!(summaries.by_address[&client].last_summary, Some(start));
        // Due a minute after the last summary (and a minute after counting began).
        sweep_summaries(&mut summaries, later + WINDOW);
        let entry = &summaries.by_address[&client];
        assert_eq!(
            (entry.failures, entry.last_summary),
            (0, Some(later + WINDOW))
        );
        // A minute after the last logged start, a new throttle's start is logged again.
        summaries.failed(client, Some(2), later + WINDOW);
        let entry = &summaries.by_address[&client];
        assert_eq!(entry.start_logged, Some(later + WINDOW));
        assert!(entry.end_to_log);
    }
}
