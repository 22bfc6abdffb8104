//! Limits shared through Redis: every call bounded by `redis_timeout_ms`, every outage
//! logged once and counted, and concurrency slots held as leases that expire.
//!
//! Redis keys name the caller (its key's *name*, or a digest of a name with unusual
//! characters) or the client address bucket; never a key. `None` from a call means
//! "Redis could not decide"; the caller (`mod.rs`) applies the failure policy.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use tokio::task::JoinHandle;

use super::caller::bucket;
use super::scripts::{ADMIT, AUTH_FAILED, RENEW};
use super::whole_seconds;
use crate::config::Limits;
use crate::wire::error::ApiError;

/// While Redis is down, one request per this interval tries it again; the others go
/// straight to the failure policy instead of each waiting out the timeout.
const PROBE_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct SharedLimiter(Arc<Inner>);

struct Inner {
    client: redis::Client,
    connection: OnceLock<Option<ConnectionManager>>,
    prefix: String,
    timeout: Duration,
    lease_ttl: Duration,
    /// `failed_auth_per_minute` (0 = not throttled).
    failed_auth_per_minute: u32,
    up: AtomicBool,
    started: Instant,
    /// Milliseconds since `started` before which a down Redis is not tried again.
    retry_at: AtomicU64,
    /// Milliseconds since `started` when the last call that answered began: a call that
    /// began before it and failed is old news, and does not mark Redis down again.
    answered_from: AtomicU64,
}

/// One concurrency slot held in Redis. Renewed while held; released when dropped (the
/// response body ended). If this process dies, the lease expires after its ttl.
pub struct Lease {
    limiter: SharedLimiter,
    slots_key: String,
    id: String,
    renew: JoinHandle<()>,
}

