//! GET /metrics: Prometheus text format. Behind the auth layer like every non-public route.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::state::AppState;
use crate::telemetry;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(state): State<AppState>) -> impl IntoResponse {
    crate::gateway::routing::export_metrics(&state.upstreams);
    if let Some(store) = &state.sessions {
        match store.count().await {
            Ok(count) => metrics::gauge!(telemetry::SESSIONS_STORED).set(count as f64),
            Err(err) => tracing::warn!(error = %err, "could not count sessions"),
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::handle().render(),
    )
}
