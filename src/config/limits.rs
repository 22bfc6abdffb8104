//! `[limits]` as written: resource limits, and where per-key limits are counted (this
//! process or a shared Redis), with the checks of the Redis settings.

use serde::Deserialize;

/// Resource limits. Every field has a safe default; 0 means unlimited where noted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout_secs: u64,
    pub keepalive_idle_secs: u64,
    /// Connections beyond this wait in the kernel backlog until one closes.
    pub max_connections: usize,
    /// 0 = unlimited.
    pub per_key_requests_per_minute: u32,
    /// 0 = unlimited.
    pub per_key_concurrent_requests: u32,
    /// Failed authentication attempts allowed per peer IP per minute.
    pub failed_auth_per_minute: u32,
    /// Open connections one client address (IPv4, or IPv6 /64) may hold, so one client
    /// cannot take every slot; 0 = unlimited. Trusted proxies are exempt.
    pub max_connections_per_ip: usize,
    /// Idle timeout for a connection that has not yet sent an authenticated request:
    /// anonymous keep-alive connections are cheap to hold open by the thousand.
    pub unauthenticated_idle_secs: u64,
    /// The whole request body must arrive within this (408 otherwise): a trickled body
    /// would pin a connection and its buffer.
    pub body_read_timeout_secs: u64,
    /// A response whose client accepts no bytes for this long is dropped: the upstream
    /// request is cancelled and nothing is stored.
    pub send_timeout_secs: u64,
    /// Where per-key limits and the failed-auth throttle are counted: "local" (this
    /// process) or "redis" (shared by every instance using the same Redis and prefix).
    pub backend: Backend,
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`); env GATEWAYD_REDIS_URL.
    pub redis_url: Option<RedisUrl>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub redis_prefix: String,
    /// The longest a request waits for Redis before the failure policy applies.
    pub redis_timeout_ms: u64,
    /// While Redis is unreachable: "local" (each instance limits alone) or "closed" (503).
    pub redis_failure: RedisFailure,
    /// A concurrency slot held in Redis expires this long after its instance stops
    /// renewing it (a crashed instance does not leak slots).
    pub redis_lease_ttl_secs: u64,
    /// For token budgets only: the output tokens a request that sets no `max_tokens`
    /// (nor `max_completion_tokens` / `max_output_tokens`) reserves before its call.
    /// Nothing is sent upstream: the request itself is not capped. Its real usage is
    /// settled after the call, so a longer answer can pass the budget by the difference.
    pub budget_default_max_tokens: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 10 * 1024 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            header_read_timeout_secs: 10,
            keepalive_idle_secs: 75,
            max_connections: 10_000,
            per_key_requests_per_minute: 0,
            per_key_concurrent_requests: 0,
            failed_auth_per_minute: 30,
            max_connections_per_ip: 256,
            unauthenticated_idle_secs: 5,
            body_read_timeout_secs: 30,
            send_timeout_secs: 60,
            backend: Default::default(),
            redis_url: None,
            redis_prefix: "gatewayd".into(),
            redis_timeout_ms: 50,
            redis_failure: Default::default(),
            redis_lease_ttl_secs: 30,
            budget_default_max_tokens: 4096,
        }
    }
}

/// `[limits] backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    Redis,
}

/// `[limits] redis_failure`: what a request meets while Redis cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisFailure {
    /// Each instance limits on its own (never unlimited) until Redis is back.
    #[default]
    Local,
    /// 503: no request is admitted that the shared limits could not judge.
    Closed,
}

/// A Redis URL; it may carry a password, so `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(pub String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Config checks for `[limits]`' Redis settings (called by `Config::validate`). Messages
/// never repeat the URL: it may hold a password.
pub fn validate(limits: &Limits) -> Result<(), String> {
    if limits.backend != Backend::Redis {
        return Ok(());
    }
    let Some(url) = &limits.redis_url else {
        return Err(
            "[limits] backend = \"redis\" needs redis_url (or GATEWAYD_REDIS_URL), \
                    e.g. redis://127.0.0.1:6379"
                .into(),
        );
    };
    if redis::Client::open(url.0.as_str()).is_err() {
        return Err("[limits] redis_url is not a valid Redis URL; expected \
                    redis://[user:password@]host:port[/db] or rediss://…"
            .into());
    }
    let prefix_ok = !limits.redis_prefix.is_empty()
        && limits.redis_prefix.len() <= 64
        && limits
            .redis_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !prefix_ok {
        return Err("[limits] redis_prefix must be 1-64 characters of A-Z a-z 0-9 - _ . :".into());
    }
    if limits.redis_timeout_ms == 0 || limits.redis_lease_ttl_secs == 0 {
        return Err("[limits] redis_timeout_ms and redis_lease_ttl_secs must be above 0".into());
    }
    Ok(())
}
