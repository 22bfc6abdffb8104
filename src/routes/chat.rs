//! POST /v1/chat/completions, /v1/completions and /v1/embeddings: validate, route, forward.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;

use crate::error::ApiError;
use crate::openai::{parse_request, Endpoint};
use crate::proxy::{forward, respond};
use crate::routes::{read_body, require_json};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
}

async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    stateless(state, headers, body, Endpoint::ChatCompletions).await
}

async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    stateless(state, headers, body, Endpoint::Completions).await
}

async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    stateless(state, headers, body, Endpoint::Embeddings).await
}

async fn stateless(
    state: AppState,
    headers: HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = read_body(body, state.config.limits.max_body_bytes).await?;
    let request = parse_request(body, endpoint)
        .map_err(|invalid| ApiError::bad_request(invalid.message, invalid.param))?;
    let answer = forward(&state, endpoint, &request, None).await?;
    Ok(respond(&state, answer, None))
}
