//! Config: the TOML file, env and flags merged and validated once, immutable afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `[server] workers` above this is taken as this: a thread each is plenty.
pub const MAX_WORKERS: usize = 256;

/// `[server] workers` by default: the cores this process may run on (1 if unknown).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

use super::admin::AdminSection;
use super::cli::{LogFormat, ServeArgs};
use super::file_read::{self, FileError, FileKind};
use super::keys::KeyEntry;
use super::limits::{self, Limits, RedisUrl};
use super::proxies::{parse_trusted, ForwardedHeader};
use super::routing::{self, RoutingSection};
use super::sections::{ResponsesSection, ServerSection, SessionsSection};
use super::telemetry::{TelemetrySection, TraceExport};
use super::tls::TlsFiles;
use super::upstream::{defaults, ResponsesMode, StreamEnd, UpstreamApi, UpstreamConfig};

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
    #[serde(default)]
    pub routing: RoutingSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub admin: AdminSection,
}

/// Everything gatewayd runs with, after merging. Built once; never mutated.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// `[server] log_filter`: which log lines are written (RUST_LOG, when set, wins).
    pub log_filter: String,
    pub cors_origins: Vec<String>,
    pub shutdown_grace: Duration,
    /// `[server] workers`: 0 serves on one multi-threaded runtime; N on N single-threaded
    /// runtimes, each with its own listening sockets and upstream connections.
    pub workers: usize,
    pub stream_keepalive: Duration,
    pub max_attempts: u32,
    pub key_entries: Vec<KeyEntry>,
    pub upstreams: Vec<UpstreamConfig>,
    pub limits: Limits,
    pub sessions: SessionsSection,
    pub responses: ResponsesSection,
    /// `[routing]`: strategies, circuit breakers, the retry budget, probes.
    pub routing: RoutingSection,
    /// `[telemetry]`: access log and traces.
    pub telemetry: TelemetrySection,
    /// Where spans are exported (`[telemetry] otlp_endpoint` or the `OTEL_*` variables);
    /// `None`: no traces.
    pub traces: Option<TraceExport>,
    /// The first upstream came from `--upstream` / GATEWAYD_UPSTREAM_URL, not the file
    /// (a reload keeps it).
    pub upstream_from_flag: bool,
    pub config_path: Option<PathBuf>,
    /// Optional separate `HOST:PORT` for /metrics.
    pub metrics_addr: Option<String>,
    /// `[server] trusted_proxies`; empty = forwarding headers are never believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `[server] forwarded_header`: the header trusted proxies write the client into.
    pub forwarded_header: ForwardedHeader,
    /// `[server] require_key`: keyless mode is refused even on loopback.
    pub require_key: bool,
    /// `[server.tls]`, when the listeners terminate TLS.
    pub tls: Option<TlsFiles>,
    /// `[server] allow_plaintext`: no warning about keys in clear text.
    pub allow_plaintext: bool,
    /// `[admin]`: the admin API's listener and key source.
    pub admin: AdminSection,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}")]
    Read(#[from] FileError),
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
                    api: UpstreamApi::Openai,
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
                    max_output_tokens: None,
                    ca_file: None,
                    client_cert_file: None,
                    client_key_file: None,
                    weight: defaults::weight(),
                    priority: 0,
                    max_in_flight: 0,
                    failure_threshold: None,
                    cooldown_secs: None,
                    max_cooldown_secs: None,
                    probe_path: None,
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
        let trusted_proxies =
            parse_trusted(file.server.trusted_proxies.as_deref().unwrap_or_default())
                .map_err(ConfigError::Invalid)?;
        let traces = file
            .telemetry
            .trace_export(|name| std::env::var(name).ok())
            .map_err(ConfigError::Invalid)?;
        let mut limits = file.limits;
        if let Some(url) = &args.redis_url {
            limits.redis_url = Some(RedisUrl(url.clone()));
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
            log_filter: file.server.log_filter.unwrap_or_else(|| "info".into()),
            cors_origins,
            shutdown_grace: Duration::from_secs(file.server.shutdown_grace_secs.unwrap_or(30)),
            workers: file.server.workers.unwrap_or_else(cores).min(MAX_WORKERS),
            stream_keepalive: Duration::from_secs(
                file.server.stream_keepalive_secs.unwrap_or(15).max(1),
            ),
            max_attempts: file.server.max_attempts.unwrap_or(3).clamp(1, 10),
            key_entries: file.keys,
            upstreams,
            limits,
            sessions,
            responses: file.responses,
            routing: file.routing,
            telemetry: file.telemetry,
            traces,
            upstream_from_flag: args.upstream.is_some(),
            config_path: args.config.clone(),
            metrics_addr: args.metrics_addr.clone().or(file.server.metrics_addr),
            trusted_proxies,
            forwarded_header: file.server.forwarded_header.unwrap_or_default(),
            require_key: file.server.require_key.unwrap_or(false),
            tls: file.server.tls,
            allow_plaintext: file.server.allow_plaintext.unwrap_or(false),
            admin: file.admin,
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
            if upstream.api == UpstreamApi::Anthropic && upstream.responses == ResponsesMode::Native
            {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?}: responses = \"native\" cannot be used with api = \"anthropic\" (an Anthropic upstream serves only the Messages API); remove one of them",
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
        if let Err(err) = tracing_subscriber::EnvFilter::builder().parse(&self.log_filter) {
            return Err(ConfigError::Invalid(format!(
                "[server] log_filter {:?} is not a log filter ({err}); write a level such as \"info\", or e.g. \"warn,gatewayd=debug\"",
                self.log_filter
            )));
        }
        limits::validate(&self.limits).map_err(ConfigError::Invalid)?;
        let redis = self.limits.backend == limits::Backend::Redis;
        routing::validate(&self.routing, &self.upstreams, redis).map_err(ConfigError::Invalid)?;
        if self.limits.max_body_bytes == 0 || self.limits.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "[limits] max_body_bytes and max_connections must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// The `--config` value that reads the config from standard input.
pub const STDIN_CONFIG: &str = "-";

/// The configuration as it is now, for a SIGHUP reload: the file re-read and merged
/// with the same flags and environment as at start, and checked the same way. A config
/// read from standard input cannot be read again: it stays as read at start.
pub fn reread(
    current: &Config,
    args: &ServeArgs,
    env_cors: Option<String>,
) -> Result<Config, ConfigError> {
    match current.config_path.as_deref() {
        Some(path) if path == Path::new(STDIN_CONFIG) => Ok(current.clone()),
        _ => Config::load(args, env_cors),
    }
}

/// The config file (or standard input for `-`), through the shared reader: a regular
/// file of at most 4 MiB, read under its deadline.
fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = if path == Path::new(STDIN_CONFIG) {
        file_read::read_stdin(FileKind::Config)?
    } else {
        file_read::read_text(path, FileKind::Config)?
    };
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_database_password() {
        let args = ServeArgs {
            database_url: Some("postgres://gw:hunter2@db/gw".parse().unwrap()),
            ..Default::default()
        };
        let config = Config::load(&args, None).unwrap();
        for shown in [format!("{args:?}"), format!("{config:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("[REDACTED]"));
        }
    }

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
