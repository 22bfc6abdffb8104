//! POST /v1/chat/completions, /v1/completions and /v1/embeddings: the OpenAI adapter on the turn pipeline.
//!
//! Chat passes the upstream's bytes through untouched. With `X-Session-Id` the turn
//! continues a stored session: its history goes before the request's messages, and the
//! answered turn is stored before the client sees the end of the answer.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::value::RawValue;

use crate::api::state::AppState;
use crate::gateway::decode::Reply;
use crate::gateway::{
    Complete, Encoder, Passthrough, Protocol, Record, Stored, Turn, UpstreamCall,
};
use crate::http::auth::{client_headers, Owner, Tenant};
use crate::http::body::read_json_body;
use crate::store::History;
use crate::wire::error::ApiError;
use crate::wire::openai::{parse_request, ChatRequest, Endpoint};

pub const SESSION_HEADER: HeaderName = HeaderName::from_static("x-session-id");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
}

/// With `X-Session-Id`, the stored conversation continues; without it nothing is stored.
/// The request is taken whole, so its headers are read in place rather than copied.
async fn chat_completions(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    turn(state, request, Endpoint::ChatCompletions).await
}

async fn completions(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    turn(state, request, Endpoint::Completions).await
}

async fn embeddings(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    turn(state, request, Endpoint::Embeddings).await
}

/// Parses the request into a turn and runs it.
async fn turn(state: AppState, request: Request, endpoint: Endpoint) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let Owner(owner) = Owner::from_request_parts(&mut parts, &state).await?;
    let Tenant(key) = Tenant::from_request_parts(&mut parts, &state).await?;
    let session = parts.headers.get(SESSION_HEADER);
    if endpoint != Endpoint::ChatCompletions && session.is_some() {
        return Err(ApiError::bad_request(
            "X-Session-Id applies to /v1/chat/completions only.",
            Some("session_id"),
        ));
    }
    let session = session.map(|id| id.to_str().unwrap_or_default().to_string());
    let request = parse(&state, &parts.headers, body, endpoint).await?;
    let (stored, input) = match &session {
        Some(id) => (Stored::Session(id.clone()), request_messages(&request)?),
        None => (Stored::Nothing, Vec::new()),
    };
    let turn = Turn {
        owner,
        key,
        stored,
        input,
        client_headers: client_headers(&parts.headers),
        records: false,
    };
    let protocol = Chat {
        endpoint,
        request: Some(request),
        session,
    };
    crate::gateway::run(state.gateway(), turn, protocol).await
}

async fn parse(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> Result<ChatRequest, ApiError> {
    let keyless = state.keys.load().is_empty();
    let body = read_json_body(headers, body, state.config.limits.max_body_bytes, keyless).await?;
    parse_request(body, endpoint)
        .map_err(|invalid| ApiError::bad_request(invalid.message, invalid.param))
}

/// Each of the request's messages as its exact JSON text.
fn request_messages(request: &ChatRequest) -> Result<Vec<String>, ApiError> {
    let raw = request.messages_json().unwrap_or(b"[]");
    let items: Vec<&RawValue> = serde_json::from_slice(raw)
        .map_err(|_| ApiError::bad_request("'messages' must be an array.", Some("messages")))?;
    Ok(items.into_iter().map(|m| m.get().to_string()).collect())
}

/// The OpenAI protocol: the client's own request goes upstream (history spliced in
/// before its messages), and the upstream's answer comes back byte for byte.
struct Chat {
    endpoint: Endpoint,
    request: Option<ChatRequest>,
    /// The session continued, echoed in `X-Session-Id`.
    session: Option<String>,
}

impl Protocol for Chat {
    fn upstream_call(&mut self, context: &History) -> Result<UpstreamCall, ApiError> {
        let request = self.request.take().ok_or(ApiError::Internal)?;
        let prefix = (!context.is_empty()).then(|| context.to_json_list());
        Ok(UpstreamCall {
            endpoint: self.endpoint,
            request,
            prefix,
            native: None,
        })
    }

    fn translates(&self) -> bool {
        false
    }

    fn reply(
        &mut self,
        reply: Option<&Reply>,
        answer: Complete,
    ) -> Result<(Response, Record), ApiError> {
        let record = Record {
            output: reply.map(|r| r.message.to_string()).into_iter().collect(),
            response: None,
        };
        let response = answer.into_response();
        Ok((response, record))
    }

    fn encoder(&mut self) -> Box<dyn Encoder> {
        Box::new(Passthrough)
    }

    fn finish_headers(&self, headers: &mut HeaderMap) {
        if let Some(value) = self
            .session
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            headers.insert(SESSION_HEADER, value);
        }
    }
}
