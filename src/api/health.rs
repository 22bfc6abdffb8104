//! GET /health (liveness) and GET /health/ready (the store takes writes, the limits can be checked, no drain): public, and say nothing about the gateway.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::state::AppState;
use crate::wire::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/health/ready", get(ready))
}

/// 503 while session storage cannot take writes, while a `redis_failure = "closed"`
/// Redis cannot be reached, and while shutdown drains, so a load balancer can route
/// around an instance that would refuse the request.
async fn ready(State(state): State<AppState>) -> Response {
    if state.draining.is_cancelled() {
        return ApiError::Unavailable.into_response();
    }
    let writable = match &state.sessions {
        Some(store) => store.ready().await,
        None => true,
    };
    if !writable {
        return ApiError::StorageUnavailable.into_response();
    }
    if !state.limiter.ready().await {
        return ApiError::LimitsUnavailable.into_response();
    }
    axum::Json(json!({"status": "ready"})).into_response()
}
