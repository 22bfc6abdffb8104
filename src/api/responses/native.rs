//! The Responses API adapter for native upstreams (`responses = "native"`): calls pass through byte for byte to the upstream that owns them.
//!
//! The pipeline records, per response id, the key that created it and the upstream that
//! holds it (see `gateway/native_record.rs`). Follow-ups (`previous_response_id`, GET,
//! DELETE, `input_items`) go only to that upstream and only for that key; any other id
//! gets the same 404 as an unknown one, without contacting an upstream.

use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::api::responses::translate::{raw, Refusal};
use crate::api::state::AppState;
use crate::config::keys::ClientKey;
use crate::gateway::resolve::native_holder;
use crate::gateway::route::{respond, stored_response, Answer};
use crate::gateway::{Native, NativeApi, Stored, Turn};
use crate::http::auth::client_headers;
use crate::upstream::StoredResponseCall;
use crate::wire::error::ApiError;
use crate::wire::openai::{parse_request, Endpoint};

/// What routing needs from the request, read beside the untouched bytes (borrowed, never
/// parsed into a tree). A duplicated field is refused, so gatewayd and the upstream cannot
/// read different values.
#[derive(Deserialize)]
struct Names<'a> {
    #[serde(borrow)]
    previous_response_id: Option<&'a RawValue>,
    conversation: Option<IgnoredAny>,
    store: Option<bool>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
}

/// An input item, as far as telling a reference from an item goes.
#[derive(Deserialize)]
struct ItemShape<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    role: Option<IgnoredAny>,
    #[serde(default)]
    content: Option<IgnoredAny>,
}

impl ItemShape<'_> {
    /// An `item_reference`, named or by shape. OpenAI's schema makes `type` optional for
    /// two items only: a message (which has a `role` and a `content`) and a reference
    /// (which has an `id`). So an item with an `id` and no `type` that is not a message
    /// is read upstream as a reference, whatever other fields it carries.
    fn is_reference(&self) -> bool {
        match self.kind {
            Some(kind) => raw::text(kind).is_some_and(|kind| kind == "item_reference"),
            None => self.id.is_some() && !(self.role.is_some() && self.content.is_some()),
        }
    }
}

/// Whether `input` refers to items stored at the upstream, which holds every key's items
/// under the gateway's one account: gatewayd cannot check whose they are. An item that
/// repeats one of the fields read here is refused too, so the upstream cannot read it
/// differently.
fn references_stored_items(input: Option<&RawValue>) -> bool {
    let Some(items) = input.filter(|input| raw::is_array(input)) else {
        return false;
    };
    raw::for_each(items, |_, item| {
        if !raw::is_object(item) {
            return Ok(());
        }
        match serde_json::from_str::<ItemShape<'_>>(item.get()) {
            Ok(shape) if !shape.is_reference() => Ok(()),
            _ => Err(Refusal::new("input", "a reference")),
        }
    })
    .is_err()
}

/// `POST /v1/responses` for a model whose first upstream is native; `None` means the
/// request is not native and is translated instead.
pub async fn create(
    state: &AppState,
    owner: &Arc<str>,
    key: &Option<Arc<ClientKey>>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<Response>, ApiError> {
    // Most configurations have no native upstream: then nothing needs reading.
    let members = state.upstreams.members();
    if !members
        .iter()
        .any(|(upstream, _)| upstream.native_responses())
    {
        return Ok(None);
    }
    drop(members);
    let Ok(request) = parse_request(body.clone(), Endpoint::Responses) else {
        return Ok(None);
    };
    let first = state.upstreams.candidates(&request.model);
    if !first.first().is_some_and(|c| c.upstream.native_responses()) {
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
    if references_stored_items(names.input) {
        return Err(ApiError::bad_request(
            "'item_reference' input items are not available for a model served by a native Responses upstream; send the items themselves, or use previous_response_id.",
            Some("input"),
        ));
    }
    let stored = match names.previous_response_id {
        None => Stored::Nothing,
        Some(previous) if raw::is_string(previous) => {
            Stored::NativeResponse(raw::text(previous).unwrap_or_default().into_owned())
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "'previous_response_id' must be a string.",
                Some("previous_response_id"),
            ))
        }
    };
    let turn = Turn {
        owner: owner.clone(),
        key: key.clone(),
        stored,
        input: Vec::new(),
        client_headers: client_headers(headers),
        records: names.store != Some(false),
    };
    let protocol = Native::new(request, Endpoint::Responses, NativeApi::Responses);
    crate::gateway::run(state.gateway(), turn, protocol)
        .await
        .map(Some)
}

/// Which stored-response call a route makes, with the client's query string.
pub enum StoredCall {
    Read(Option<String>),
    Delete,
    InputItems(Option<String>),
}

/// `GET`/`DELETE /v1/responses/{id}` and `GET …/input_items` for `owner`'s native response
/// `id`, answered by the upstream that holds it; `None` when `owner` has no such native
/// response (the route then looks for a translated one).
pub async fn stored(
    state: &AppState,
    owner: &str,
    headers: &HeaderMap,
    id: &str,
    call: StoredCall,
) -> Result<Option<Response>, ApiError> {
    let store = state.session_store()?;
    let Some(holder) = native_holder(store, owner, id).await? else {
        return Ok(None);
    };
    let Some(upstream) = state.upstreams.by_name(&holder) else {
        // The upstream left the config: nothing can answer for this response now.
        tracing::warn!(upstream = %holder, "a native response's upstream is no longer configured");
        return Ok(None);
    };
    let (method, query) = match &call {
        StoredCall::Delete => (Method::DELETE, None),
        StoredCall::Read(query) | StoredCall::InputItems(query) => (Method::GET, query.as_deref()),
    };
    let query = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes());
    let answer = stored_response(
        upstream.as_ref(),
        StoredResponseCall {
            method,
            id: id.to_string(),
            input_items: matches!(call, StoredCall::InputItems(_)),
            query: query.into_owned().collect(),
            client_headers: client_headers(headers),
        },
    )
    .await?;
    if let (StoredCall::Delete, Answer::Complete { status, .. }) = (&call, &answer) {
        if status.is_success() || status.as_u16() == 404 {
            store
                .forget_native(owner, id)
                .await
                .map_err(ApiError::from)?;
        }
    }
    Ok(Some(respond(answer)))
}
