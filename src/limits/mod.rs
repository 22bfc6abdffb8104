//! Who may send how much: per-caller rate and concurrency, and the failed-auth throttle,
//! counted in this process (`local.rs`) or shared by every instance through Redis
//! (`shared.rs`), with the Redis failure policy decided here and nowhere else. The
//! `[limits]` settings themselves are plain data in `config/limits.rs`. Routing shares
//! upstream health through the same Redis (`shared_redis`). Token budgets (`budget.rs`,
//! `shared_budget.rs`) are counted the same two ways under the same failure policy.

mod budget;
mod caller;
mod local;
mod scripts;
mod shared;
mod shared_budget;
mod windows;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::config::Limits;
pub use crate::config::{Backend, RedisFailure, RedisUrl};
use crate::wire::error::ApiError;
pub use budget::{BudgetScope, Floors, Reservation, FLOORS_FRESH_FOR};
use budget::{HeldOn, LocalBudgets};
pub use caller::{bucket, Caller};
pub use local::whole_seconds;
use local::LocalLimiter;
use shared::{Lease, SharedLimiter};
pub use windows::{day_and_month, windows, Window, WindowKind};

/// All limiters of one running gateway; built once with the state.
pub struct Limiter {
    /// `[limits] per_key_requests_per_minute` (0 = unlimited); a reload may change it.
    default_rpm: AtomicU32,
    /// `[limits] per_key_concurrent_requests` (0 = unlimited); a reload may change it.
    default_concurrent: AtomicU32,
    failure: RedisFailure,
    /// This process's counts: the limiter with `backend = "local"`, the fallback with Redis.
    local: LocalLimiter,
    /// This process's token-budget counters: with `backend = "local"`, and the fallback.
    budgets: Arc<LocalBudgets>,
    shared: Option<SharedLimiter>,
}

/// The limits' Redis, for other state every instance shares: commands run under the
/// limits' timeout and outage handling, keys under their prefix.
#[derive(Clone)]
pub struct SharedRedis(SharedLimiter);

impl SharedRedis {
    /// `None` when Redis did not answer in time (or is down and not due for a retry).
    pub async fn query<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Option<T> {
        self.0.query(command).await
    }

    /// `{redis_prefix}:{name}`.
    pub fn key(&self, name: &str) -> String {
        self.0.key(name)
    }
}

