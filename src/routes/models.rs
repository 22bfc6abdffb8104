//! GET /v1/models: the models this gateway routes, in the OpenAI list shape.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/models", get(list_models))
}

async fn list_models(State(state): State<AppState>) -> axum::Json<Value> {
    let data: Vec<Value> = state
        .upstreams
        .list_models()
        .await
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    axum::Json(json!({"object": "list", "data": data}))
}
