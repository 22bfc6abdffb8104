//! Config: the TOML file, env and flags merged and validated once, immutable afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{LogFormat, ServeArgs};
use crate::keys::KeyEntry;
use crate::sessions::SessionLimits;

/// The config file as written. Unknown fields are errors so typos never silently
/// weaken a setting.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub sessions: SessionsSection,
    #[serde(default)]
    pub responses: ResponsesSection,
}

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
    /// Refuse to start without a key, even on loopback.
    pub require_key: Option<bool>,
    /// `[server.tls]`: terminate TLS on the listeners with this certificate and key.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Silences the start-up warning about keys in clear text on a non-loopback
    /// address without TLS (TLS is terminated in front of gatewayd).
    pub allow_plaintext: Option<bool>,
}

/// One OpenAI-compatible provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// Base URL including the version path, e.g. https://api.openai.com/v1.
    pub base_url: String,
    /// Env var holding the upstream's key; read once at startup.
    pub api_key_env: Option<String>,
    /// File holding the upstream's key (one trailing newline stripped).
    pub api_key_file: Option<PathBuf>,
    /// Exact model names or trailing-`*` patterns; `"*"` serves any model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Client-facing name → upstream model name.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "defaults::first_byte_timeout")]
    pub first_byte_timeout_secs: u64,
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout_secs: u64,
    /// `/models` of a pattern upstream must answer within this; a slow one must not
    /// hold up the whole list.
    #[serde(default = "defaults::models_timeout")]
    pub models_timeout_secs: u64,
    /// Header that carries the upstream key: `api-key` for Azure OpenAI, `x-api-key`
    /// for some others. Default `Authorization`.
    pub auth_header: Option<String>,
    /// Scheme before the key in `auth_header`; `""` sends the bare key. Default `Bearer`.
    pub auth_scheme: Option<String>,
    /// Static headers sent on every request; a value `env:NAME` or `file:PATH` is read
    /// once at startup and never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderSource>,
    /// Fixed query parameters on every upstream URL, e.g. Azure's `api-version`.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Client request headers forwarded beyond the default safe list (exact names or a
    /// trailing `*`). Credentials, cookies and proxy headers are never forwarded.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// How a complete event stream ends; anything else is a truncated stream.
    #[serde(default)]
    pub stream_end: StreamEnd,
    /// How `/v1/responses` reaches this upstream: translated onto chat completions, or
    /// passed through to its own `/v1/responses` (which then holds the content).
    #[serde(default)]
    pub responses: ResponsesMode,
    /// PEM CA certificates trusted for this upstream, besides the OS store and the
    /// built-in roots (an upstream behind a private CA). Re-read on SIGHUP.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain allowed) for mutual TLS; needs `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`. Never logged.
    pub client_key_file: Option<PathBuf>,
}

/// Whether an upstream implements the Responses API itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponsesMode {
    /// Translated onto `/v1/chat/completions`; gatewayd stores the state.
    #[default]
    Translate,
    /// Forwarded byte for byte to the upstream's `/v1/responses`; gatewayd records only
    /// which key owns each response id, and at which upstream.
    Native,
}

/// A static upstream header value as written: literal, `env:NAME` or `file:PATH`. Its
/// `Debug` shows only where the value comes from, never the value.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct HeaderSource(pub String);

impl std::fmt::Debug for HeaderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.split_once(':') {
            Some((kind @ ("env" | "file"), _)) => write!(f, "{kind}:[REDACTED]"),
            _ => f.write_str("[REDACTED]"),
        }
    }
}

/// How an upstream marks the end of a complete stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamEnd {
    /// `data: [DONE]`, as OpenAI sends it. A stream that ends without it is truncated.
    #[default]
    Done,
    /// The end of the body, for an upstream known to omit `[DONE]`.
    Eof,
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
    pub database_url: Option<String>,
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

mod defaults {
    pub fn connect_timeout() -> u64 {
        5
    }
    pub fn first_byte_timeout() -> u64 {
        60
    }
    pub fn idle_timeout() -> u64 {
        60
    }
    pub fn models_timeout() -> u64 {
        5
    }
}