/// A held concurrency slot, released when the response body ends (or dropped).
pub enum Slot {
    Local(#[allow(dead_code)] OwnedSemaphorePermit), // held for its Drop only
    Shared(#[allow(dead_code)] Lease),               // held for its Drop only
}

impl Limiter {
    pub fn new(limits: &Limits) -> Self {
        let shared = match (limits.backend, &limits.redis_url) {
            (Backend::Redis, Some(url)) => SharedLimiter::new(limits, &url.0),
            _ => None,
        };
        Limiter {
            default_rpm: AtomicU32::new(limits.per_key_requests_per_minute),
            default_concurrent: AtomicU32::new(limits.per_key_concurrent_requests),
            failure: limits.redis_failure,
            local: LocalLimiter::new(limits),
            budgets: Arc::default(),
            shared,
        }
    }

    /// Puts new per-key defaults in force for the requests admitted from now on (a
    /// reload). A caller whose limits changed gets a fresh budget on its next request;
    /// the slots its open requests hold are released into the old one.
    pub fn set_defaults(&self, limits: &Limits) {
        self.default_rpm
            .store(limits.per_key_requests_per_minute, Ordering::Relaxed);
        self.default_concurrent
            .store(limits.per_key_concurrent_requests, Ordering::Relaxed);
    }

    /// Admits one request of `caller`, or says when to retry. The returned slot (if any)
    /// must be held until the response body has ended.
    pub async fn admit(&self, caller: &Caller) -> Result<Option<Slot>, ApiError> {
        let key = caller.key.as_deref();
        let rpm = key
            .and_then(|k| k.requests_per_minute)
            .unwrap_or_else(|| self.default_rpm.load(Ordering::Relaxed));
        let concurrent = key
            .and_then(|k| k.concurrent_requests)
            .unwrap_or_else(|| self.default_concurrent.load(Ordering::Relaxed));
        if rpm == 0 && concurrent == 0 {
            return Ok(None);
        }
        if let Some(shared) = &self.shared {
            match shared.admit(&caller.name, rpm, concurrent).await {
                Some(decision) => return decision.map(|lease| lease.map(Slot::Shared)),
                None => self.unavailable()?,
            }
        }
        let permit = self.local.admit(&caller.name, rpm, concurrent)?;
        Ok(permit.map(Slot::Local))
    }

    /// Reserves `amount` tokens in every budget window of `scope` (all or none), or
    /// refuses with 429 `budget_exceeded` naming the first window it would pass.
    pub async fn reserve(&self, scope: BudgetScope, amount: u64) -> Result<Reservation, ApiError> {
        if let Some(shared) = &self.shared {
            match shared.reserve_budget(&scope, amount).await {
                Some(Ok(())) => {
                    return Ok(Reservation::new(
                        amount,
                        scope,
                        HeldOn::Shared(shared.clone()),
                    ))
                }
                Some(Err(i)) => return Err(budget::refusal(&scope, i, amount)),
                None => self.unavailable()?,
            }
        }
        match self.budgets.reserve(&scope, amount) {
            Ok(()) => Ok(Reservation::new(
                amount,
                scope,
                HeldOn::Local(self.budgets.clone()),
            )),
            Err(i) => Err(budget::refusal(&scope, i, amount)),
        }
    }

    /// The budget floors of key `name` (what the store says it spent in each window):
    /// kept for [`FLOORS_FRESH_FOR`], then fetched again with `read`, once for all the
    /// requests of the key waiting for them.
    pub async fn budget_floors<F, Fut, E>(&self, name: &Arc<str>, read: F) -> Result<Floors, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Floors, E>>,
    {
        self.budgets.floors(name, read).await
    }

    /// Before any key comparison: is `peer` still serving a failed-auth penalty?
    /// Returns the seconds to wait. Consumes no quota.
    pub async fn auth_blocked(&self, peer: IpAddr) -> Result<Option<u64>, ApiError> {
        if !self.local.throttles_auth() {
            return Ok(None);
        }
        if let Some(shared) = &self.shared {
            match shared.auth_blocked(peer).await {
                Some(blocked) => return Ok(blocked),
                None => self.unavailable()?,
            }
        }
        Ok(self.local.auth_blocked(peer))
    }

    /// After a failed key comparison: counts it, and returns the seconds to wait when
    /// `peer` is now over its quota.
    pub async fn auth_failed(&self, peer: IpAddr) -> Result<Option<u64>, ApiError> {
        if !self.local.throttles_auth() {
            return Ok(None);
        }
        if let Some(shared) = &self.shared {
            match shared.auth_failed(peer).await {
                Some(wait) => return Ok(wait),
                None => self.unavailable()?,
            }
        }
        Ok(self.local.auth_failed(peer))
    }

    /// The failure policy, once Redis could not answer: fall back to the local limiter
    /// (`Ok`) or refuse (503).
    fn unavailable(&self) -> Result<(), ApiError> {
        match self.failure {
            RedisFailure::Local => Ok(()),
            RedisFailure::Closed => Err(ApiError::LimitsUnavailable),
        }
    }

    /// For /health/ready: false only while a `closed`-policy Redis cannot be reached
    /// (checked now, within the Redis timeout). A `local` policy is always ready.
    pub async fn ready(&self) -> bool {
        match (&self.shared, self.failure) {
            (Some(shared), RedisFailure::Closed) => shared.ping().await,
            _ => true,
        }
    }

    /// The Redis every instance shares (`backend = "redis"`), for other state they share:
    /// upstream health with `[routing] share_health`.
    pub fn shared_redis(&self) -> Option<SharedRedis> {
        self.shared.clone().map(SharedRedis)
    }

    /// Whether the last Redis call succeeded (`None` with the local backend).
    pub fn shared_up(&self) -> Option<bool> {
        self.shared.as_ref().map(SharedLimiter::is_up)
    }
}
