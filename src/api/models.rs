//! GET /v1/models and /v1/models/{id}: the models this gateway routes, in the OpenAI shapes (or Anthropic's, for a client that sends `anthropic-version`).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
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

async fn list_models(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    let data = state.upstreams.list_models().await.map_err(unavailable)?;
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
                        "created_at": rfc3339(created)}))
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": data.first().map(|m| m["id"].clone()),
        "last_id": data.last().map(|m| m["id"].clone()),
    })
}

/// Unix seconds as an RFC 3339 UTC time (days to a civil date: H. Hinnant's algorithm).
fn rfc3339(seconds: i64) -> String {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
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

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
