//! GET /v1/models and /v1/models/{id}: the models this gateway routes, in the OpenAI shapes (or Anthropic's, for a client that sends `anthropic-version`).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::state::AppState;
use crate::config::keys::ClientKey;
use crate::http::auth::Tenant;
use crate::upstream::CatalogError;
use crate::wire::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        // A wildcard, so ids with '/' (`meta-llama/Llama-3.1-8B`) work.
        .route("/v1/models/{*id}", get(retrieve_model))
}

async fn list_models(
    State(state): State<AppState>,
    Tenant(key): Tenant,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    let mut data = state.upstreams.list_models().await.map_err(unavailable)?;
    // Only what the caller's key may use (its `models` policy).
    data.retain(|model| {
        let id = model.get("id").and_then(Value::as_str).unwrap_or_default();
        may_use(key.as_deref(), id)
    });
    if headers.contains_key("anthropic-version") {
        return Ok(axum::Json(anthropic_list(&data)));
    }
    Ok(axum::Json(json!({"object": "list", "data": data})))
}

/// Anthropic's model list: `{data: [{type, id, display_name, created_at}], has_more,
/// first_id, last_id}`, every model on one page.
fn anthropic_list(models: &[Value]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .filter_map(|model| {
            let id = model.get("id")?.as_str()?;
            let created = model.get("created").and_then(Value::as_i64).unwrap_or(0);
            Some(json!({"type": "model", "id": id, "display_name": id,
                        "created_at": crate::wire::time::rfc3339(created)}))
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": data.first().map(|m| m["id"].clone()),
        "last_id": data.last().map(|m| m["id"].clone()),
    })
}

/// Whether the caller's key (none in keyless mode) may use model `id`.
fn may_use(key: Option<&ClientKey>, id: &str) -> bool {
    key.is_none_or(|key| key.policy.allows_model(id))
}

async fn retrieve_model(
    State(state): State<AppState>,
    Tenant(key): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    // A model the key may not use is answered as one that does not exist: the key
    // learns nothing about the models it cannot call.
    let found = match may_use(key.as_deref(), &id) {
        true => state.upstreams.find_model(&id).await.map_err(unavailable)?,
        false => None,
    };
    match found {
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
