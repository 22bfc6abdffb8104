//! The daemon's life: guard, bind or inherit sockets, open storage, serve, signals, systemd.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::guard::GuardError;
use super::key_book::KeyBook;
use super::reload::Reloads;
use super::report::ReportFiles;
use super::startup::{self, StartupError};
use super::swap::Running;
use super::systemd;
use super::verdict::{auth_mode, Verdict};
use super::workers::{MainSockets, Workers};
use crate::api::router::{admin_app, app, metrics_app};
use crate::api::state::AppState;
use crate::config::cli::ServeArgs;
use crate::config::{Config, TraceExport};
use crate::http::admission::Admission;
use crate::http::listener::Listener;
use crate::http::server::LiveRouter;
use crate::store::{SessionError, SessionStore};

/// What can still fail once the verdict is "serve": binding, and opening storage.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Sessions(#[from] SessionError),
    #[error("cannot install signal handlers: {0}")]
    Signals(String),
    /// `[telemetry] access_log_file` cannot be opened.
    #[error("{0}")]
    AccessLog(String),
    #[error("{0}")]
    Telemetry(String),
    #[error("cannot start the workers: {0}")]
    Workers(String),
}

impl DaemonError {
    /// 78 (EX_CONFIG) for a refusal by the bind-time guard; 1 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Startup(err) => err.exit_code(),
            DaemonError::Sessions(_)
            | DaemonError::Signals(_)
            | DaemonError::AccessLog(_)
            | DaemonError::Telemetry(_)
            | DaemonError::Workers(_) => 1,
        }
    }
}

impl From<GuardError> for DaemonError {
    fn from(err: GuardError) -> Self {
        DaemonError::Startup(StartupError::Refused(err))
    }
}

async fn open_sessions(config: &Config) -> Result<SessionStore, SessionError> {
    let limits = config.sessions.limits();
    match &config.sessions.database_url {
        Some(url) => SessionStore::open_postgres(url.expose(), limits).await,
        None => SessionStore::open_sqlite(&config.data_dir, limits).await,
    }
}

