//! The in-process limiter: per-caller rate and concurrency, and failed authentication
//! attempts per peer address, counted in this process only.
//!
//! Every map here is sharded (DashMap) and every counter is a GCRA cell or a semaphore
//! permit: the request path never takes a global lock. With `backend = "redis"` this is
//! the fallback while Redis cannot be reached.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, QuantaInstant, Reference};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::caller::bucket;
use crate::config::Limits;
use crate::wire::error::ApiError;

/// Past this many tracked addresses, forgotten ones are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;

/// The local limiters of one running gateway; built once with the state.
pub struct LocalLimiter {
    /// Caller name → its budget. Rebuilt for a name whose configured limits changed.
    budgets: DashMap<Arc<str>, Arc<Budget>>,
    /// Failed authentications per address; `None` when `failed_auth_per_minute = 0`.
    failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses whose last failure was over quota, until they may try again.
    /// Kept apart from `failures` so the check before a key comparison consumes nothing.
    blocked: DashMap<IpAddr, QuantaInstant>,
}

struct Budget {
    rpm: u32,
    concurrent: u32,
    rate: Option<DefaultDirectRateLimiter>,
    slots: Option<Arc<Semaphore>>,
}

impl Budget {
    fn new(rpm: u32, concurrent: u32) -> Self {
        Budget {
            rpm,
            concurrent,
            rate: NonZeroU32::new(rpm).map(|n| RateLimiter::direct(Quota::per_minute(n))),
            slots: (concurrent > 0).then(|| Arc::new(Semaphore::new(concurrent as usize))),
        }
    }
}

impl LocalLimiter {
    pub fn new(limits: &Limits) -> Self {
        LocalLimiter {
            budgets: DashMap::new(),
            failures: NonZeroU32::new(limits.failed_auth_per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            blocked: DashMap::new(),
        }
    }

    /// Admits one request of the caller `name`, or says when to retry. The returned
    /// permit (if any) must be held until the response body has ended.
    pub fn admit(
        &self,
        name: &Arc<str>,
        rpm: u32,
        concurrent: u32,
    ) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let budget = self.budget(name, rpm, concurrent);
        // The slot first: a request refused for concurrency must not spend rate quota.
        let permit = match &budget.slots {
            Some(slots) => {
                Some(
                    slots
                        .clone()
                        .try_acquire_owned()
                        .map_err(|_| ApiError::RateLimited {
                            retry_after_secs: 1,
                        })?,
                )
            }
            None => None,
        };
        if let Some(rate) = &budget.rate {
            rate.check().map_err(|not_until| ApiError::RateLimited {
                retry_after_secs: whole_seconds(not_until.wait_time_from(rate.clock().now())),
            })?;
        }
        Ok(permit)
    }

    fn budget(&self, name: &Arc<str>, rpm: u32, concurrent: u32) -> Arc<Budget> {
        if let Some(budget) = self.budgets.get(name.as_ref()) {
            if budget.rpm == rpm && budget.concurrent == concurrent {
                return budget.clone();
            }
        }
        self.budgets
            .entry(name.clone())
            .and_modify(|budget| {
                if budget.rpm != rpm || budget.concurrent != concurrent {
                    *budget = Arc::new(Budget::new(rpm, concurrent));
                }
            })
            .or_insert_with(|| Arc::new(Budget::new(rpm, concurrent)))
            .clone()
    }

    /// Whether failed authentications are throttled at all (`failed_auth_per_minute > 0`).
    pub fn throttles_auth(&self) -> bool {
        self.failures.is_some()
    }

    /// Before any key comparison: is `peer` still serving a failed-auth penalty?
    /// Returns the seconds to wait. Consumes no quota.
    pub fn auth_blocked(&self, peer: IpAddr) -> Option<u64> {
        let failures = self.failures.as_ref()?;
        let peer = bucket(peer);
        let until = *self.blocked.get(&peer)?;
        let now = failures.clock().now();
        if until > now {
            return Some(whole_seconds(until.duration_since(now).into()));
        }
        self.blocked.remove_if(&peer, |_, until| *until <= now);
        None
    }

    /// After a failed key comparison: counts it, and returns the seconds to wait when
    /// `peer` is now over its quota.
    pub fn auth_failed(&self, peer: IpAddr) -> Option<u64> {
        let failures = self.failures.as_ref()?;
        let peer = bucket(peer);
        if failures.len() > SWEEP_ABOVE {
            let now = failures.clock().now();
            failures.retain_recent();
            self.blocked.retain(|_, until| *until > now);
        }
        let not_until = failures.check_key(&peer).err()?;
        self.blocked.insert(peer, not_until.earliest_possible());
        Some(whole_seconds(
            not_until.wait_time_from(failures.clock().now()),
        ))
    }
}

/// Retry-After is whole seconds; round up so a client that obeys it is admitted.
pub fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_millis().div_ceil(1000) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(whole_seconds(Duration::from_millis(0)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
    }
}
