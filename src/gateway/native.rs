//! Native passthrough (`responses = "native"`): Responses calls forwarded byte for byte to the upstream that owns them.
//!
//! The upstream stores the content. gatewayd records only, per response id, the key that
//! created it and the upstream that holds it: every client key shares the gateway's
//! upstream key, so without this record key B could read key A's responses at the
//! upstream. Follow-ups (`previous_response_id`, GET, DELETE, `input_items`) go only to that
//! upstream and only for that key; any other id gets the same 404 as an unknown one,
//! without contacting an upstream.

mod stream;

use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;

use crate::gateway::route::{forward_to, respond, stored_response, Answer};
use crate::gateway::Gateway;
use crate::store::{SessionError, SessionStore};
use crate::upstream::headers::forwardable;
use crate::upstream::StoredResponseCall;
use crate::wire::error::ApiError;
use crate::wire::openai::{parse_request, Endpoint};

/// Longest response id accepted from an upstream or a client.
const MAX_ID: usize = 200;

/// An id safe to record and to put in an upstream path: 1–200 ASCII letters, digits,
/// `_` and `-`. Anything else is never recorded or looked up.
pub fn is_native_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What routing needs from the request, read beside the untouched bytes. A duplicated
/// field is refused, so gatewayd and the upstream cannot read different values.
#[derive(Deserialize)]
struct Names {
    previous_response_id: Option<serde_json::Value>,
    conversation: Option<serde::de::IgnoredAny>,
    store: Option<bool>,
    input: Option<serde_json::Value>,
}

/// An `item_reference` names an item stored at the upstream, which holds every key's
/// items under the gateway's one account: gatewayd cannot check whose it is.
fn references_stored_items(input: Option<&serde_json::Value>) -> bool {
    input
        .and_then(serde_json::Value::as_array)
        .is_some_and(|items| {
            items.iter().any(|item| {
                item.get("type").and_then(serde_json::Value::as_str) == Some("item_reference")
            })
        })
}

/// Where a stream's `response.created` id is recorded (absent for `store: false`).
pub struct Recorder {
    pub store: Arc<SessionStore>,
    pub owner: Arc<str>,
    pub upstream: String,
}

impl Recorder {
    pub async fn record(&self, id: &str) -> Result<(), ApiError> {
        if !is_native_id(id) {
            tracing::warn!(upstream = %self.upstream, "native upstream sent an unusable response id; not recorded");
            return Ok(());
        }
        let recorded = self.store.record_native(&self.owner, id, &self.upstream);
        recorded.await.map_err(ApiError::from)
    }
}