/// Serves what `verdict` accepted until SIGTERM/SIGINT and the drain that follows.
/// `args` are the flags it was judged from, which each reload merges over the file again.
/// Must be called inside a runtime.
pub async fn run(verdict: Verdict, args: ServeArgs) -> Result<(), DaemonError> {
    let Verdict {
        config,
        keys,
        admin_keys,
        plan,
        inherited,
        registry,
        tls,
        warnings,
    } = verdict;
    let strong_key = !keys.is_empty();
    // The guard has judged every passed socket and every address we would bind
    // (`verdict::judge`); binding judges each bound address once more.
    let listeners = MainSockets::open(inherited, plan.main.as_ref(), strong_key, config.workers)?;
    let metrics_listeners: Vec<Listener> = match &plan.metrics {
        Some(addrs) => startup::bind(addrs, strong_key)?
            .into_iter()
            .map(Listener::Tcp)
            .collect(),
        None => Vec::new(),
    };
    // The admin key is strong (the verdict checked it), so the guard passes it; the
    // verdict has already refused a plain-HTTP admin address other machines can reach.
    let admin_listeners: Vec<Listener> = match &plan.admin {
        Some(addrs) => startup::bind(addrs, true)?
            .into_iter()
            .map(Listener::Tcp)
            .collect(),
        None => Vec::new(),
    };
    let admin_warnings = admin_keys.iter().flat_map(|set| &set.warnings);
    for warning in keys.warnings.iter().chain(&warnings).chain(admin_warnings) {
        tracing::warn!("{warning}");
    }
    let store = open_sessions(&config).await?;
    crate::telemetry::access_log::install(&config.telemetry).map_err(DaemonError::AccessLog)?;
    crate::telemetry::set_tokens_by_key(config.telemetry.tokens_by_key());
    if let Some(export) = &config.traces {
        start_traces(export)?;
    }
    if config.upstreams.is_empty() {
        tracing::info!("no upstream configured: serving the built-in offline model 'echo'");
    }
    // Handlers go in before anything says "listening": a SIGHUP or SIGTERM that arrives
    // right after that line must be handled, never take the default action (exit).
    let signals = Signals::install()?;
    // Before the "listening" line, so `gatewayd reload` finds a daemon that says it serves.
    let report_files = ReportFiles::new(args.pid_file.as_deref(), &config.data_dir);
    if let Err(error) = report_files.write_pid() {
        tracing::warn!(
            path = %report_files.pid.display(),
            %error,
            "cannot write the pid file; `gatewayd reload` will not find this process (SIGHUP still reloads)"
        );
    }
    let addresses = listeners.describe();
    let admin_addresses: Vec<String> = admin_listeners.iter().map(Listener::describe).collect();
    let metrics_addresses: Vec<String> = metrics_listeners.iter().map(Listener::describe).collect();
    tracing::info!(
        addresses = %addresses.join(", "),
        metrics = %metrics_addresses.join(", "),
        admin = %admin_addresses.join(", "),
        auth = %auth_mode(&keys),
        tls = tls.is_some(),
        workers = config.workers,
        sessions = store.backend(),
        "gatewayd listening"
    );
    let mut state = AppState::new(config, keys, registry).with_sessions(store);
    if let Some(tls) = tls {
        state = state.with_tls(tls);
    }
    let shutdown = CancellationToken::new();
    if let Some(store) = &state.sessions {
        store.spawn_retention(shutdown.clone());
        if let Some(age) = state.config.responses.retention() {
            store.spawn_response_retention(age, shutdown.clone());
        }
    }
    let book = KeyBook::new(state.keys.clone());
    if let Some(store) = &state.sessions {
        book.clone()
            .start_polling(store.clone(), shutdown.clone())
            .await;
    }
    let router = live(app(state.clone()));
    let metrics_router = (!metrics_listeners.is_empty()).then(|| live(metrics_app(state.clone())));
    let running = Running::new(
        args,
        state.clone(),
        router.clone(),
        metrics_router.clone(),
        book,
    );
    tokio::spawn(handle_signals(
        signals,
        Reloads::start(Arc::new(running), Some(report_files.clone())),
        shutdown.clone(),
    ));
    if let Some(admin_keys) = admin_keys {
        let admin_router = live(admin_app(
            state.clone(),
            Arc::new(ArcSwap::from_pointee(admin_keys)),
        ));
        tokio::spawn(crate::serve_router(
            state.clone(),
            admin_router,
            admin_listeners,
            shutdown.clone(),
        ));
    }
    if let Some(metrics_router) = metrics_router {
        tokio::spawn(crate::serve_router(
            state.clone(),
            metrics_router,
            metrics_listeners,
            shutdown.clone(),
        ));
    }
    systemd::notify_ready();
    systemd::spawn_watchdog(shutdown.clone());
    let workers = match listeners {
        MainSockets::One(listeners) => {
            crate::run_live(state.clone(), router, listeners, shutdown).await;
            None
        }
        MainSockets::PerWorker(sets) => {
            // What every worker shares runs here, on the control runtime.
            crate::gateway::routing::start(state.gateway(), shutdown.clone());
            crate::telemetry::start_upkeep();
            crate::telemetry::auth_log::start_sweeping();
            let limits = &state.config.limits;
            let admission = Admission::new(
                limits.max_connections,
                limits.max_connections_per_ip,
                state.config.trusted_proxies.clone(),
            );
            let mut workers = Workers::start(sets, &state, &router, &admission, &shutdown)
                .map_err(|e| DaemonError::Workers(e.to_string()))?;
            workers.drained().await;
            Some(workers)
        }
    };
    if let Some(store) = &state.sessions {
        // The last second's token usage, written before the process ends.
        if store.flush_usage().await.is_err() {
            tracing::error!("token usage of the last second could not be written at shutdown");
        }
    }
    crate::telemetry::traces::shutdown(TRACES_FLUSH).await;
    if let Some(workers) = workers {
        workers.stop().await;
    }
    report_files.remove_pid();
    tracing::info!("gatewayd stopped");
    Ok(())
}

fn live(router: axum::Router) -> LiveRouter {
    Arc::new(ArcSwap::from_pointee(router))
}

/// How long the spans still queued at shutdown may take to reach the collector.
const TRACES_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts exporting traces (`[telemetry] otlp_endpoint`), with the upstreams' TLS roots.
fn start_traces(export: &TraceExport) -> Result<(), DaemonError> {
    let url = export.url.parse().map_err(|_| {
        DaemonError::Telemetry("[telemetry] otlp_endpoint is not a valid URL".into())
    })?;
    let tls = crate::upstream::tls::default_config()
        .map_err(|e| DaemonError::Telemetry(format!("cannot set up TLS for traces: {e}")))?;
    crate::telemetry::traces::start(crate::telemetry::traces::Settings {
        url,
        service_name: export.service_name.clone(),
        delay: export.delay,
        tls,
    });
    Ok(())
}

/// The signals gatewayd handles, registered with the OS when installed.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, DaemonError> {
        use tokio::signal::unix::{signal, SignalKind};
        let install =
            |kind: SignalKind| signal(kind).map_err(|e| DaemonError::Signals(e.to_string()));
        Ok(Signals {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
        })
    }
}

/// SIGTERM / SIGINT start the drain; SIGHUP reloads the config and TLS files (never
/// waiting: the reload runs on its own task, so SIGTERM is heard while a reload is stuck).
async fn handle_signals(mut signals: Signals, reloads: Reloads, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = signals.interrupt.recv() => break,
            _ = signals.terminate.recv() => break,
            _ = signals.hangup.recv() => reloads.request(),
        }
    }
    tracing::info!("shutdown requested; draining");
    systemd::notify_stopping();
    shutdown.cancel();
}
