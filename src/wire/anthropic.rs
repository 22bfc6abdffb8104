//! The Anthropic Messages API's error shape, made from gatewayd's own OpenAI-shaped errors.

use serde_json::{json, Value};

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type":"error","error":{"type","message"}}` for an OpenAI-shaped error body
/// (`{"error":{"message",…}}`) answered with `status`. `None` when the body is not one
/// (an Anthropic-shaped body from a native upstream passes unchanged). Only the message
/// already in the body is kept: nothing new can leak through the reshaping.
pub fn error_body(status: u16, openai: &Value) -> Option<Value> {
    if openai.get("type").and_then(Value::as_str) == Some("error") {
        return None;
    }
    let message = openai.pointer("/error/message")?.as_str()?;
    Some(json!({
        "type": "error",
        "error": {"type": error_type(status), "message": message},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_maps_and_native_bodies_pass() {
        let openai = json!({"error": {"message": "no", "type": "x", "param": null, "code": null}});
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
        ] {
            let body = error_body(status, &openai).unwrap();
            assert_eq!(body["error"]["type"], kind);
            assert_eq!(body["error"]["message"], "no");
            assert_eq!(body["type"], "error");
        }
        let native =
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}});
        assert!(error_body(529, &native).is_none());
        assert!(error_body(500, &json!({"detail": "x"})).is_none());
    }
}
