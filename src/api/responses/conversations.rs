//! /v1/conversations: the caller's sessions under OpenAI's Conversations API (`conv_<hex>` is `sess_<hex>`).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::api::responses::memory;
use crate::api::responses::routes::{id_of, json_response, list, page, ListParams};
use crate::api::responses::translate::raw;
use crate::api::responses::translate::responses_items::items_to_messages;
use crate::api::responses::translate::stored_items::message_to_items;
use crate::api::sessions::check_metadata;
use crate::api::state::AppState;
use crate::gateway::resolve::{conversation_error, conversation_not_found};
use crate::gateway::{Stored, Turn};
use crate::http::auth::Owner;
use crate::http::body::{read_body, require_json};
use crate::store::{
    conversation_id_of_session, session_id_of_conversation, Session, SessionStore, StoredItem,
};
use crate::wire::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/conversations", post(create))
        .route(
            "/v1/conversations/{id}",
            get(read).post(update).delete(remove),
        )
        .route(
            "/v1/conversations/{id}/items",
            get(list_items).post(add_items),
        )
        .route(
            "/v1/conversations/{id}/items/{item_id}",
            get(read_item).delete(remove_item),
        )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConversationBody {
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    /// Read as raw JSON and converted one item at a time (no `Value` tree of the body).
    #[serde(default)]
    items: Option<Box<RawValue>>,
}

async fn body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(ConversationBody, memory::ReleaseAfter), ApiError> {
    let body = read_body(body, state.config.limits.max_body_bytes).await?;
    let release = memory::release_after(body.len());
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((ConversationBody::default(), release));
    }
    require_json(headers)?;
    let parsed: ConversationBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Invalid conversation request: {e}"), None))?;
    if let Some(metadata) = &parsed.metadata {
        check_metadata(metadata)?;
    }
    Ok((parsed, release))
}

fn object(session: &Session) -> Value {
    json!({"id": conversation_id_of_session(&session.id), "object": "conversation",
           "created_at": session.created_at, "metadata": session.metadata})
}

fn session_id(id: &str) -> Result<String, ApiError> {
    session_id_of_conversation(id).map_err(|_| conversation_not_found())
}

/// The chat messages for a JSON list of items.
fn messages_of(items: &RawValue) -> Result<Vec<String>, ApiError> {
    if !raw::is_array(items) {
        return Err(ApiError::bad_request(
            "'items' must be a list.",
            Some("items"),
        ));
    }
    Ok(items_to_messages(items)?)
}

/// Appends messages to the session: a turn on the pipeline with no upstream call.
async fn append(
    state: &AppState,
    owner: &str,
    id: &str,
    messages: Vec<String>,
) -> Result<usize, ApiError> {
    let turn = Turn {
        owner: owner.into(),
        key: None,
        stored: Stored::Conversation(id.to_string()),
        input: messages,
        client_headers: Default::default(),
        records: false,
    };
    crate::gateway::append(state.gateway(), turn).await
}

async fn create(
    State(state): State<AppState>,
    Owner(owner): Owner,
    headers: HeaderMap,
    request: Body,
) -> Result<axum::Json<Value>, ApiError> {
    let (request, _release) = body(&state, &headers, request).await?;
    let messages = match &request.items {
        Some(items) => messages_of(items)?,
        None => Vec::new(),
    };
    let store = state.session_store()?;
    let session = store
        .create(&owner, request.metadata.unwrap_or_default(), None)
        .await
        .map_err(ApiError::from)?;
    if !messages.is_empty() {
        if let Err(err) = append(&state, &owner, &session.id, messages).await {
            // Never leave a half-created conversation behind. If even the delete fails
            // (storage down), the empty conversation stays and is said so in the log.
            if let Err(left) = store.delete(&owner, &session.id).await {
                tracing::warn!(error = %left, "an empty conversation was left behind after its items could not be stored");
            }
            return Err(err);
        }
    }
    Ok(axum::Json(object(&session)))
}

async fn read(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = session_id(&id)?;
    let (session, _, _) = state
        .session_store()?
        .get(&owner, &id)
        .await
        .map_err(conversation_error)?;
    Ok(axum::Json(object(&session)))
}

