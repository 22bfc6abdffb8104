//! The `gatewayd` binary: parse the CLI, load config and keys, then keygen, check-config or serve.

use std::process::ExitCode;

use clap::Parser;
use gatewayd::config::cli::{Cli, Command, LogFormat};
use gatewayd::config::keys::{self, ProcessEnv};
use gatewayd::daemon;
use gatewayd::daemon::guard::SystemResolver;
use gatewayd::daemon::verdict::{self, auth_mode, Verdict};

/// Optional (`--features mimalloc`): less CPU in malloc/free than the system allocator,
/// but more memory held per open stream (see Cargo.toml).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// glibc's malloc, tuned so that memory freed after a large request goes back to the OS
/// (measured: eight concurrent 7 MB Responses requests left 300–450 MiB resident with
/// the defaults, 10–30 MiB with this). Two FFI calls without preconditions; the only
/// other unsafe code is the kill(2) of `gatewayd reload` (daemon/control.rs).
#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
mod glibc_malloc {
    /// Allocations of at least this size get a mapping of their own, unmapped when freed.
    /// Setting it also stops glibc from raising it after each large free (up to 32 MiB),
    /// which would keep every later large buffer in its arenas once it is freed.
    const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

    #[allow(unsafe_code)]
    pub fn tune() {
        // SAFETY: mallopt only sets an allocator parameter; main calls it first, before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }

    /// Returns the free pages of every arena to the OS (run after large requests).
    #[allow(unsafe_code)]
    pub fn release() {
        // SAFETY: malloc_trim has no preconditions; it locks each arena in turn.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    {
        glibc_malloc::tune();
        gatewayd::api::responses::memory::set_release(glibc_malloc::release);
    }
    let cli = Cli::parse();
    if let Some(Command::Keygen { sha256 }) = cli.command {
        return keygen(sha256);
    }
    if let Some(Command::Reload) = cli.command {
        return reload(&cli.serve);
    }
    if let Some(Command::Keys { action }) = cli.command {
        return match daemon::keys_cli::run(&cli.serve, &ProcessEnv, action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => fatal(message, 1),
        };
    }
    // One judgment for both commands: check-config prints it, serve acts on it.
    let verdict = match verdict::judge(&cli.serve, &ProcessEnv, &SystemResolver) {
        Ok(verdict) => verdict,
        Err(refusal) => return fatal(&refusal, refusal.exit_code()),
    };
    match cli.command {
        Some(Command::CheckConfig) => check_config(&verdict),
        _ => serve(verdict, cli.serve),
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

/// Signals the running daemon and prints its verdict on the reload.
fn reload(args: &gatewayd::config::cli::ServeArgs) -> ExitCode {
    let cors = std::env::var("API_SERVER_CORS_ORIGINS").ok();
    let located = daemon::control::locate(args, cors);
    let answer = daemon::control::reload(&located);
    if answer.code == daemon::control::exit::APPLIED {
        println!("{}", answer.text);
    } else {
        eprintln!("gatewayd: {}", answer.text);
    }
    ExitCode::from(answer.code)
}

/// Prints serve's verdict (already reached by `verdict::judge`) and opens nothing.
fn check_config(verdict: &Verdict) -> ExitCode {
    for warning in verdict.keys.warnings.iter().chain(&verdict.warnings) {
        eprintln!("gatewayd: warning: {warning}");
    }
    let show = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (&verdict.plan.main, &verdict.inherited) {
        (_, Some(sockets)) => {
            let names: Vec<String> = sockets.iter().map(|s| s.describe()).collect();
            println!("would serve on (passed by systemd): {}", names.join(", "));
        }
        (Some(addrs), None) => println!("would serve on: {}", show(addrs)),
        (None, None) => println!("would serve on: nothing"),
    }
    if let Some(addrs) = &verdict.plan.metrics {
        println!("metrics on: {}", show(addrs));
    }
    if let Some(addrs) = &verdict.plan.admin {
        println!("admin API on: {}", show(addrs));
    }
    let config = &verdict.config;
    println!("auth: {}", auth_mode(&verdict.keys));
    if let Some(tls) = &config.tls {
        println!("tls: {}", tls.cert_file.display());
    }
    println!("limits: {}", limits_mode(&config.limits));
    println!(
        "upstreams: {}",
        verdict.registry.upstream_names().join(", ")
    );
    match &config.sessions.database_url {
        Some(_) => println!("sessions: postgresql"),
        None => println!("sessions: sqlite in {}", config.data_dir.display()),
    }
    if !config.trusted_proxies.is_empty() {
        let nets: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        println!("trusted proxies: {}", nets.join(", "));
    }
    ExitCode::SUCCESS
}

/// Where limits are counted, for check-config (never the Redis URL: it may hold a password).
fn limits_mode(limits: &gatewayd::config::Limits) -> String {
    match limits.backend {
        gatewayd::config::Backend::Local => "local to this process".into(),
        gatewayd::config::Backend::Redis => format!(
            "shared through Redis (prefix {:?}, on failure: {:?})",
            limits.redis_prefix, limits.redis_failure
        ),
    }
}

fn serve(verdict: Verdict, args: gatewayd::config::cli::ServeArgs) -> ExitCode {
    gatewayd::telemetry::logs::init(
        verdict.config.log_format == LogFormat::Json,
        &verdict.config.log_filter,
    );
    // With `[server] workers`, the workers have runtimes of their own and this one is the
    // control thread: signals, reloads, probes, the store's writers, telemetry upkeep.
    let mut builder = if verdict.config.workers > 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return fatal(format!("cannot start the async runtime: {err}"), 1),
    };
    match runtime.block_on(daemon::run(verdict, args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fatal(&err, err.exit_code()),
    }
}
