//! The error dialect of a route: on the Anthropic Messages API's paths, every refusal — the auth and limit layers' included — is reshaped into Anthropic's error shape.

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;

use serde_json::{json, Value};

use crate::wire::anthropic::error_body;

/// Longest error body read for reshaping; gatewayd's own are far smaller.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Whether a request path speaks the Anthropic dialect (`/v1/messages`, `…/count_tokens`).
pub fn is_anthropic(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// An error response, its body reshaped for an Anthropic client: gatewayd's own
/// OpenAI-shaped errors keep their message; an Anthropic error body (a native upstream's)
/// passes unchanged; anything else (an upstream's `{"detail": …}`, a text or HTML page)
/// becomes a generic error of the status's type. Streams and successes pass unchanged.
pub async fn reshape(response: Response) -> Response {
    let status = response.status();
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !(status.is_client_error() || status.is_server_error()) || is_stream {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let read = axum::body::to_bytes(body, MAX_ERROR_BODY).await;
    let value: Option<Value> = read
        .as_ref()
        .ok()
        .and_then(|b| serde_json::from_slice(b).ok());
    if let (Ok(bytes), Some(value)) = (&read, &value) {
        if is_anthropic_error(value) {
            return Response::from_parts(parts, Body::from(bytes.clone()));
        }
    }
    let generic = json!({"error": {"message": generic_message(status.as_u16())}});
    let shaped = value
        .and_then(|value| error_body(status.as_u16(), &value))
        .or_else(|| error_body(status.as_u16(), &generic))
        .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(shaped.to_string()))
}

fn is_anthropic_error(value: &Value) -> bool {
    value.get("type").and_then(Value::as_str) == Some("error")
        && value.get("error").is_some_and(Value::is_object)
}

/// Said when the body carried no message gatewayd can pass on.
fn generic_message(status: u16) -> &'static str {
    match status {
        400..=499 => "The upstream refused the request.",
        _ => "The upstream model provider failed to answer. Try again later.",
    }
}