async fn update(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<axum::Json<Value>, ApiError> {
    let id = session_id(&id)?;
    let (request, _release) = body(&state, &headers, request).await?;
    if request.items.is_some() {
        return Err(ApiError::bad_request(
            "Add items through /items.",
            Some("items"),
        ));
    }
    let store = state.session_store()?;
    let metadata = request.metadata.unwrap_or_default();
    store
        .update_metadata(&owner, &id, &metadata)
        .await
        .map_err(conversation_error)?;
    let (session, _, _) = store.get(&owner, &id).await.map_err(conversation_error)?;
    Ok(axum::Json(object(&session)))
}

async fn remove(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(conversation): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = session_id(&conversation)?;
    state
        .session_store()?
        .delete(&owner, &id)
        .await
        .map_err(conversation_error)?;
    Ok(axum::Json(json!({"id": conversation_id_of_session(&id),
        "object": "conversation.deleted", "deleted": true})))
}

/// Every stored message as items (JSON text each), oldest first; ids are derived from the
/// message's seq.
fn as_items(stored: &[StoredItem]) -> Vec<Box<RawValue>> {
    stored
        .iter()
        .flat_map(|row| message_to_items(&row.json, &row.seq.to_string()))
        .collect()
}

async fn stored_items(
    store: &SessionStore,
    owner: &str,
    id: &str,
) -> Result<Vec<StoredItem>, ApiError> {
    store.items(owner, id).await.map_err(conversation_error)
}

async fn list_items(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
    query: ListParams,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let stored = stored_items(state.session_store()?, &owner, &id).await?;
    page(&as_items(&stored), query)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddItems {
    items: Box<RawValue>,
}

async fn add_items(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    require_json(&headers)?;
    let request = read_body(request, state.config.limits.max_body_bytes).await?;
    let _release = memory::release_after(request.len());
    let request: AddItems = serde_json::from_slice(&request)
        .map_err(|e| ApiError::bad_request(format!("Invalid items request: {e}"), Some("items")))?;
    let added = append(&state, &owner, &id, messages_of(&request.items)?).await?;
    let stored = stored_items(state.session_store()?, &owner, &id).await?;
    let new_rows = &stored[stored.len().saturating_sub(added)..];
    let data = as_items(new_rows);
    let data: Vec<&RawValue> = data.iter().map(AsRef::as_ref).collect();
    Ok(list(&data, false))
}

/// The seq an item id was derived from: `msg_<seq>`, `fc_<seq>_<n>` or `fco_<seq>`.
fn seq_of(item_id: &str) -> Option<i64> {
    let (_, rest) = item_id.split_once('_')?;
    rest.split('_').next()?.parse().ok()
}

fn item_not_found() -> ApiError {
    ApiError::NotFound {
        message: "No item found with that id in this conversation.".into(),
        code: Some("item_not_found"),
    }
}

async fn read_item(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path((id, item_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let stored = stored_items(state.session_store()?, &owner, &id).await?;
    let seq = seq_of(&item_id).ok_or_else(item_not_found)?;
    let rows: Vec<&StoredItem> = stored.iter().filter(|r| r.seq == seq).collect();
    let items = rows
        .first()
        .map(|row| message_to_items(&row.json, &row.seq.to_string()));
    items
        .into_iter()
        .flatten()
        .find(|item| id_of(item).and_then(raw::text).as_deref() == Some(item_id.as_str()))
        .map(|item| json_response(String::from(Box::<str>::from(item))))
        .ok_or_else(item_not_found)
}

/// Deletes the stored message the item came from (with every item derived from it).
async fn remove_item(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path((id, item_id)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = session_id(&id)?;
    let store = state.session_store()?;
    let seq = seq_of(&item_id).ok_or_else(item_not_found)?;
    let deleted = store
        .delete_item(&owner, &id, seq)
        .await
        .map_err(conversation_error)?;
    if !deleted {
        return Err(item_not_found());
    }
    let (session, _, _) = store.get(&owner, &id).await.map_err(conversation_error)?;
    Ok(axum::Json(object(&session)))
}
