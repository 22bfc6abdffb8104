//! `app(state)`: the routes and the whole tower layer stack, in request order.

use axum::Router;
use tower::ServiceBuilder;

use crate::auth::RequireApiKeyLayer;
use crate::edge::EdgeLayer;
use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;

pub use crate::edge::REQUEST_ID;

/// The app for `--metrics-addr`: only /metrics and /health, behind the same layers.
pub fn metrics_app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(routes::health::routes())
        .merge(routes::metrics::routes());
    with_layers(routes, state)
}

pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(routes::health::routes())
        .merge(routes::models::routes())
        .merge(routes::chat::routes())
        .merge(routes::sessions::routes())
        .merge(routes::responses::routes())
        .merge(routes::conversations::routes())
        .merge(routes::metrics::routes());
    with_layers(routes, state)
}

fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    let routes = routes
        .fallback(routes::unsupported::fallback)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state.clone());

    // AUTH BOUNDARY. Everything below `RequireApiKeyLayer` — every route and both
    // fallbacks — runs only for a caller with a valid key (or "local" in keyless
    // loopback mode), after the caller's rate and concurrency limits (429). The sole
    // exemptions are `auth::PUBLIC_ROUTES`, matched on route patterns, which is why this
    // one layer sits inside the router.
    let protected = routes.layer(RequireApiKeyLayer::new(
        state.keys.clone(),
        state.limiter.clone(),
    ));

    // Before routing, in one service: request id, redaction marks, client address, log
    // span, metrics, hardening (header count; keyless Host/Origin/peer/proxy/JSON checks)
    // and the security headers. CORS answers preflights (which carry no key) before auth;
    // it is off when no origin is configured.
    let edge = ServiceBuilder::new()
        .layer(EdgeLayer::new(state.clone()))
        .option_layer(crate::hardening::cors_layer(&state.config.cors_origins))
        .service(protected);
    Router::new().fallback_service(edge)
}