/// Everything gatewayd runs with, after merging. Built once; never mutated.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub cors_origins: Vec<String>,
    pub shutdown_grace: Duration,
    pub stream_keepalive: Duration,
    pub max_attempts: u32,
    pub key_entries: Vec<KeyEntry>,
    pub upstreams: Vec<UpstreamConfig>,
    pub limits: Limits,
    pub sessions: SessionsSection,
    pub responses: ResponsesSection,
    pub config_path: Option<PathBuf>,
    /// Optional separate `HOST:PORT` for /metrics.
    pub metrics_addr: Option<String>,
    /// `[server] trusted_proxies`; empty = forwarding headers are never believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `[server] require_key`: keyless mode is refused even on loopback.
    pub require_key: bool,
    /// `[server.tls]`, when the listeners terminate TLS.
    pub tls: Option<crate::tls::TlsFiles>,
    /// `[server] allow_plaintext`: no warning about keys in clear text.
    pub allow_plaintext: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Merges flags and env (already combined by clap) over the file over defaults.
    pub fn load(args: &ServeArgs, env_cors: Option<String>) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut upstreams = file.upstreams;
        if let Some(url) = &args.upstream {
            upstreams.insert(
                0,
                UpstreamConfig {
                    name: "default".into(),
                    base_url: url.clone(),
                    api_key_env: std::env::var_os("GATEWAYD_UPSTREAM_API_KEY")
                        .map(|_| "GATEWAYD_UPSTREAM_API_KEY".into()),
                    api_key_file: None,
                    models: vec!["*".into()],
                    aliases: BTreeMap::new(),
                    connect_timeout_secs: defaults::connect_timeout(),
                    first_byte_timeout_secs: defaults::first_byte_timeout(),
                    idle_timeout_secs: defaults::idle_timeout(),
                    models_timeout_secs: defaults::models_timeout(),
                    auth_header: None,
                    auth_scheme: None,
                    headers: BTreeMap::new(),
                    query: BTreeMap::new(),
                    forward_headers: Vec::new(),
                    stream_end: StreamEnd::Done,
                    responses: ResponsesMode::Translate,
                    ca_file: None,
                    client_cert_file: None,
                    client_key_file: None,
                },
            );
        }
        let cors_origins = match env_cors {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(String::from)
                .collect(),
            None => file.server.cors_origins.unwrap_or_default(),
        };
        let trusted_proxies = crate::client_ip::parse_trusted(
            file.server.trusted_proxies.as_deref().unwrap_or_default(),
        )
        .map_err(ConfigError::Invalid)?;
        let mut limits = file.limits;
        if let Some(url) = &args.redis_url {
            limits.redis_url = Some(crate::ratelimit::RedisUrl(url.clone()));
        }
        let mut sessions = file.sessions;
        if args.database_url.is_some() {
            sessions.database_url = args.database_url.clone();
        }
        let config = Config {
            host: args
                .host
                .clone()
                .or(file.server.host)
                .unwrap_or_else(|| "127.0.0.1".into()),
            port: args.port.or(file.server.port).unwrap_or(8642),
            data_dir: args
                .data_dir
                .clone()
                .or(file.server.data_dir)
                .unwrap_or_else(|| PathBuf::from("data")),
            log_format: args
                .log_format
                .or(file.server.log_format)
                .unwrap_or(LogFormat::Text),
            cors_origins,
            shutdown_grace: Duration::from_secs(file.server.shutdown_grace_secs.unwrap_or(30)),
            stream_keepalive: Duration::from_secs(
                file.server.stream_keepalive_secs.unwrap_or(15).max(1),
            ),
            max_attempts: file.server.max_attempts.unwrap_or(3).clamp(1, 10),
            key_entries: file.keys,
            upstreams,
            limits,
            sessions,
            responses: file.responses,
            config_path: args.config.clone(),
            metrics_addr: args.metrics_addr.clone().or(file.server.metrics_addr),
            trusted_proxies,
            require_key: file.server.require_key.unwrap_or(false),
            tls: file.server.tls,
            allow_plaintext: file.server.allow_plaintext.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut names: Vec<&str> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|p| p[0] == p[1]) {
            return Err(ConfigError::Invalid(format!(
                "upstream name {:?} is used twice; names must be unique",
                pair[0]
            )));
        }
        for upstream in &self.upstreams {
            let url = upstream.base_url.as_str();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?}: base_url must start with http:// or https://",
                    upstream.name
                )));
            }
            if upstream.api_key_env.is_some() && upstream.api_key_file.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?}: set api_key_env or api_key_file, not both",
                    upstream.name
                )));
            }
            if upstream.models.is_empty() && upstream.aliases.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?}: list the models it serves (\"*\" for any)",
                    upstream.name
                )));
            }
            if let Some(bad) = upstream
                .models
                .iter()
                .find(|m| m.is_empty() || m.trim_end_matches('*').contains('*'))
            {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?}: model pattern {bad:?} may only end with '*'",
                    upstream.name
                )));
            }
        }
        crate::ratelimit::validate(&self.limits).map_err(ConfigError::Invalid)?;
        if self.limits.max_body_bytes == 0 || self.limits.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "[limits] max_body_bytes and max_connections must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// The `[[keys]]` of the config file as it is now on disk (for a SIGHUP reload). The
/// whole file must still parse: a broken file never half-applies.
pub fn reread_key_entries(path: Option<&Path>) -> Result<Vec<KeyEntry>, ConfigError> {
    match path {
        Some(path) => Ok(read_file(path)?.keys),
        None => Ok(Vec::new()),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_names_field_and_file() {
        let dir = std::env::temp_dir().join(format!("gwd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[server]\nhots = \"0.0.0.0\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let err = Config::load(&args, None).unwrap_err().to_string();
        assert!(err.contains("hots"), "{err}");
        assert!(err.contains("bad.toml"), "{err}");
    }

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = std::env::temp_dir().join(format!("gwd-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ok.toml");
        std::fs::write(&path, "[server]\nhost = \"::1\"\nport = 9000\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            port: Some(9100),
            ..Default::default()
        };
        let config = Config::load(&args, None).unwrap();
        assert_eq!(config.host, "::1");
        assert_eq!(config.port, 9100);
        let defaults = Config::load(&ServeArgs::default(), None).unwrap();
        assert_eq!((defaults.host.as_str(), defaults.port), ("127.0.0.1", 8642));
    }
}
