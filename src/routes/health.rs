//! GET /health (liveness) and GET /health/ready (the store takes writes): public, and say nothing about the gateway.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/health/ready", get(ready))
}

/// 503 while session storage cannot take writes, so a load balancer can route around
/// an instance whose disk is full or whose database is gone.
async fn ready(State(state): State<AppState>) -> Response {
    let writable = match &state.sessions {
        Some(store) => store.ready().await,
        None => true,
    };
    if writable {
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::StorageUnavailable.into_response()
    }
}
