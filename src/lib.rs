//! gatewayd: a secure-by-default OpenAI-compatible API gateway.
//!
//! # Layout
//! Layers, top to bottom; imports point down this list, and there are no import cycles
//! (`module-cycles` checks). `http` and `gateway` are siblings and never import each other.
//! - `daemon`    — everything before the first request: the verdict (serve or refuse), the
//!   bind guard, binding or inheriting sockets, signals, SIGHUP reloads, systemd.
//! - `api`       — `app(state)` and `AppState`; one module per resource or protocol
//!   (`openai/`, `responses/` with its translations, sessions, models, health, metrics).
//! - `gateway`   — a turn behind the edge: routing with fallback, the relay, sessions,
//!   the Responses turn and native passthrough; takes `&Gateway`.
//! - `http`      — the edge: serving and admission, client address, deadlines, the edge
//!   service, hardening, the auth boundary, request bodies, TLS; takes `EdgeState`.
//! - `store`     — sessions, conversations, stored responses, leases, group commit, the
//!   history cache and migrations (SQLite or PostgreSQL).
//! - `upstream`  — the provider trait, the registry, the HTTP client, the `echo` model,
//!   which headers cross the gateway, the model catalog.
//! - `limits`    — per-caller rate and concurrency limits and the failed-auth throttle,
//!   local or shared through Redis.
//! - `config`    — plain data: flags, file and env merged and validated once; keys (sources,
//!   policy, digests, key files, `Secret`); imports no runtime module.
//! - `telemetry` — Prometheus metrics, what a request records, cached metric handles.
//! - `wire`      — `ApiError` (the OpenAI-shaped error every client sees) and the few
//!   request fields the gateway reads.
//!
//! The old top-level paths (`gatewayd::auth`, `gatewayd::sessions`, …) stay as re-exports.

pub mod api;
pub mod config;
pub mod daemon;
pub mod gateway;
pub mod http;
pub mod limits;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod wire;

use tokio_util::sync::CancellationToken;

pub use crate::http::listener::Listener;
pub use crate::http::server::LiveRouter;
pub use api::router::app;
pub use api::state::AppState;

// The paths from before the layers, which tests, fuzz targets and examples use.
pub use crate::http::{auth, hardening, server, tls};
pub use config::{cli, keys};
pub use daemon::{guard, verdict};
pub use limits as ratelimit;
pub use store as sessions;
pub use wire::{error, openai};

/// Serves an already-built state on listeners that are already bound (and judged).
/// Returns once `shutdown` has fired and connections have drained.
pub async fn run(state: AppState, listeners: Vec<Listener>, shutdown: CancellationToken) {
    let router = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(app(state.clone())));
    run_live(state, router, listeners, shutdown).await;
}

/// Like [`run`], with the router in force swapped by reloads (the daemon's).
pub async fn run_live(
    state: AppState,
    router: LiveRouter,
    listeners: Vec<Listener>,
    shutdown: CancellationToken,
) {
    gateway::routing::start(state.gateway(), shutdown.clone());
    serve_router(state, router, listeners, shutdown).await;
}

/// Serves `router` (the main app, or the metrics-only app) with the connection limits
/// of `state`, which are set once here.
pub async fn serve_router(
    state: AppState,
    router: LiveRouter,
    listeners: Vec<Listener>,
    shutdown: CancellationToken,
) {
    telemetry::start_upkeep();
    telemetry::auth_log::start_sweeping();
    let options = serve_options(&state, &shutdown, None, None);
    crate::http::server::serve(listeners, router, options, shutdown).await;
}

/// Serves `router` on one worker (`[server] workers`): this worker's own listeners,
/// the connection slots of `admission`, which every worker shares. The control thread
/// has started the process-wide tasks (metric upkeep, auth-log sweeping, probes).
pub async fn serve_worker(
    state: AppState,
    router: LiveRouter,
    listeners: Vec<Listener>,
    shutdown: CancellationToken,
    admission: std::sync::Arc<crate::http::admission::Admission>,
    worker: usize,
) {
    let options = serve_options(&state, &shutdown, Some(admission), Some(worker));
    crate::http::server::serve(listeners, router, options, shutdown).await;
}

fn serve_options(
    state: &AppState,
    shutdown: &CancellationToken,
    admission: Option<std::sync::Arc<crate::http::admission::Admission>>,
    worker: Option<usize>,
) -> crate::http::server::ServeOptions {
    let edge = state.edge();
    let draining = edge.draining.clone();
    let fired = shutdown.clone();
    tokio::spawn(async move {
        fired.cancelled().await;
        draining.cancel();
    });
    crate::http::server::ServeOptions {
        tls: edge.tls.as_ref().map(|tls| tls.acceptor()),
        limits: edge.config.limits.clone(),
        grace: edge.config.shutdown_grace,
        hard_stop: edge.hard_stop.clone(),
        trusted_proxies: edge.config.trusted_proxies.clone(),
        admission,
        worker,
    }
}
