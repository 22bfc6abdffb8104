//! POST /v1/chat/completions, /v1/completions and /v1/embeddings: validate, route, forward.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;

use crate::api::state::AppState;
use crate::gateway::conversation::{continue_session, SESSION_HEADER};
use crate::gateway::route::{forward, respond};
use crate::http::auth::Owner;
use crate::http::body::read_json_body;
use crate::upstream::headers::forwardable;
use crate::wire::error::ApiError;
use crate::wire::openai::{parse_request, ChatRequest, Endpoint};

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
    let (mut parts, body) = request.into_parts();
    let Owner(owner) = Owner::from_request_parts(&mut parts, &state).await?;
    let Some(session) = parts.headers.get(SESSION_HEADER) else {
        return stateless(state, parts.headers, body, Endpoint::ChatCompletions).await;
    };
    let id = session.to_str().unwrap_or_default().to_string();
    let request = parse(&state, &parts.headers, body, Endpoint::ChatCompletions).await?;
    continue_session(state.gateway(), owner, &id, &request).await
}

async fn completions(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    stateless(state, parts.headers, body, Endpoint::Completions).await
}

async fn embeddings(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    stateless(state, parts.headers, body, Endpoint::Embeddings).await
}

async fn stateless(
    state: AppState,
    headers: HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    if endpoint != Endpoint::ChatCompletions && headers.contains_key(SESSION_HEADER) {
        return Err(ApiError::bad_request(
            "X-Session-Id applies to /v1/chat/completions only.",
            Some("session_id"),
        ));
    }
    let request = parse(&state, &headers, body, endpoint).await?;
    let answer = forward(state.gateway(), endpoint, &request, None).await?;
    Ok(respond(state.gateway(), answer, None))
}

async fn parse(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> Result<ChatRequest, ApiError> {
    let keyless = state.keys.load().is_empty();
    let body = read_json_body(headers, body, state.config.limits.max_body_bytes, keyless).await?;
    let mut request = parse_request(body, endpoint)
        .map_err(|invalid| ApiError::bad_request(invalid.message, invalid.param))?;
    let token = crate::http::auth::extract_token(headers).ok().flatten();
    request.client_headers = std::sync::Arc::new(forwardable(headers, token));
    Ok(request)
}
