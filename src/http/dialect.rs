//! The error dialect of a route: on the Anthropic Messages API's paths, every refusal — the auth and limit layers' included — is reshaped into Anthropic's error shape.

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;

use crate::wire::anthropic::error_body;

/// Longest error body read for reshaping; gatewayd's own are far smaller.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Whether a request path speaks the Anthropic dialect (`/v1/messages`, `…/count_tokens`).
pub fn is_anthropic(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// An error response, its JSON body reshaped for an Anthropic client. Streams, successes
/// and bodies that are not OpenAI-shaped errors pass unchanged.
pub async fn reshape(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        // Unreadable or oversized: a generic error in the right dialect.
        let generic = serde_json::json!({"error": {"message": "The request failed."}});
        let body = error_body(status.as_u16(), &generic).unwrap_or_default();
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(body.to_string()));
    };
    let reshaped = serde_json::from_slice(&bytes)
        .ok()
        .and_then(|value| error_body(status.as_u16(), &value));
    match reshaped {
        Some(value) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Response::from_parts(parts, Body::from(value.to_string()))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}
