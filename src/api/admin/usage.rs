//! `GET /admin/v1/usage`: token usage rows by day, model or key, filtered by key, model and a range of UTC days.

use axum::extract::{RawQuery, State};
use serde_json::{json, Value};

use crate::api::state::AppState;
use crate::store::{is_day, GroupBy, UsageFilter};
use crate::wire::error::ApiError;

pub async fn report(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<axum::Json<Value>, ApiError> {
    let filter = parse(query.as_deref().unwrap_or_default())?;
    let rows = state.session_store()?.usage_rows(&filter).await?;
    Ok(axum::Json(json!({"object": "list", "data": rows})))
}

/// `key`, `model`, `from`, `to` (YYYY-MM-DD, both included) and `group_by`
/// (`day`, `model` or `key`); anything else is a 400.
pub fn parse(query: &str) -> Result<UsageFilter, ApiError> {
    let mut filter = UsageFilter::default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match name.as_ref() {
            "key" => filter.key = Some(value),
            "model" => filter.model = Some(value),
            "from" | "to" if !is_day(&value) => {
                return Err(ApiError::bad_request(
                    format!("{name} must be a UTC day written YYYY-MM-DD"),
                    None,
                ))
            }
            "from" => filter.from = Some(value),
            "to" => filter.to = Some(value),
            "group_by" => {
                filter.group_by = match value.as_str() {
                    "day" => GroupBy::Day,
                    "model" => GroupBy::Model,
                    "key" => GroupBy::Key,
                    _ => {
                        return Err(ApiError::bad_request(
                            "group_by must be day, model or key",
                            Some("group_by"),
                        ))
                    }
                }
            }
            other => {
                return Err(ApiError::bad_request(
                    format!(
                        "Unknown parameter '{}': use key, model, from, to or group_by.",
                        other.chars().take(64).collect::<String>()
                    ),
                    None,
                ))
            }
        }
    }
    Ok(filter)
}
