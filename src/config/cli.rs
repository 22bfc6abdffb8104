//! Command-line interface (clap derive). The doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// gatewayd: a secure-by-default OpenAI-compatible API gateway.
///
/// With no subcommand it serves (same as `gatewayd serve`). Keys are never taken from
/// the command line (they would show in /proc/*/cmdline): use API_SERVER_KEY,
/// API_SERVER_KEY_FILE, systemd's LoadCredential=api_server_key, or [[keys]] digests.
#[derive(Debug, Parser)]
#[command(name = "gatewayd", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print a fresh random key (gwd_ + 32 random bytes, base64url).
    Keygen {
        /// Also print the key's SHA-256, for a [[keys]] entry in the config file.
        #[arg(long)]
        sha256: bool,
    },
    /// Load the configuration, apply the guard and key policy exactly as `serve` would,
    /// print what serve would do, and exit 0 (would serve) or 78 (would refuse).
    CheckConfig,
    /// Ask the gatewayd running with this config (found through its pid file) to re-read
    /// its config, and print what changed, what needs a restart, or why nothing changed.
    /// Exits 0 (applied), 1 (kept the old config), 3 (not running) or 4 (not permitted).
    Reload,
    /// Manage runtime keys and read token usage in the store this config names (SQLite
    /// in the data dir, or [sessions] database_url), with the daemon stopped. While a
    /// daemon owns a SQLite store, use the admin API instead.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a runtime key and print it, once (only its SHA-256 is stored).
    Create {
        /// The key's name: it owns sessions and usage, and appears in logs.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        policy: PolicyFlags,
    },
    /// List the keys: [[keys]] from the config file and runtime keys from the store.
    List,
    /// Revoke a runtime key (config-file keys are removed from the file).
    Revoke {
        /// The name of the runtime key.
        name: String,
    },
    /// Print token usage rows.
    Usage {
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        model: Option<String>,
        /// First UTC day, YYYY-MM-DD.
        #[arg(long)]
        from: Option<String>,
        /// Last UTC day, YYYY-MM-DD (included).
        #[arg(long)]
        to: Option<String>,
        /// day, model or key.
        #[arg(long, default_value = "day")]
        group_by: String,
    },
}

/// A runtime key's policy on the command line; the same fields as `[[keys]]`.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyFlags {
    /// Models the key may use: exact names or trailing-`*` patterns, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Input plus output tokens per UTC day.
    #[arg(long)]
    pub tokens_per_day: Option<u64>,
    /// Input plus output tokens per UTC month.
    #[arg(long)]
    pub tokens_per_month: Option<u64>,
    /// Input plus output tokens, ever.
    #[arg(long)]
    pub tokens_total: Option<u64>,
    /// RFC 3339 time after which the key is refused, e.g. 2027-01-31T23:59:59Z.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Create the key disabled.
    #[arg(long)]
    pub disabled: bool,
    #[arg(long)]
    pub requests_per_minute: Option<u32>,
    #[arg(long)]
    pub concurrent_requests: Option<u32>,
}

/// Settings that override the config file. Precedence: flags > env > file > defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to bind: an IP literal, `localhost`, or a host name resolved once.
    /// Anything but loopback requires a strong API key. [default: 127.0.0.1]
    #[arg(long, env = "API_SERVER_HOST", global = true)]
    pub host: Option<String>,

    /// TCP port; 0 picks a free port (the startup log shows the real one). [default: 8642]
    #[arg(long, env = "API_SERVER_PORT", global = true)]
    pub port: Option<u16>,

    /// Optional TOML config file (a regular file of at most 4 MiB); see
    /// config/gatewayd.example.toml. `-` reads it from standard input, once: a SIGHUP
    /// then keeps its [[keys]] and re-reads only the key files.
    #[arg(long, env = "GATEWAYD_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// One OpenAI-compatible upstream serving every model, e.g. http://127.0.0.1:8000/v1.
    /// Its key comes from GATEWAYD_UPSTREAM_API_KEY.
    #[arg(long, env = "GATEWAYD_UPSTREAM_URL", global = true)]
    pub upstream: Option<String>,

    /// Directory for the SQLite session database, created with mode 0700. [default: ./data]
    #[arg(long, env = "GATEWAYD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// PostgreSQL URL for sessions shared by several instances (instead of SQLite).
    #[arg(
        long,
        env = "GATEWAYD_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<super::keys::Secret>,

    /// Redis for limits shared by several instances (with `[limits] backend = "redis"`).
    #[arg(
        long,
        env = "GATEWAYD_REDIS_URL",
        global = true,
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// Also serve GET /metrics (still key-protected) on this HOST:PORT, e.g.
    /// 127.0.0.1:9464. The startup guard judges it like the main address.
    #[arg(long, env = "GATEWAYD_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<String>,

    /// The pid file gatewayd writes at start and removes at exit, and `gatewayd reload`
    /// reads. [default: gatewayd.pid in the data dir]
    #[arg(long, env = "GATEWAYD_PID_FILE", global = true)]
    pub pid_file: Option<PathBuf>,

    /// Log format. [default: text]
    #[arg(long, env = "GATEWAYD_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}
