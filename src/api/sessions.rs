//! /v1/sessions: create, list, read and delete the caller's stored conversations.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::paging::page_limit;
use super::state::AppState;
use crate::http::auth::Owner;
use crate::http::body::{read_body, require_json};
use crate::store::parse_session_id;
use crate::wire::error::ApiError;

const MAX_METADATA_PAIRS: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", post(create).get(list))
        .route("/v1/sessions/{id}", get(read).delete(remove))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    system: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    Owner(owner): Owner,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let store = state.session_store()?;
    let body = read_body(body, state.config.limits.max_body_bytes).await?;
    let request: CreateSession = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSession::default()
    } else {
        require_json(&headers)?;
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("Invalid session request: {e}"), None))?
    };
    check_metadata(&request.metadata)?;
    if request
        .system
        .as_ref()
        .is_some_and(|s| s.len() > store.limits().max_bytes)
    {
        return Err(ApiError::from(store.limit_error()));
    }
    let session = store
        .create(&owner, request.metadata, request.system)
        .await
        .map_err(ApiError::from)?;
    Ok((StatusCode::CREATED, axum::Json(session)).into_response())
}

/// Metadata limits shared by sessions and conversations (the same records).
pub fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if metadata.len() > MAX_METADATA_PAIRS
        || metadata
            .iter()
            .any(|(k, v)| k.len() > MAX_METADATA_KEY || v.len() > MAX_METADATA_VALUE)
    {
        return Err(ApiError::bad_request(
            format!("metadata allows at most {MAX_METADATA_PAIRS} pairs, keys up to {MAX_METADATA_KEY} and values up to {MAX_METADATA_VALUE} bytes."),
            Some("metadata"),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Owner(owner): Owner,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request("'limit' must be a number between 1 and 100.", Some("limit"))
    })?;
    let limit = page_limit(query.limit)?;
    let after = query.after.as_deref().map(parse_session_id).transpose()?;
    let (sessions, has_more) = state
        .session_store()?
        .list(&owner, limit, after)
        .await
        .map_err(ApiError::from)?;
    Ok(axum::Json(json!({
        "object": "list",
        "data": sessions,
        "first_id": sessions.first().map(|s| &s.id),
        "last_id": sessions.last().map(|s| &s.id),
        "has_more": has_more,
    })))
}

async fn read(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_session_id(&id)?;
    let (session, system, messages) = state
        .session_store()?
        .get(&owner, id)
        .await
        .map_err(ApiError::from)?;
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|m| {
            let mut message: Value = serde_json::from_str(&m.json).unwrap_or(Value::Null);
            if let Some(object) = message.as_object_mut() {
                object.insert("created_at".into(), m.created_at.into());
            }
            message
        })
        .collect();
    Ok(axum::Json(json!({
        "id": session.id,
        "object": session.object,
        "created_at": session.created_at,
        "metadata": session.metadata,
        "system": system,
        "messages": messages,
    })))
}

async fn remove(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_session_id(&id)?;
    state
        .session_store()?
        .delete(&owner, id)
        .await
        .map_err(ApiError::from)?;
    Ok(axum::Json(
        json!({"id": id, "object": "session.deleted", "deleted": true}),
    ))
}
