//! POST /v1/messages and /v1/messages/count_tokens: the Anthropic Messages API, an adapter on the turn pipeline.
//!
//! A model served by a chat upstream is translated (`request.rs` in, `reply.rs` and
//! `stream.rs` out); a model whose first upstream speaks Anthropic's API itself
//! (`api = "anthropic"`) gets the client's bytes unchanged. `X-Session-Id` continues a
//! stored session as on chat; the stored form stays chat-shaped. Errors on these paths
//! are reshaped into Anthropic's form at the edge (`http/dialect.rs`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};

use super::request::{chat_body, translate, Translated};
use super::stream::MessageEvents;
use super::tokens;
use crate::api::openai::chat::SESSION_HEADER;
use crate::api::responses::translate::random_id;
use crate::api::state::AppState;
use crate::gateway::decode::{Delta, Reply};
use crate::gateway::{
    Complete, Encoder, Native, NativeApi, Passthrough, Protocol, Record, Stored, Turn, UpstreamCall,
};
use crate::http::auth::{client_headers, Owner, Tenant};
use crate::http::body::read_json_body;
use crate::store::History;
use crate::upstream::UpstreamApi;
use crate::wire::error::ApiError;
use crate::wire::openai::{parse_request, ChatRequest, Endpoint};

/// Top-level request fields accepted and not used by a chat upstream.
pub const IGNORED_FIELDS: HeaderName = HeaderName::from_static("x-gatewayd-ignored-fields");
/// Server tools removed before a chat upstream call (`[responses] unsupported_tools`).
pub const DROPPED_TOOLS: HeaderName = HeaderName::from_static("x-gatewayd-dropped-tools");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

async fn body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let keyless = state.keys.load().is_empty();
    read_json_body(headers, body, state.config.limits.max_body_bytes, keyless).await
}

async fn messages(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Tenant(key): Tenant,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let body = body(&state, &headers, request).await?;
    let session = headers
        .get(SESSION_HEADER)
        .map(|id| id.to_str().unwrap_or_default().to_string());
    if let Some(native) = native_request(&state, &body, Endpoint::Messages)? {
        if session.is_some() {
            return Err(ApiError::bad_request(
                "X-Session-Id is not available for a model served by a native Anthropic upstream.",
                Some("session_id"),
            ));
        }
        return native_turn(&state, owner, key, &headers, native, Endpoint::Messages).await;
    }
    let t = translate(&body, state.config.responses.unsupported_tools)?;
    let (stored, input) = match &session {
        Some(id) => (
            Stored::Session(id.clone()),
            t.input_messages.iter().map(Value::to_string).collect(),
        ),
        None => (Stored::Nothing, Vec::new()),
    };
    let turn = Turn {
        owner,
        key,
        stored,
        input,
        client_headers: client_headers(&headers),
        records: false,
    };
    // Clamped for the strictest upstream that may answer: any of them may take the call.
    let cap = state
        .upstreams
        .candidates(&t.model)
        .iter()
        .filter_map(|c| c.upstream.max_output_tokens())
        .min();
    let protocol = Messages {
        id: random_id("msg"),
        t,
        session,
        input_tokens: 0,
        cap,
    };
    crate::gateway::run(state.gateway(), turn, protocol).await
}

/// The client's request, passed unchanged to an upstream that speaks Anthropic's API.
async fn native_turn(
    state: &AppState,
    owner: std::sync::Arc<str>,
    key: Option<std::sync::Arc<crate::config::keys::ClientKey>>,
    headers: &HeaderMap,
    request: ChatRequest,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let turn = Turn {
        owner,
        key,
        stored: Stored::Nothing,
        input: Vec::new(),
        client_headers: client_headers(headers),
        records: false,
    };
    let protocol =
        Native::new(request, endpoint, NativeApi::Messages).with_encoder(Box::new(NativeEvents));
    crate::gateway::run(state.gateway(), turn, protocol).await
}

/// The client's request, when its model's first upstream speaks Anthropic's API itself.
fn native_request(
    state: &AppState,
    body: &Bytes,
    endpoint: Endpoint,
) -> Result<Option<ChatRequest>, ApiError> {
    let Ok(request) = parse_request(body.clone(), endpoint) else {
        return Ok(None);
    };
    let candidates = state.upstreams.candidates(&request.model);
    match candidates.first() {
        Some(first) if first.upstream.api() == UpstreamApi::Anthropic => Ok(Some(request)),
        _ => Ok(None),
    }
}

