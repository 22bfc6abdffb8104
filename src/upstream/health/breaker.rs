//! One upstream's health: its circuit breaker (closed, open, half-open), its requests in
//! flight and its time to first byte, in atomics read without a lock on every request.
//!
//! Closed: requests go to it. After `failure_threshold` consecutive failures it opens:
//! skipped without an attempt until its cooldown ends. Then the first request to claim it
//! is its one trial (half-open): success closes it, failure opens it again for twice the
//! cooldown, up to `max_cooldown`. A 429 with `Retry-After` opens it for that long.
//! Transitions take a small lock (they are rare); the hot path only loads and adds.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::clock;
use super::latency::PeakEwma;
use crate::config::BreakerPolicy;

const CLOSED: u8 = 0;
/// Its one trial request is in flight.
const HALF_OPEN: u8 = 1;
const OPEN: u8 = 2;

/// An upstream's breaker state as `gatewayd_upstream_state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    /// A trial is in flight, or the cooldown is over and the next request will be one.
    HalfOpen = 1,
    Open = 2,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half_open",
            State::Open => "open",
        }
    }
}

/// What a request may do with this upstream right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Send to it; `trial` when this request is its half-open trial.
    Go { trial: bool },
    /// Skip it: open for `left_ms` more (0: another request holds its trial).
    Open { left_ms: u64 },
    /// Skip it: at its `max_in_flight`.
    Full,
}

/// Why an upstream opened (for its log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `failure_threshold` consecutive failures.
    Failures,
    /// Its half-open trial failed.
    TrialFailed,
    /// It answered 429 (or 503) with `Retry-After`.
    RetryAfter,
    /// Another instance opened it (shared through Redis).
    Peer,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Failures => "consecutive_failures",
            Cause::TrialFailed => "trial_failed",
            Cause::RetryAfter => "retry_after",
            Cause::Peer => "another_instance",
        }
    }
}

/// A change of state, said once by whoever caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Open now, for `for_ms`.
    Opened {
        cause: Cause,
        for_ms: u64,
    },
    Closed,
}

pub struct Health {
    name: Arc<str>,
    state: AtomicU8,
    /// Consecutive failures while closed.
    failures: AtomicU32,
    /// Clock milliseconds at which an open upstream may be tried again.
    open_until: AtomicU64,
    /// The cooldown of the last opening (doubles after a failed trial).
    cooldown_ms: AtomicU64,
    in_flight: AtomicU32,
    /// Set while it is open only because another instance said so.
    opened_by_peer: AtomicBool,
    pub latency: PeakEwma,
    policy: Mutex<BreakerPolicy>,
    /// Serialises transitions, so each is said exactly once.
    transitions: Mutex<()>,
}

impl Health {
    pub fn new(name: &str, policy: BreakerPolicy) -> Health {
        Health {
            name: name.into(),
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            cooldown_ms: AtomicU64::new(millis(policy.cooldown)),
            in_flight: AtomicU32::new(0),
            opened_by_peer: AtomicBool::new(false),
            latency: PeakEwma::default(),
            policy: Mutex::new(policy),
            transitions: Mutex::new(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// New settings on reload; the state is kept.
    pub fn configure(&self, policy: BreakerPolicy) {
        *lock(&self.policy) = policy;
    }

    fn policy(&self) -> BreakerPolicy {
        *lock(&self.policy)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The state now (`now` in clock milliseconds).
    pub fn state(&self, now: u64) -> State {
        match self.state.load(Ordering::Acquire) {
            CLOSED => State::Closed,
            HALF_OPEN => State::HalfOpen,
            _ if now >= self.open_until.load(Ordering::Acquire) => State::HalfOpen,
            _ => State::Open,
        }
    }

    /// Milliseconds until an open upstream may be tried (`None` when not open).
    pub fn open_for(&self, now: u64) -> Option<u64> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => None,
            HALF_OPEN => Some(0),
            _ => Some(self.open_until.load(Ordering::Acquire).saturating_sub(now)),
        }
    }

    /// Whether a request could go to it now (no claim taken; for ordering).
    pub fn available(&self, max_in_flight: u32, now: u64) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => max_in_flight == 0 || self.in_flight() < max_in_flight,
            HALF_OPEN => false,
            _ => now >= self.open_until.load(Ordering::Acquire),
        }
    }

