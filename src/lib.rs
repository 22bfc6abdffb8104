//! gatewayd: a secure-by-default OpenAI-compatible API gateway.
//!
//! # Layout
//! - `cli`      — command-line flags and env fallbacks (the `--help` text).
//! - `config`   — file + env + flags merged and validated once.
//! - `keys`     — key sources, the strong-key policy (`keys/policy.rs`), digests, `keygen`.
//! - `keyfile`  — reading one key file: regular only, non-blocking, bounded, deadline.
//! - `verdict`  — one judgment, from the environment to serve-or-refuse, for both commands.
//! - `guard`    — pure: which addresses a host means; may we serve on them?
//! - `daemon`   — the daemon's life: guard, sockets, storage, signals, systemd.
//! - `startup`  — binds sockets under the guard.
//! - `server`   — accept loops, connection limits, timeouts, graceful drain.
//! - `watchdog` — per-connection deadlines: silent, slowloris, idle and unread connections.
//! - `admission` — per-IP connection counts, and closing idle connections near the limit.
//! - `body_deadline` — the request body must arrive in time (408).
//! - `hold`     — a response body that holds a permit until the body ends.
//! - `router`   — `app(state)`: routes, the edge and the auth boundary.
//! - `edge`     — one service before routing: request id, client address, span, metrics,
//!   hardening, security headers.
//! - `client_ip` — the client address: the peer, or what a trusted proxy forwarded.
//! - `hardening` — header count, keyless mode's Host/Origin/peer/proxy checks, CORS.
//! - `auth`     — the auth boundary (tower layer).
//! - `ratelimit` — per-caller rate and concurrency limits; failed-auth throttle; local
//!   or shared through Redis (`ratelimit/shared.rs`), with the Redis failure policy.
//! - `tls`      — TLS on the listeners (`[server.tls]`), reloaded on SIGHUP.
//! - `error`    — `ApiError`, the OpenAI-shaped error every client sees.
//! - `openai`   — the few wire fields the gateway reads; the rest passes through.
//! - `proxy`    — routing a request across upstreams with fallback.
//! - `relay`    — byte-faithful SSE relay with keep-alives and error endings.
//! - `reload`   — SIGHUP: swap the key set atomically.
//! - `systemd`  — sd_notify readiness/watchdog and socket activation.
//! - `upstream` — the provider trait, registry, HTTP client, the `echo` model, which
//!   headers cross the gateway (`upstream/headers.rs`) and the model catalog.
//! - `conversation` — continuing a stored session around one chat turn.
//! - `sessions` — the session store (SQLite or PostgreSQL) and reply assembly.
//! - `routes`   — one module per resource, and the 404 fallback (`routes/unsupported.rs`).
//! - `translate` — pure wire-format translations (Responses ⇄ chat).
//! - `responses` — the Responses API turn: state named by id or conversation, translated, committed;
//!   `responses/native.rs` passes it through to upstreams that serve it (`responses = "native"`).
//! - `state`    — `AppState`.
//! - `telemetry` — Prometheus metrics, what a request records, and cached metric handles.

pub mod admission;
pub mod auth;
pub mod body_deadline;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod daemon;
pub mod edge;
pub mod error;
pub mod gateway;
pub mod guard;
pub mod hardening;
pub mod hold;
pub mod keyfile;
pub mod keys;
pub mod openai;
pub mod proxy;
pub mod ratelimit;
pub mod relay;
pub mod reload;
pub mod router;
pub mod routes;
pub mod server;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod translate;
pub mod upstream;
pub mod verdict;
pub mod watchdog;

use tokio_util::sync::CancellationToken;

pub use router::app;
pub use startup::Listener;
pub use state::AppState;

/// Serves an already-built state on listeners that are already bound (and judged).
/// Returns once `shutdown` has fired and connections have drained.
pub async fn run(state: AppState, listeners: Vec<Listener>, shutdown: CancellationToken) {
    let app = app(state.clone());
    serve_router(state, app, listeners, shutdown).await;
}

/// Serves `router` (the main app, or the metrics-only app) with the state's limits.
pub async fn serve_router(
    state: AppState,
    router: axum::Router,
    listeners: Vec<Listener>,
    shutdown: CancellationToken,
) {
    telemetry::start_upkeep();
    let draining = state.draining.clone();
    let fired = shutdown.clone();
    tokio::spawn(async move {
        fired.cancelled().await;
        draining.cancel();
    });
    let options = server::ServeOptions {
        tls: state.tls.as_ref().map(|tls| tls.acceptor()),
        limits: state.config.limits.clone(),
        grace: state.config.shutdown_grace,
        hard_stop: state.hard_stop.clone(),
        trusted_proxies: state.config.trusted_proxies.clone(),
    };
    server::serve(listeners, router, options, shutdown).await;
}
