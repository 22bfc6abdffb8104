//! /v1/responses: create a response (a turn), read, delete and list its input items, per key.

use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::borrow::Borrow;

use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use crate::api::paging::page_limit;
use crate::api::responses::memory;
use crate::api::responses::native::{self as native, StoredCall as Stored};
use crate::api::responses::translate::raw;
use crate::api::responses::turn::create as create_turn;
use crate::api::state::AppState;
use crate::gateway::resolve::is_response_id;
use crate::http::auth::{Owner, Tenant};
use crate::http::body::{read_body, require_json};
use crate::store::{SessionError, StoredResponse};
use crate::wire::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/responses", post(create))
        .route("/v1/responses/{id}", get(read).delete(remove))
        .route("/v1/responses/{id}/input_items", get(input_items))
}

async fn create(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Tenant(key): Tenant,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = read_body(body, state.config.limits.max_body_bytes).await?;
    let _release = memory::release_after(body.len());
    if let Some(passed) = native::create(&state, &owner, &key, &headers, &body).await? {
        return Ok(passed);
    }
    create_turn(&state, owner, key, &headers, body).await
}

/// Unknown, malformed, `store: false` and another key's ids: all the same 404.
fn not_found() -> ApiError {
    ApiError::NotFound {
        message: "No response found with that id.".into(),
        code: Some("response_not_found"),
    }
}

async fn stored(state: &AppState, owner: &str, id: &str) -> Result<StoredResponse, ApiError> {
    if !is_response_id(id) {
        return Err(not_found());
    }
    state
        .session_store()?
        .response(owner, id)
        .await
        .map_err(|err| match err {
            SessionError::NotFound => not_found(),
            other => ApiError::from(other),
        })
}

async fn read(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if let Some(passed) = native::stored(&state, &owner, &headers, &id, Stored::Read(query)).await?
    {
        return Ok(passed);
    }
    let stored = stored(&state, &owner, &id).await?;
    // The stored text is the object the client received: sent as is.
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        stored.response,
    )
        .into_response())
}

async fn remove(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(passed) = native::stored(&state, &owner, &headers, &id, Stored::Delete).await? {
        return Ok(passed);
    }
    if !is_response_id(&id) {
        return Err(not_found());
    }
    state
        .session_store()?
        .delete_response(&owner, &id)
        .await
        .map_err(|err| match err {
            SessionError::NotFound => not_found(),
            other => ApiError::from(other),
        })?;
    Ok(
        axum::Json(json!({"id": id, "object": "response.deleted", "deleted": true}))
            .into_response(),
    )
}

/// `limit` (1–100, default 20), `after` (an item id) and `order` (`asc` or `desc`, default `desc`).
#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
    order: Option<String>,
}

pub type ListParams = Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>;

async fn input_items(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    query: ListParams,
) -> Result<Response, ApiError> {
    let call = Stored::InputItems(raw);
    if let Some(passed) = native::stored(&state, &owner, &headers, &id, call).await? {
        return Ok(passed);
    }
    let stored = stored(&state, &owner, &id).await?;
    // Each item stays JSON text: no tree of what may be a 10 MB input.
    let items: Vec<&RawValue> =
        serde_json::from_str(&stored.input_items).map_err(|_| ApiError::Internal)?;
    page(&items, query)
}

/// One page of a list of items (oldest first as given), as OpenAI's list objects. The
/// items are copied as JSON text, never parsed into trees.
pub fn page<T: Borrow<RawValue>>(items: &[T], query: ListParams) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request("'limit' must be a number between 1 and 100.", Some("limit"))
    })?;
    let limit = page_limit(query.limit)?;
    let mut items: Vec<&RawValue> = items.iter().map(Borrow::borrow).collect();
    match query.order.as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "'order' must be 'asc' or 'desc'.",
                Some("order"),
            ))
        }
    }
    let start = match &query.after {
        None => 0,
        Some(after) => items
            .iter()
            .position(|item| {
                id_of(item)
                    .and_then(raw::text)
                    .is_some_and(|id| id == after.as_str())
            })
            .map(|at| at + 1)
            .ok_or_else(|| {
                ApiError::bad_request("'after' is not an item id in this list.", Some("after"))
            })?,
    };
    let rest = items.get(start..).unwrap_or_default();
    let data = rest.get(..limit).unwrap_or(rest);
    Ok(list(data, rest.len() > limit))
}

/// An item's `id`, as JSON text.
pub fn id_of(item: &RawValue) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct Id<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
    }
    serde_json::from_str::<Id<'_>>(item.get()).ok()?.id
}

/// OpenAI's list object around `data` (JSON text each).
pub fn list(data: &[&RawValue], has_more: bool) -> Response {
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: &'a [&'a RawValue],
        first_id: Option<&'a RawValue>,
        last_id: Option<&'a RawValue>,
        has_more: bool,
    }
    let list = List {
        object: "list",
        data,
        first_id: data.first().and_then(|item| id_of(item)),
        last_id: data.last().and_then(|item| id_of(item)),
        has_more,
    };
    json_response(serde_json::to_string(&list).unwrap_or_default())
}

/// A 200 with a JSON body gatewayd wrote.
pub fn json_response(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
