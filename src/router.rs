//! `app(state)`: the routes and the whole tower layer stack, in request order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderName, HeaderValue, Request};
use axum::middleware::from_fn_with_state;
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::auth::RequireApiKeyLayer;
use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers whose values must never reach a log line.
const SENSITIVE_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-api-key"),
];

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
    // loopback mode). The sole exemptions are `auth::PUBLIC_ROUTES`. Right after it,
    // the caller's rate and concurrency limits (429).
    let protected = routes
        .layer(from_fn_with_state(
            state.limiter.clone(),
            crate::ratelimit::per_caller,
        ))
        .layer(RequireApiKeyLayer::new(
            state.keys.clone(),
            state.limiter.clone(),
        ));

    protected.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::new()))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(SetSensitiveRequestHeadersLayer::new(SENSITIVE_HEADERS))
            // The client address (forwarded only by a trusted proxy), for logs and auth.
            .layer(from_fn_with_state(state.clone(), crate::client_ip::layer))
            .layer(TraceLayer::new_for_http().make_span_with(request_span))
            .layer(axum::middleware::from_fn(crate::telemetry::track))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
            ))
            // Header count; keyless mode's Host/Origin/peer/proxy/JSON checks (403, 415).
            .layer(from_fn_with_state(state.clone(), crate::hardening::guard))
            // CORS answers preflights (which carry no key) before auth; off when no
            // origin is configured.
            .option_layer(crate::hardening::cors_layer(&state.config.cors_origins)),
    )
}

/// The span every log line of a request is recorded in; it carries the request id.
/// Headers are deliberately not recorded.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let client = request
        .extensions()
        .get::<crate::client_ip::ClientAddr>()
        .map(|c| c.0);
    match client {
        Some(client) => {
            tracing::info_span!("request", request_id = %id, %client, method = %request.method(), path = %request.uri().path())
        }
        None => {
            tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
        }
    }
}

/// Request ids: a random per-process prefix and a counter; unique, cheap, no lock.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    counter: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let mut seed = [0u8; 6];
        let _ = getrandom::getrandom(&mut seed);
        RequestIds {
            prefix: hex::encode(seed).into(),
            counter: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("req_{}{n:08x}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}