impl SharedLimiter {
    /// `None` when the URL does not parse (config validation has already refused that).
    pub fn new(limits: &Limits, url: &str) -> Option<Self> {
        let client = redis::Client::open(url).ok()?;
        Some(SharedLimiter(Arc::new(Inner {
            client,
            connection: OnceLock::new(),
            prefix: limits.redis_prefix.clone(),
            timeout: Duration::from_millis(limits.redis_timeout_ms.max(1)),
            lease_ttl: Duration::from_secs(limits.redis_lease_ttl_secs.max(1)),
            failed_auth_per_minute: limits.failed_auth_per_minute,
            up: AtomicBool::new(true),
            started: Instant::now(),
            retry_at: AtomicU64::new(0),
            answered_from: AtomicU64::new(0),
        })))
    }

    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Relaxed)
    }

    /// Rate and concurrency for `name` in one atomic step.
    pub async fn admit(
        &self,
        name: &str,
        rpm: u32,
        concurrent: u32,
    ) -> Option<Result<Option<Lease>, ApiError>> {
        let tag = caller_tag(name);
        let slots_key = format!("{}:{{{tag}}}:slots", self.0.prefix);
        let rate_key = format!("{}:{{{tag}}}:rate", self.0.prefix);
        let id = lease_id();
        let ttl = self.0.lease_ttl.as_micros() as u64;
        let interval = if rpm == 0 { 0 } else { 60_000_000 / rpm as u64 };
        let (admitted, wait): (i64, i64) = self
            .call(|mut conn| {
                let (slots_key, rate_key, id) = (&slots_key, &rate_key, &id);
                async move {
                    ADMIT
                        .key(slots_key)
                        .key(rate_key)
                        .arg(concurrent)
                        .arg(ttl)
                        .arg(id)
                        .arg(interval.max(u64::from(rpm > 0)))
                        .arg(rpm)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        if admitted != 1 {
            return Some(Err(ApiError::RateLimited {
                retry_after_secs: whole_seconds(Duration::from_micros(wait.max(0) as u64)),
            }));
        }
        if concurrent == 0 {
            return Some(Ok(None));
        }
        let renew = tokio::spawn(self.clone().renew(slots_key.clone(), id.clone()));
        Some(Ok(Some(Lease {
            limiter: self.clone(),
            slots_key,
            id,
            renew,
        })))
    }

    /// Keeps a lease alive: renewed three times per ttl until the lease is dropped.
    async fn renew(self, slots_key: String, id: String) {
        let ttl = self.0.lease_ttl.as_micros() as u64;
        let mut ticks = tokio::time::interval(self.0.lease_ttl / 3);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(mut conn) = self.connection() else {
                continue;
            };
            let mut renewed = RENEW.key(&slots_key);
            renewed.arg(ttl).arg(&id);
            let call = renewed.invoke_async::<()>(&mut conn);
            let _ = tokio::time::timeout(self.0.timeout, call).await;
        }
    }

    /// Seconds `peer` must still wait after too many failures, without spending quota.
    pub async fn auth_blocked(&self, peer: IpAddr) -> Option<Option<u64>> {
        let key = format!("{}:{{ip:{}}}:block", self.0.prefix, bucket(peer));
        let ms: i64 = self
            .call(|mut conn| {
                let key = &key;
                async move { redis::cmd("PTTL").arg(key).query_async(&mut conn).await }
            })
            .await?;
        Some((ms > 0).then(|| whole_seconds(Duration::from_millis(ms as u64))))
    }

    /// Counts a failure of `peer`; the wait in seconds once it is over quota.
    pub async fn auth_failed(&self, peer: IpAddr) -> Option<Option<u64>> {
        let per_minute = self.0.failed_auth_per_minute.max(1);
        let tag = format!("ip:{}", bucket(peer));
        let fails = format!("{}:{{{tag}}}:fails", self.0.prefix);
        let block = format!("{}:{{{tag}}}:block", self.0.prefix);
        let wait: i64 = self
            .call(|mut conn| {
                let (fails, block) = (&fails, &block);
                async move {
                    AUTH_FAILED
                        .key(fails)
                        .key(block)
                        .arg((60_000_000 / per_minute as u64).max(1))
                        .arg(per_minute)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        Some((wait > 0).then(|| whole_seconds(Duration::from_micros(wait as u64))))
    }

    /// One command for other state the instances share (upstream health), under the same
    /// timeout and outage handling as the limits: `None` when Redis did not answer.
    pub async fn query<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Option<T> {
        self.call(|mut conn| async move { command.query_async(&mut conn).await })
            .await
    }

    /// `{redis_prefix}:{name}`: a key beside the limits' keys.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.0.prefix)
    }

    /// PING within the timeout, whatever the probe schedule (for /health/ready).
    pub async fn ping(&self) -> bool {
        self.0.retry_at.store(0, Ordering::Relaxed);
        let pong: Option<String> = self
            .call(|mut conn| async move { redis::cmd("PING").query_async(&mut conn).await })
            .await;
        pong.is_some()
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.0
            .connection
            .get_or_init(|| {
                // Reconnects run in the background; each request waits only `timeout`.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(2)))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(self.0.client.clone(), config).ok()
            })
            .clone()
    }

    /// Runs one Redis operation under the timeout and keeps the outage state: `None`
    /// when Redis did not answer (or is down and not due for another try).
    pub(super) async fn call<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.due() {
            return None;
        }
        let Some(conn) = self.connection() else {
            self.failed(u64::MAX, "the Redis client could not be created");
            return None;
        };
        let began = self.0.started.elapsed().as_millis() as u64;
        match tokio::time::timeout(self.0.timeout, op(conn)).await {
            Ok(Ok(value)) => {
                self.0.answered_from.fetch_max(began, Ordering::Relaxed);
                if !self.0.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: limits are shared again");
                }
                Some(value)
            }
            Ok(Err(err)) => {
                self.failed(began, &err.to_string());
                None
            }
            Err(_) => {
                let ms = self.0.timeout.as_millis();
                self.failed(began, &format!("no answer within redis_timeout_ms = {ms}"));
                None
            }
        }
    }

    /// Up, or down and this request is the one that tries again.
    fn due(&self) -> bool {
        if self.0.up.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.0.started.elapsed().as_millis() as u64;
        let at = self.0.retry_at.load(Ordering::Relaxed);
        now >= at
            && self
                .0
                .retry_at
                .compare_exchange(
                    at,
                    now + PROBE_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// A call that began at `began` failed. Counted always; Redis is marked down only
    /// when no call that began later has answered (a call stuck since before an outage
    /// ended must not end the recovery).
    fn failed(&self, began: u64, reason: &str) {
        metrics::counter!(crate::telemetry::LIMIT_BACKEND_ERRORS).increment(1);
        if began < self.0.answered_from.load(Ordering::Relaxed) {
            return;
        }
        let now = self.0.started.elapsed().as_millis() as u64;
        self.0
            .retry_at
            .store(now + PROBE_EVERY.as_millis() as u64, Ordering::Relaxed);
        if self.0.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                reason,
                "Redis is unreachable: limits fall back to the redis_failure policy until it answers again"
            );
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime left: the lease expires after its ttl
        };
        let Some(mut conn) = self.limiter.connection() else {
            return;
        };
        let (key, id) = (
            std::mem::take(&mut self.slots_key),
            std::mem::take(&mut self.id),
        );
        let timeout = self.limiter.0.timeout;
        runtime.spawn(async move {
            let mut release = redis::cmd("ZREM");
            release.arg(&key).arg(&id);
            let _ = tokio::time::timeout(timeout, release.query_async::<()>(&mut conn)).await;
        });
    }
}

/// The caller's part of a Redis key: its name when it is plain, else a digest of it.
pub(super) fn caller_tag(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if plain {
        format!("k:{name}")
    } else {
        format!(
            "kd:{}",
            hex::encode(&crate::config::keys::digest(name.as_bytes())[..16])
        )
    }
}

fn lease_id() -> String {
    let mut random = [0u8; 12];
    let _ = getrandom::getrandom(&mut random);
    hex::encode(random)
}

#[cfg(test)]
mod tests {
    use super::caller_tag;

    #[test]
    fn plain_names_are_kept_and_others_digested() {
        assert_eq!(caller_tag("alice"), "k:alice");
        let odd = caller_tag("a}b{c");
        assert!(odd.starts_with("kd:") && !odd.contains('}'), "{odd}");
        assert_eq!(odd.len(), 3 + 32);
    }
}
