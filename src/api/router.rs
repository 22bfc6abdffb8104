//! `app(state)`: the api's routes and the edge's whole tower layer stack, in request order.

use axum::Router;
use tower::ServiceBuilder;

use super::state::AppState;
use super::{admin, anthropic, health, metrics, models, openai, responses, sessions, unsupported};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::keys::KeySet;
use crate::http::auth::RequireApiKeyLayer;
use crate::http::edge::EdgeLayer;
use crate::http::hardening::cors_layer;
use crate::http::state::EdgeState;
use crate::wire::error::ApiError;

pub use crate::http::edge::REQUEST_ID;

/// The app for `--metrics-addr`: only /metrics and /health, behind the same layers.
pub fn metrics_app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(health::routes())
        .merge(metrics::routes());
    with_layers(routes, state)
}

pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(health::routes())
        .merge(models::routes())
        .merge(openai::chat::routes())
        .merge(anthropic::routes::routes())
        .merge(sessions::routes())
        .merge(responses::routes::routes())
        .merge(responses::conversations::routes())
        .merge(metrics::routes());
    with_layers(routes, state)
}

/// The admin API's app, for `[admin] listen`: its routes behind the same layers, with
/// an auth boundary that accepts `admin_keys` (the admin key) and nothing else.
pub fn admin_app(state: AppState, admin_keys: Arc<ArcSwap<KeySet>>) -> Router {
    let mut edge = state.edge().clone();
    edge.keys = admin_keys;
    layered(admin::routes(), state, edge)
}

fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    let edge = state.edge().clone();
    layered(routes, state, edge)
}

fn layered(routes: Router<AppState>, state: AppState, edge_state: EdgeState) -> Router {
    let routes = routes
        .fallback(unsupported::fallback)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state.clone());

    // AUTH BOUNDARY. Everything below `RequireApiKeyLayer` — every route and both
    // fallbacks — runs only for a caller with a valid key (or "local" in keyless
    // loopback mode), after the caller's rate and concurrency limits (429). The sole
    // exemptions are `auth::PUBLIC_ROUTES`, matched on route patterns, which is why this
    // one layer sits inside the router.
    let protected = routes.layer(RequireApiKeyLayer::new(
        edge_state.keys.clone(),
        edge_state.limiter.clone(),
    ));

    // Before routing, in one service: request id, redaction marks, client address, log
    // span, metrics, hardening (header count; keyless Host/Origin/peer/proxy/JSON checks)
    // and the security headers. CORS answers preflights (which carry no key) before auth;
    // it is off when no origin is configured.
    let edge = ServiceBuilder::new()
        .layer(EdgeLayer::new(edge_state.clone()))
        .option_layer(cors_layer(&edge_state.config.cors_origins))
        .service(protected);
    Router::new().fallback_service(edge)
}
