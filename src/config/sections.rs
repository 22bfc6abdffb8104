//! The `[server]`, `[limits]`, `[sessions]` and `[responses]` sections as written, with their defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::cli::LogFormat;
use crate::sessions::SessionLimits;

/// `[responses]`: the Responses API over chat-completions upstreams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesSection {
    /// Built-in and unknown tools a chat upstream cannot run: "drop" (default) or "reject".
    pub unsupported_tools: crate::translate::responses::ToolPolicy,
    /// Stored responses older than this many days are deleted; 0 keeps them forever.
    pub retention_days: u64,
}

impl ResponsesSection {
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0)
            .then(|| Duration::from_secs(self.retention_days.saturating_mul(86_400)))
    }
}

impl Default for ResponsesSection {
    fn default() -> Self {
        ResponsesSection {
            unsupported_tools: Default::default(),
            retention_days: 30,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    /// Exact browser origins allowed by CORS; empty disables CORS entirely.
    pub cors_origins: Option<Vec<String>>,
    pub shutdown_grace_secs: Option<u64>,
    pub stream_keepalive_secs: Option<u64>,
    pub max_attempts: Option<u32>,
    pub metrics_addr: Option<String>,
    /// Reverse proxies (CIDRs) whose X-Forwarded-For / Forwarded name the real client.
    pub trusted_proxies: Option<Vec<String>>,
    /// The one header those proxies write the client into.
    pub forwarded_header: Option<crate::client_ip::ForwardedHeader>,
    /// Refuse to start without a key, even on loopback.
    pub require_key: Option<bool>,
    /// `[server.tls]`: terminate TLS on the listeners with this certificate and key.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Silences the start-up warning about keys in clear text on a non-loopback
    /// address without TLS (TLS is terminated in front of gatewayd).
    pub allow_plaintext: Option<bool>,
}

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
    pub backend: crate::ratelimit::Backend,
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`); env GATEWAYD_REDIS_URL.
    pub redis_url: Option<crate::ratelimit::RedisUrl>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub redis_prefix: String,
    /// The longest a request waits for Redis before the failure policy applies.
    pub redis_timeout_ms: u64,
    /// While Redis is unreachable: "local" (each instance limits alone) or "closed" (503).
    pub redis_failure: crate::ratelimit::RedisFailure,
    /// A concurrency slot held in Redis expires this long after its instance stops
    /// renewing it (a crashed instance does not leak slots).
    pub redis_lease_ttl_secs: u64,
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
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    /// May carry a password: redacted in `Debug`.
    pub database_url: Option<crate::keys::Secret>,
    pub max_messages: usize,
    pub max_bytes: usize,
    /// Sessions one key may hold; 0 = unlimited.
    pub max_sessions_per_key: usize,
    /// How long a continuation waits while another turn of the same session runs.
    pub busy_timeout_secs: u64,
    /// Sessions not continued for this many days are deleted; 0 keeps them forever.
    pub retention_days: u64,
    /// SQLite only: the database file never grows past this; 0 = no cap.
    pub max_database_bytes: u64,
}

impl Default for SessionsSection {
    fn default() -> Self {
        let limits = SessionLimits::default();
        SessionsSection {
            database_url: None,
            max_messages: limits.max_messages,
            max_bytes: limits.max_bytes,
            max_sessions_per_key: limits.max_sessions_per_key,
            busy_timeout_secs: limits.busy_timeout.as_secs(),
            retention_days: 0,
            max_database_bytes: limits.max_database_bytes,
        }
    }
}

impl SessionsSection {
    pub fn limits(&self) -> SessionLimits {
        SessionLimits {
            max_messages: self.max_messages,
            max_bytes: self.max_bytes,
            max_sessions_per_key: self.max_sessions_per_key,
            busy_timeout: Duration::from_secs(self.busy_timeout_secs),
            retention: (self.retention_days > 0)
                .then(|| Duration::from_secs(self.retention_days.saturating_mul(86_400))),
            max_database_bytes: self.max_database_bytes,
        }
    }
}
