//! GET /health: liveness for load balancers; public, and says nothing about the gateway.

use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/health",
        get(|| async { axum::Json(json!({"status": "ok"})) }),
    )
}