/// `POST /v1/messages/count_tokens`: the input tokens of a Messages request — counted by
/// a native Anthropic upstream, else estimated over what a chat upstream would be sent
/// (see `tokens.rs`).
async fn count_tokens(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Tenant(key): Tenant,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let body = body(&state, &headers, request).await?;
    if let Some(native) = native_request(&state, &body, Endpoint::CountTokens)? {
        return native_turn(&state, owner, key, &headers, native, Endpoint::CountTokens).await;
    }
    let mut t = translate_for_count(&body, &state)?;
    if let Some(key) = &key {
        if !key.policy.allows_model(&t.model) {
            return Err(ApiError::ModelNotAllowed {
                model: t.model.chars().take(128).collect(),
            });
        }
    }
    t.stream = false;
    let chat = chat_body(&t, &[], None);
    let counted = tokio::task::spawn_blocking(move || tokens::estimate(&chat))
        .await
        .map_err(|_| ApiError::Internal)?;
    Ok(axum::Json(json!({"input_tokens": counted})).into_response())
}

/// A count_tokens body is a Messages request without `max_tokens`.
fn translate_for_count(body: &[u8], state: &AppState) -> Result<Translated, ApiError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("The body must be a JSON object.", None))?;
    if let Some(object) = value.as_object_mut() {
        object.entry("max_tokens").or_insert(json!(1));
    }
    let bytes = serde_json::to_vec(&value).map_err(|_| ApiError::Internal)?;
    Ok(translate(&bytes, state.config.responses.unsupported_tools)?)
}

/// The Messages API translated onto a chat upstream.
struct Messages {
    id: String,
    t: Translated,
    /// The session continued, echoed in `X-Session-Id`.
    session: Option<String>,
    /// The estimate `message_start` carries (the upstream reports usage at the end).
    input_tokens: u64,
    /// `max_tokens` is clamped to this (`max_output_tokens` of the model's upstreams).
    cap: Option<u64>,
}

impl Protocol for Messages {
    fn upstream_call(&mut self, context: &History) -> Result<UpstreamCall, ApiError> {
        let chat = chat_body(&self.t, &context.to_messages(), self.cap);
        if self.t.stream {
            // A cheap guess (the exact count comes in `message_delta`): tokenizing here
            // would cost every streamed turn milliseconds of CPU on the request path.
            self.input_tokens = tokens::rough(chat.len());
        }
        let request = parse_request(Bytes::from(chat), Endpoint::ChatCompletions)
            .map_err(|invalid| ApiError::bad_request(invalid.message, Some("messages")))?;
        Ok(UpstreamCall {
            endpoint: Endpoint::ChatCompletions,
            request,
            prefix: None,
            native: None,
        })
    }

    fn translates(&self) -> bool {
        true
    }

    fn reply(
        &mut self,
        reply: Option<&Reply>,
        _answer: Complete,
    ) -> Result<(Response, Record), ApiError> {
        let reply = reply.ok_or(ApiError::Internal)?;
        let message = super::reply::message(reply, &self.id, &self.t.model);
        let record = Record {
            output: vec![super::reply::with_call_ids(&reply.message, &self.id).to_string()],
            response: None,
        };
        Ok((axum::Json(message).into_response(), record))
    }

    fn encoder(&mut self) -> Box<dyn Encoder> {
        Box::new(MessageEvents::new(
            self.id.clone(),
            self.t.model.clone(),
            self.input_tokens,
        ))
    }

    fn finish_headers(&self, headers: &mut HeaderMap) {
        for (name, list) in [
            (IGNORED_FIELDS, &self.t.ignored),
            (DROPPED_TOOLS, &self.t.dropped_tools),
        ] {
            if let (false, Ok(value)) = (list.is_empty(), HeaderValue::from_str(&list.join(", "))) {
                headers.insert(name, value);
            }
        }
        if let Some(value) = self
            .session
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            headers.insert(SESSION_HEADER, value);
        }
    }
}

/// A native Anthropic stream: its bytes pass untouched; gatewayd's own endings (a cut
/// stream, an idle upstream, shutdown) and keep-alives are Anthropic events.
struct NativeEvents;

impl Encoder for NativeEvents {
    fn chunk(&mut self, raw: &Bytes, deltas: &[Delta]) -> Option<Bytes> {
        Passthrough.chunk(raw, deltas)
    }

    fn record(&mut self, _reply: &Reply) -> Result<Record, ApiError> {
        Ok(Record::default())
    }

    fn done(&mut self, _settled: Result<(), &ApiError>) -> Option<Bytes> {
        None
    }

    fn failed(&mut self, error: &ApiError) -> Option<Bytes> {
        let mut out = Vec::new();
        super::stream::error_event(&mut out, error);
        Some(Bytes::from(out))
    }

    fn keep_alive(&self) -> Option<Bytes> {
        Some(super::stream::ping())
    }

    fn keep_alive_within(&self) -> Option<std::time::Duration> {
        Some(super::stream::PING_EVERY)
    }
}
