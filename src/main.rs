//! The `gatewayd` binary: parse the CLI, load config and keys, apply the guard, serve.

use std::process::ExitCode;

use clap::Parser;
use gatewayd::cli::{Cli, Command, LogFormat};
use gatewayd::config::Config;
use gatewayd::guard::SystemResolver;
use gatewayd::keys::{self, KeySet, ProcessEnv};
use gatewayd::sessions::{SessionError, SessionLimits, SessionStore};
use gatewayd::upstream::Registry;
use gatewayd::{startup, AppState};
use tokio_util::sync::CancellationToken;

/// EX_CONFIG: the configuration was refused. systemd units use RestartPreventExitStatus=78.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Keygen { sha256 }) => keygen(sha256),
        Some(Command::CheckConfig) => match load(&cli) {
            Ok((config, keys)) => check_config(&config, &keys),
            Err(code) => code,
        },
        Some(Command::Serve) | None => match load(&cli) {
            Ok((config, keys)) => serve(config, keys),
            Err(code) => code,
        },
    }
}

fn fatal(message: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("gatewayd: error: {message}");
    ExitCode::from(code)
}

fn keygen(sha256: bool) -> ExitCode {
    match keys::generate() {
        Ok(key) => {
            println!("{key}");
            if sha256 {
                println!("sha256 = \"{}\"", hex::encode(keys::digest(key.as_bytes())));
            }
            ExitCode::SUCCESS
        }
        Err(err) => fatal(format!("the OS random source failed: {err}"), 1),
    }
}

fn load(cli: &Cli) -> Result<(Config, KeySet), ExitCode> {
    let cors = std::env::var("API_SERVER_CORS_ORIGINS").ok();
    let config = Config::load(&cli.serve, cors).map_err(|e| fatal(e, EXIT_CONFIG))?;
    let keys = keys::load(&ProcessEnv, &config.key_entries).map_err(|e| fatal(e, EXIT_CONFIG))?;
    Ok((config, keys))
}

fn auth_mode(keys: &KeySet) -> String {
    if keys.is_empty() {
        "keyless (loopback only)".into()
    } else {
        format!("api key required (keys: {})", keys.names().join(", "))
    }
}

fn check_config(config: &Config, keys: &KeySet) -> ExitCode {
    match startup::plan(&config.host, config.port, !keys.is_empty(), &SystemResolver) {
        Ok(addrs) => {
            let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            println!("would serve on: {}", addrs.join(", "));
            println!("auth: {}", auth_mode(keys));
            match Registry::from_config(&config.upstreams) {
                Ok(registry) => println!("upstreams: {}", registry.upstream_names().join(", ")),
                Err(err) => return fatal(err, EXIT_CONFIG),
            }
            ExitCode::SUCCESS
        }
        Err(err) => fatal(err, EXIT_CONFIG),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(config: Config, keys: KeySet) -> ExitCode {
    init_tracing(config.log_format);
    let strong_key = !keys.is_empty();
    // The guard judges every address before any socket is created.
    let addrs = match startup::plan(&config.host, config.port, strong_key, &SystemResolver) {
        Ok(addrs) => addrs,
        Err(err) => return fatal(err, EXIT_CONFIG),
    };
    let registry = match Registry::from_config(&config.upstreams) {
        Ok(registry) => registry,
        Err(err) => return fatal(err, EXIT_CONFIG),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fatal(format!("cannot start the async runtime: {err}"), 1),
    };
    runtime.block_on(async move {
        let listeners = match startup::bind(&addrs, strong_key) {
            Ok(listeners) => listeners,
            Err(err) => return fatal(&err, err.exit_code()),
        };
        let bound: Vec<String> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        if config.upstreams.is_empty() {
            tracing::info!("no upstream configured: serving the built-in offline model 'echo'");
        }
        tracing::info!(addresses = %bound.join(", "), auth = %auth_mode(&keys), "gatewayd listening");
        let store = match open_sessions(&config).await {
            Ok(store) => store,
            Err(err) => return fatal(err, 1),
        };
        tracing::info!(backend = store.backend(), "session storage ready");
        let state = AppState::new(config, keys, registry).with_sessions(store);
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        gatewayd::run(state, listeners, shutdown).await;
        tracing::info!("gatewayd stopped");
        ExitCode::SUCCESS
    })
}

async fn open_sessions(config: &Config) -> Result<SessionStore, SessionError> {
    let limits = SessionLimits {
        max_messages: config.sessions.max_messages,
        max_bytes: config.sessions.max_bytes,
    };
    match &config.sessions.database_url {
        Some(url) => SessionStore::open_postgres(url, limits).await,
        None => SessionStore::open_sqlite(&config.data_dir, limits).await,
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested; draining");
    shutdown.cancel();
}
