//! The daemon's life: guard, bind or inherit sockets, open storage, serve, signals, systemd.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::guard::{GuardError, Resolver};
use crate::keys::{KeySet, ProcessEnv};
use crate::sessions::{SessionError, SessionStore};
use crate::startup::{self, Listener, StartupError};
use crate::upstream::{Registry, UpstreamError};
use crate::{systemd, AppState};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Sessions(#[from] SessionError),
    #[error("--metrics-addr {0:?} must be HOST:PORT, e.g. 127.0.0.1:9464")]
    MetricsAddr(String),
}

impl DaemonError {
    /// 78 (EX_CONFIG) for anything the operator must fix in the configuration.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Startup(err) => err.exit_code(),
            DaemonError::Upstream(_) | DaemonError::MetricsAddr(_) => 78,
            DaemonError::Sessions(_) => 1,
        }
    }
}

impl From<GuardError> for DaemonError {
    fn from(err: GuardError) -> Self {
        DaemonError::Startup(StartupError::Refused(err))
    }
}

/// What the guard accepted, decided before any socket exists.
pub struct Plan {
    pub main: Option<Vec<SocketAddr>>,
    pub metrics: Option<Vec<SocketAddr>>,
}

/// Every address serve would bind, judged. `main` is `None` when systemd passes sockets.
pub fn plan(
    config: &Config,
    strong_key: bool,
    inherited: bool,
    resolver: &dyn Resolver,
) -> Result<Plan, DaemonError> {
    let main = if inherited {
        None
    } else {
        Some(startup::plan(
            &config.host,
            config.port,
            strong_key,
            resolver,
        )?)
    };
    let metrics = match &config.metrics_addr {
        Some(addr) => {
            let (host, port) =
                split_host_port(addr).ok_or_else(|| DaemonError::MetricsAddr(addr.clone()))?;
            Some(startup::plan(host, port, strong_key, resolver)?)
        }
        None => None,
    };
    Ok(Plan { main, metrics })
}

fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

pub fn auth_mode(keys: &KeySet) -> String {
    if keys.is_empty() {
        "keyless (loopback only)".into()
    } else {
        format!("api key required (keys: {})", keys.names().join(", "))
    }
}

async fn open_sessions(config: &Config) -> Result<SessionStore, SessionError> {
    let limits = config.sessions.limits();
    match &config.sessions.database_url {
        Some(url) => SessionStore::open_postgres(url, limits).await,
        None => SessionStore::open_sqlite(&config.data_dir, limits).await,
    }
}

/// Runs until SIGTERM/SIGINT and the drain that follows. Must be called inside a runtime.
pub async fn run(config: Config, keys: KeySet, resolver: &dyn Resolver) -> Result<(), DaemonError> {
    let strong_key = !keys.is_empty();
    // 1. The guard judges every socket systemd passed, by its real address...
    let inherited = systemd::inherited_listeners(strong_key)?;
    // 2. ...and every address we would bind, before any socket is created.
    let plan = plan(&config, strong_key, inherited.is_some(), resolver)?;
    let registry = Registry::from_config(&config.upstreams)?;
    let listeners = match (inherited, &plan.main) {
        (Some(listeners), _) => listeners,
        (None, Some(addrs)) => startup::bind(addrs, strong_key)?
            .into_iter()
            .map(Listener::Tcp)
            .collect(),
        (None, None) => Vec::new(),
    };
    let metrics_listeners: Vec<Listener> = match &plan.metrics {
        Some(addrs) => startup::bind(addrs, strong_key)?
            .into_iter()
            .map(Listener::Tcp)
            .collect(),
        None => Vec::new(),
    };
    let store = open_sessions(&config).await?;
    if config.upstreams.is_empty() {
        tracing::info!("no upstream configured: serving the built-in offline model 'echo'");
    }
    let addresses: Vec<String> = listeners.iter().map(Listener::describe).collect();
    let metrics_addresses: Vec<String> = metrics_listeners.iter().map(Listener::describe).collect();
    tracing::info!(
        addresses = %addresses.join(", "),
        metrics = %metrics_addresses.join(", "),
        auth = %auth_mode(&keys),
        sessions = store.backend(),
        "gatewayd listening"
    );
    let state = AppState::new(config, keys, registry).with_sessions(store);
    let shutdown = CancellationToken::new();
    if let Some(store) = &state.sessions {
        store.spawn_retention(shutdown.clone());
        if let Some(age) = state.config.responses.retention() {
            store.spawn_response_retention(age, shutdown.clone());
        }
    }
    tokio::spawn(handle_signals(state.clone(), shutdown.clone()));
    if !metrics_listeners.is_empty() {
        let metrics_app = crate::router::metrics_app(state.clone());
        tokio::spawn(crate::serve_router(
            state.clone(),
            metrics_app,
            metrics_listeners,
            shutdown.clone(),
        ));
    }
    systemd::notify_ready();
    systemd::spawn_watchdog(shutdown.clone());
    crate::run(state, listeners, shutdown).await;
    tracing::info!("gatewayd stopped");
    Ok(())
}

/// SIGTERM / SIGINT start the drain; SIGHUP reloads the keys.
async fn handle_signals(state: AppState, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => match crate::reload::reload_keys(&state, &ProcessEnv) {
                Ok(count) => tracing::info!(keys = count, auth = %auth_mode(&state.keys.load()), "keys reloaded"),
                Err(err) => tracing::error!(error = %err, "key reload rejected; the previous keys stay in force"),
            },
        }
    }
    tracing::info!("shutdown requested; draining");
    systemd::notify_stopping();
    shutdown.cancel();
}