/// `POST /v1/responses` for a model whose first upstream is native; `None` means the
/// request is not native and is translated instead.
pub async fn create(
    state: &Gateway,
    owner: &Arc<str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<Response>, ApiError> {
    let Ok(mut request) = parse_request(body.clone(), Endpoint::Responses) else {
        return Ok(None);
    };
    let mut candidates = state.upstreams.candidates(&request.model);
    if !candidates
        .first()
        .is_some_and(|c| c.upstream.native_responses())
    {
        return Ok(None);
    }
    let names: Names = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request("'previous_response_id', 'conversation' and 'store' must each appear once, with a string, an id and a boolean.", None)
    })?;
    if names.conversation.is_some() {
        return Err(ApiError::bad_request(
            "'conversation' is not available for a model served by a native Responses upstream; use previous_response_id.",
            Some("conversation"),
        ));
    }
    if references_stored_items(names.input.as_ref()) {
        return Err(ApiError::bad_request(
            "'item_reference' input items are not available for a model served by a native Responses upstream; send the items themselves, or use previous_response_id.",
            Some("input"),
        ));
    }
    let store = state.session_store()?.clone();
    candidates.retain(|c| c.upstream.native_responses());
    match names.previous_response_id {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(previous)) => {
            let holder = owned_by(&store, owner, &previous).await?.ok_or_else(|| {
                ApiError::NotFound {
                    message: "No stored response with that previous_response_id. Responses created with store: false cannot be continued.".into(),
                    code: Some("previous_response_not_found"),
                }
            })?;
            candidates.retain(|c| c.upstream.name() == holder);
            if candidates.is_empty() {
                return Err(ApiError::bad_request(
                    format!("previous_response_id was created at an upstream that does not serve the model '{}'.", request.model),
                    Some("previous_response_id"),
                ));
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "'previous_response_id' must be a string.",
                Some("previous_response_id"),
            ))
        }
    }
    // LAYERING: the gateway reads the client's credentials through http::auth.
    let token = crate::http::auth::extract_token(headers).ok().flatten();
    request.client_headers = Arc::new(forwardable(headers, token));
    let (answer, upstream) =
        forward_to(state, Endpoint::Responses, &request, None, candidates).await?;
    let recorder = (names.store != Some(false)).then(|| Recorder {
        store,
        owner: owner.clone(),
        upstream,
    });
    let answer = match (answer, recorder) {
        (Answer::Stream(mut response), recorder) => {
            // A Responses stream has no `data: [DONE]`; its last event says it is complete.
            response.require_done = false;
            response.body = stream::tap(response.body, recorder);
            Answer::Stream(response)
        }
        (
            Answer::Complete {
                status,
                content_type,
                body,
            },
            Some(recorder),
        ) if status.is_success() => {
            match serde_json::from_slice::<IdOnly>(&body) {
                Ok(IdOnly { id: Some(id) }) => recorder.record(&id).await?,
                _ => {
                    tracing::warn!(upstream = %recorder.upstream, "native upstream answered without a response id")
                }
            }
            Answer::Complete {
                status,
                content_type,
                body,
            }
        }
        (answer, _) => answer,
    };
    Ok(Some(respond(state, answer, None)))
}

#[derive(Deserialize)]
struct IdOnly {
    id: Option<String>,
}

/// The upstream holding `owner`'s native response `id`, if there is one.
async fn owned_by(store: &SessionStore, owner: &str, id: &str) -> Result<Option<String>, ApiError> {
    if !is_native_id(id) {
        return Ok(None);
    }
    match store.native_upstream(owner, id).await {
        Ok(upstream) => Ok(Some(upstream)),
        Err(SessionError::NotFound) => Ok(None),
        Err(other) => Err(ApiError::from(other)),
    }
}

/// Which stored-response call a route makes, with the client's query string.
pub enum Stored {
    Read(Option<String>),
    Delete,
    InputItems(Option<String>),
}

/// `GET`/`DELETE /v1/responses/{id}` and `GET …/input_items` for `owner`'s native response
/// `id`, answered by the upstream that holds it; `None` when `owner` has no such native
/// response (the route then looks for a translated one).
pub async fn stored(
    state: &Gateway,
    owner: &str,
    headers: &HeaderMap,
    id: &str,
    call: Stored,
) -> Result<Option<Response>, ApiError> {
    let store = state.session_store()?;
    let Some(holder) = owned_by(store, owner, id).await? else {
        return Ok(None);
    };
    let Some(upstream) = state.upstreams.by_name(&holder) else {
        // The upstream left the config: nothing can answer for this response now.
        tracing::warn!(upstream = %holder, "a native response's upstream is no longer configured");
        return Ok(None);
    };
    // LAYERING: the gateway reads the client's credentials through http::auth.
    let token = crate::http::auth::extract_token(headers).ok().flatten();
    let (method, query) = match &call {
        Stored::Delete => (Method::DELETE, None),
        Stored::Read(query) | Stored::InputItems(query) => (Method::GET, query.as_deref()),
    };
    let query = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes());
    let answer = stored_response(
        upstream.as_ref(),
        StoredResponseCall {
            method,
            id: id.to_string(),
            input_items: matches!(call, Stored::InputItems(_)),
            query: query.into_owned().collect(),
            client_headers: Arc::new(forwardable(headers, token)),
        },
    )
    .await?;
    if let (Stored::Delete, Answer::Complete { status, .. }) = (&call, &answer) {
        if status.is_success() || status.as_u16() == 404 {
            store
                .forget_native(owner, id)
                .await
                .map_err(ApiError::from)?;
        }
    }
    Ok(Some(respond(state, answer, None)))
}
