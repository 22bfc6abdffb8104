//! GET /v1/models and /v1/models/{id}: the models this gateway routes, in the OpenAI shapes.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::state::AppState;
use crate::upstream::CatalogError;
use crate::wire::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        // A wildcard, so ids with '/' (`meta-llama/Llama-3.1-8B`) work.
        .route("/v1/models/{*id}", get(retrieve_model))
}

async fn list_models(State(state): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let data = state.upstreams.list_models().await.map_err(unavailable)?;
    Ok(axum::Json(json!({"object": "list", "data": data})))
}

async fn retrieve_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    match state.upstreams.find_model(&id).await.map_err(unavailable)? {
        Some(model) => Ok(axum::Json(model)),
        None => Err(ApiError::NotFound {
            message: format!(
                "The model '{}' does not exist or is not served by this gateway.",
                id.chars().take(128).collect::<String>()
            ),
            code: Some("model_not_found"),
        }),
    }
}

/// The upstreams that would know failed to answer (each is logged where it failed).
fn unavailable(_: CatalogError) -> ApiError {
    ApiError::BadGateway
}