    /// Takes a place for one request, or says why not. A `Go` must be followed by
    /// exactly one of [`Health::succeeded`], [`Health::failed`] or [`Health::released`].
    pub fn claim(&self, max_in_flight: u32, now: u64) -> Claim {
        let trial = match self.state.load(Ordering::Acquire) {
            CLOSED => false,
            HALF_OPEN => return Claim::Open { left_ms: 0 },
            _ => {
                let until = self.open_until.load(Ordering::Acquire);
                if now < until {
                    return Claim::Open {
                        left_ms: until - now,
                    };
                }
                let taken = self.state.compare_exchange(
                    OPEN,
                    HALF_OPEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if taken.is_err() {
                    return Claim::Open { left_ms: 0 };
                }
                true
            }
        };
        if max_in_flight == 0 || trial {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            return Claim::Go { trial };
        }
        let reserved = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max_in_flight).then_some(n + 1)
            });
        match reserved {
            Ok(_) => Claim::Go { trial },
            Err(_) => Claim::Full,
        }
    }

    /// The request's place ends (its body is done, or it never got one).
    pub fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The upstream answered (anything but a failure).
    pub fn succeeded(&self, trial: bool) -> Option<Transition> {
        if !trial {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let _serial = lock(&self.transitions);
        if self.state.load(Ordering::Acquire) != HALF_OPEN {
            return None;
        }
        self.close_locked();
        Some(Transition::Closed)
    }

    /// The upstream failed. `retry_after_ms`: it said when to come back (429 or 503).
    pub fn failed(&self, trial: bool, retry_after_ms: Option<u64>, now: u64) -> Option<Transition> {
        let policy = self.policy();
        let max = millis(policy.max_cooldown);
        if let Some(wait) = retry_after_ms.filter(|&ms| ms > 0) {
            return self.open_for_exactly(wait.min(max), now);
        }
        if trial {
            let _serial = lock(&self.transitions);
            let doubled = self.cooldown_ms.load(Ordering::Relaxed).saturating_mul(2);
            let cooldown = doubled.clamp(millis(policy.cooldown), max);
            self.open_locked(cooldown, now);
            return Some(Transition::Opened {
                cause: Cause::TrialFailed,
                for_ms: cooldown,
            });
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < policy.failure_threshold || self.state.load(Ordering::Acquire) != CLOSED {
            return None;
        }
        let _serial = lock(&self.transitions);
        if self.state.load(Ordering::Acquire) != CLOSED {
            return None;
        }
        let cooldown = millis(policy.cooldown);
        self.open_locked(cooldown, now);
        Some(Transition::Opened {
            cause: Cause::Failures,
            for_ms: cooldown,
        })
    }

    /// The request ended without a verdict (cancelled, or the upstream could not serve
    /// this endpoint): a trial it held is given back, ready for the next request.
    pub fn released(&self, trial: bool, now: u64) {
        if trial {
            let _serial = lock(&self.transitions);
            if self.state.load(Ordering::Acquire) == HALF_OPEN {
                self.open_until.store(now, Ordering::Release);
                self.state.store(OPEN, Ordering::Release);
            }
        }
    }

    /// A probe answered: an open upstream closes without spending a client request.
    pub fn probe_succeeded(&self) -> Option<Transition> {
        let _serial = lock(&self.transitions);
        if self.state.load(Ordering::Acquire) != OPEN {
            return None;
        }
        self.close_locked();
        Some(Transition::Closed)
    }

    /// Another instance opened it until `now + for_ms` (shared health).
    pub fn opened_by_peer(&self, for_ms: u64, now: u64) -> Option<Transition> {
        let _serial = lock(&self.transitions);
        let until = now + for_ms;
        if self.state.load(Ordering::Acquire) != CLOSED {
            if self.open_until.load(Ordering::Acquire) < until {
                self.open_until.store(until, Ordering::Release);
            }
            return None;
        }
        self.open_locked(for_ms, now);
        self.opened_by_peer.store(true, Ordering::Relaxed);
        Some(Transition::Opened {
            cause: Cause::Peer,
            for_ms,
        })
    }

    /// Another instance closed it: closes here too if it was open only on its word.
    pub fn closed_by_peer(&self) -> Option<Transition> {
        let _serial = lock(&self.transitions);
        let open = self.state.load(Ordering::Acquire) == OPEN;
        if !(open && self.opened_by_peer.load(Ordering::Relaxed)) {
            return None;
        }
        self.close_locked();
        Some(Transition::Closed)
    }

    /// Whether it is open only because another instance said so.
    pub fn is_open_by_peer(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED && self.opened_by_peer.load(Ordering::Relaxed)
    }

    /// When an open upstream may be tried again, in clock milliseconds.
    pub fn open_until(&self) -> Option<u64> {
        (self.state.load(Ordering::Acquire) != CLOSED)
            .then(|| self.open_until.load(Ordering::Acquire))
    }

    fn open_for_exactly(&self, wait: u64, now: u64) -> Option<Transition> {
        let _serial = lock(&self.transitions);
        let was = self.state.load(Ordering::Acquire);
        let until = now + wait;
        self.open_until.store(until, Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
        self.failures.store(0, Ordering::Relaxed);
        self.opened_by_peer.store(false, Ordering::Relaxed);
        (was != OPEN).then_some(Transition::Opened {
            cause: Cause::RetryAfter,
            for_ms: wait,
        })
    }

    fn open_locked(&self, cooldown: u64, now: u64) {
        self.cooldown_ms.store(cooldown, Ordering::Relaxed);
        self.open_until.store(now + cooldown, Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
        self.failures.store(0, Ordering::Relaxed);
        self.opened_by_peer.store(false, Ordering::Relaxed);
    }

    fn close_locked(&self) {
        self.failures.store(0, Ordering::Relaxed);
        let base = millis(self.policy().cooldown);
        self.cooldown_ms.store(base, Ordering::Relaxed);
        self.opened_by_peer.store(false, Ordering::Relaxed);
        self.state.store(CLOSED, Ordering::Release);
    }

    /// Now, in the clock this health is kept in.
    pub fn now() -> u64 {
        clock::now_ms()
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A poisoned lock still guards plain data: use it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
