//! The `[server]`, `[sessions]` and `[responses]` sections as written, with their defaults
//! (and the session limits and tool policy the runtime takes from them).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::cli::LogFormat;
use super::keys::Secret;
use super::proxies::ForwardedHeader;
use super::tls::TlsFiles;

/// `[responses]`: the Responses API over chat-completions upstreams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesSection {
    /// Built-in and unknown tools a chat upstream cannot run: "drop" (default) or "reject".
    pub unsupported_tools: ToolPolicy,
    /// Stored responses older than this many days are deleted; 0 keeps them forever.
    pub retention_days: u64,
    /// What one key's stored responses may hold together (bytes); 0 = no limit.
    pub max_bytes_per_key: u64,
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
            max_bytes_per_key: 256 * 1024 * 1024,
        }
    }
}

/// What to do with tools a chat upstream cannot run (`[responses] unsupported_tools`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolPolicy {
    /// Remove them before the upstream call, and say so in `x-gatewayd-dropped-tools`.
    #[default]
    Drop,
    /// Refuse the request with 400 naming the tool.
    Reject,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    /// Which log lines are written, as a tracing filter (`info`, `warn,gatewayd=debug`);
    /// RUST_LOG, when set, takes its place.
    pub log_filter: Option<String>,
    /// Exact browser origins allowed by CORS; empty disables CORS entirely.
    pub cors_origins: Option<Vec<String>>,
    pub shutdown_grace_secs: Option<u64>,
    /// How many single-threaded runtimes serve requests, each on its own thread with its
    /// own listening sockets; 0 keeps one multi-threaded runtime.
    pub workers: Option<usize>,
    pub stream_keepalive_secs: Option<u64>,
    pub max_attempts: Option<u32>,
    pub metrics_addr: Option<String>,
    /// Reverse proxies (CIDRs) whose X-Forwarded-For / Forwarded name the real client.
    pub trusted_proxies: Option<Vec<String>>,
    /// The one header those proxies write the client into.
    pub forwarded_header: Option<ForwardedHeader>,
    /// Refuse to start without a key, even on loopback.
    pub require_key: Option<bool>,
    /// `[server.tls]`: terminate TLS on the listeners with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// Silences the start-up warning about keys in clear text on a non-loopback
    /// address without TLS (TLS is terminated in front of gatewayd).
    pub allow_plaintext: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    /// May carry a password: redacted in `Debug`.
    pub database_url: Option<Secret>,
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
    /// Memory for recent histories (0 = no cache).
    pub cache_bytes: u64,
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
            cache_bytes: limits.cache_bytes,
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
            cache_bytes: self.cache_bytes,
        }
    }
}

/// Limits and policies from `[sessions]`.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
    /// 0 = unlimited.
    pub max_sessions_per_key: usize,
    /// How long a continuation waits for another turn of the same session.
    pub busy_timeout: Duration,
    /// Sessions idle this long are purged; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// SQLite only: the database file never grows past this many bytes (0 = no cap).
    pub max_database_bytes: u64,
    /// Memory the history cache may hold (0 = no cache). Taken at open.
    pub cache_bytes: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_messages: 1000,
            max_bytes: 8 * 1024 * 1024,
            max_sessions_per_key: 10_000,
            busy_timeout: Duration::from_secs(10),
            retention: None,
            max_database_bytes: 0,
            cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
        }
    }
}
