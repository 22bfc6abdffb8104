//! Thin handlers for `/admin/v1/keys`: create (the key shown once), list, show, patch and revoke runtime keys; config keys are shown, never changed.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Value};

use super::fields::{settings_of, view, KeyFields, Usage};
use crate::api::state::AppState;
use crate::config::keys::{self, is_key_name, ClientKey, KeyOrigin, KeySettings};
use crate::store::{Created, GroupBy, SessionError, SessionStore, UsageFilter, UsageRow};
use crate::wire::error::{ApiError, Json};

pub async fn create(
    State(state): State<AppState>,
    Json(fields): Json<KeyFields>,
) -> Result<impl IntoResponse, ApiError> {
    let store = state.session_store()?;
    let name = fields.name.clone().unwrap_or_default();
    if !is_key_name(&name) {
        return Err(ApiError::bad_request(
            "name is required: 1 to 128 characters of A-Z a-z 0-9 - _ .",
            Some("name"),
        ));
    }
    if config_key(&state, &name).is_some() {
        return Err(name_taken(&name));
    }
    let settings = fields.apply(&KeySettings::default())?;
    let key = keys::generate().map_err(|error| {
        tracing::error!(%error, "the OS random source failed; no key was created");
        ApiError::Internal
    })?;
    let digest = keys::digest(key.as_bytes());
    if store.create_key(&name, &digest, &settings).await? == Created::Exists {
        return Err(name_taken(&name));
    }
    tracing::info!(key = %name, "runtime key created");
    let stored = store.get_key(&name).await?;
    let mut body = view(
        &name,
        KeyOrigin::Runtime,
        &settings,
        stored.as_ref(),
        &Usage::default(),
    );
    // Shown this once: only its digest is stored.
    body["key"] = Value::String(key);
    Ok((StatusCode::CREATED, axum::Json(body)))
}

pub async fn list(State(state): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let store = state.session_store()?;
    let usage = usage(store).await?;
    let mut data: Vec<Value> = state
        .keys
        .load()
        .keys
        .iter()
        .filter(|k| k.origin == KeyOrigin::Config)
        .map(|k| view(&k.name, k.origin, &settings_of(k), None, &usage))
        .collect();
    for stored in stored_keys(store).await? {
        let (name, settings) = (&stored.name, &stored.settings);
        data.push(view(
            name,
            KeyOrigin::Runtime,
            settings,
            Some(&stored),
            &usage,
        ));
    }
    Ok(axum::Json(json!({"object": "list", "data": data})))
}

pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let store = state.session_store()?;
    if let Some(key) = config_key(&state, &name) {
        let usage = usage(store).await?;
        return Ok(axum::Json(view(
            &name,
            key.origin,
            &settings_of(&key),
            None,
            &usage,
        )));
    }
    let stored = store.get_key(&name).await?.ok_or_else(|| unknown(&name))?;
    let usage = usage(store).await?;
    let settings = &stored.settings;
    Ok(axum::Json(view(
        &name,
        KeyOrigin::Runtime,
        settings,
        Some(&stored),
        &usage,
    )))
}

pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(fields): Json<KeyFields>,
) -> Result<axum::Json<Value>, ApiError> {
    let store = state.session_store()?;
    if config_key(&state, &name).is_some() {
        return Err(config_owned(&name));
    }
    if fields.name.is_some() {
        return Err(ApiError::bad_request(
            "A key cannot be renamed: create a new key and revoke this one.",
            Some("name"),
        ));
    }
    let stored = store.get_key(&name).await?.ok_or_else(|| unknown(&name))?;
    let settings = fields.apply(&stored.settings)?;
    if !store.update_key(&name, &settings).await? {
        return Err(unknown(&name));
    }
    tracing::info!(key = %name, "runtime key updated");
    let stored = store.get_key(&name).await?;
    let usage = usage(store).await?;
    let origin = KeyOrigin::Runtime;
    Ok(axum::Json(view(
        &name,
        origin,
        &settings,
        stored.as_ref(),
        &usage,
    )))
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let store = state.session_store()?;
    if config_key(&state, &name).is_some() {
        return Err(config_owned(&name));
    }
    if !store.delete_key(&name).await? {
        return Err(unknown(&name));
    }
    tracing::info!(key = %name, "runtime key revoked");
    Ok(axum::Json(
        json!({"object": "api_key.deleted", "name": name, "deleted": true}),
    ))
}

/// The config-file (or environment) key of that name, if one is in force.
fn config_key(state: &AppState, name: &str) -> Option<std::sync::Arc<ClientKey>> {
    state
        .keys
        .load()
        .keys
        .iter()
        .find(|k| k.origin == KeyOrigin::Config && k.name == name)
        .cloned()
}

async fn stored_keys(store: &SessionStore) -> Result<Vec<crate::store::StoredKey>, ApiError> {
    store.list_keys().await.map_err(|error| {
        tracing::error!(%error, "cannot read the runtime keys");
        ApiError::from(error)
    })
}

/// Every key's usage today, this month and ever (UTC), one query per window.
async fn usage(store: &SessionStore) -> Result<Usage, ApiError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let today = crate::wire::time::rfc3339(now);
    let today = &today[..10];
    let month = format!("{}01", &today[..8]);
    let by_key = |from: Option<String>| UsageFilter {
        from,
        group_by: GroupBy::Key,
        ..Default::default()
    };
    let index = |rows: Result<Vec<UsageRow>, SessionError>| {
        rows.map(|rows| {
            rows.into_iter()
                .map(|row| (row.key.clone(), row))
                .collect::<HashMap<_, _>>()
        })
    };
    Ok(Usage {
        day: index(store.usage_rows(&by_key(Some(today.to_string()))).await)?,
        month: index(store.usage_rows(&by_key(Some(month))).await)?,
        total: index(store.usage_rows(&by_key(None)).await)?,
    })
}

fn name_taken(name: &str) -> ApiError {
    ApiError::Conflict(format!(
        "A key named '{name}' already exists. Choose another name, or revoke that key first."
    ))
}

fn config_owned(name: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "The key '{name}' is defined in the config file and cannot be changed through the \
         admin API. Edit its [[keys]] entry and reload gatewayd (`gatewayd reload`)."
    ))
}

fn unknown(name: &str) -> ApiError {
    ApiError::NotFound {
        message: format!(
            "No runtime key named '{}'.",
            name.chars().take(128).collect::<String>()
        ),
        code: Some("key_not_found"),
    }
}
