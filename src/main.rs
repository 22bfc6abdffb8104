//! The `gatewayd` binary: parse the CLI, load config and keys, then keygen, check-config or serve.

use std::process::ExitCode;

use clap::Parser;
use gatewayd::cli::{Cli, Command, LogFormat};
use gatewayd::config::Config;
use gatewayd::daemon::{self, auth_mode};
use gatewayd::guard::SystemResolver;
use gatewayd::keys::{self, KeySet, ProcessEnv};
use gatewayd::upstream::Registry;

/// Optional (`--features mimalloc`): less CPU in malloc/free than the system allocator,
/// but more memory held per open stream (see Cargo.toml).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// Prints a fatal error once, on one line, and returns its exit code.
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
    gatewayd::hardening::check_cors_origins(&config.cors_origins, keys.is_empty())
        .map_err(|e| fatal(e, EXIT_CONFIG))?;
    Ok((config, keys))
}

/// Applies exactly serve's guard and policy, prints the verdict, and opens nothing.
fn check_config(config: &Config, keys: &KeySet) -> ExitCode {
    let inherited = std::env::var_os("LISTEN_FDS").is_some();
    let plan = match daemon::plan(config, !keys.is_empty(), inherited, &SystemResolver) {
        Ok(plan) => plan,
        Err(err) => return fatal(&err, err.exit_code()),
    };
    let show = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &plan.main {
        Some(addrs) => println!("would serve on: {}", show(addrs)),
        None => println!("would serve on: the sockets systemd passes (judged when passed)"),
    }
    if let Some(addrs) = &plan.metrics {
        println!("metrics on: {}", show(addrs));
    }
    println!("auth: {}", auth_mode(keys));
    match Registry::from_config(&config.upstreams) {
        Ok(registry) => println!("upstreams: {}", registry.upstream_names().join(", ")),
        Err(err) => return fatal(err, EXIT_CONFIG),
    }
    match &config.sessions.database_url {
        Some(_) => println!("sessions: postgresql"),
        None => println!("sessions: sqlite in {}", config.data_dir.display()),
    }
    ExitCode::SUCCESS
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fatal(format!("cannot start the async runtime: {err}"), 1),
    };
    match runtime.block_on(daemon::run(config, keys, &SystemResolver)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fatal(&err, err.exit_code()),
    }
}
