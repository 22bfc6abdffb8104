//! The mock chat-completions upstream the session, Responses and storage tests share.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// Every request body the mock received, in order.
pub type Seen = Arc<Mutex<Vec<Value>>>;

/// Serves [`chat_reply`] at /v1/chat/completions on 127.0.0.1:0: the base URL (…/v1) and
/// what it sees.
pub async fn chat_upstream() -> (String, Seen) {
    let seen = Seen::default();
    let s = seen.clone();
    let url = super::mock_upstream(Router::new().route(
        "/v1/chat/completions",
        post(move |body: Bytes| chat_reply(s.clone(), body)),
    ))
    .await;
    (url, seen)
}

/// Records the request, then replies "echo: <last message content>", streamed when asked
/// (a role delta, the text in word pieces, a usage chunk, `[DONE]`) with the same message
/// as the non-streamed answer. Models: "tooly" adds a call to `lookup` with arguments
/// `{"q":1}` (streamed in two fragments); "flaky" fails with 500; "hangy" streams one
/// event and then goes silent; "cut" streams two events and ends without `[DONE]`.
pub async fn chat_reply(seen: Seen, body: Bytes) -> axum::response::Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    seen.lock().unwrap().push(request.clone());
    let model = request["model"].as_str().unwrap().to_string();
    if model == "flaky" {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    if model == "hangy" {
        // One event, then silence: the client will leave mid-reply.
        let first = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Bytes::from_static(
                b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n",
            ))
        });
        let never = futures_util::stream::pending();
        return (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(futures_util::StreamExt::chain(first, never)),
        )
            .into_response();
    }
    let last = &request["messages"].as_array().unwrap().last().unwrap()["content"];
    let text = format!("echo: {}", last.as_str().unwrap_or("?"));
    if request["stream"] == json!(true) {
        let mut events =
            vec![json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})];
        for piece in text.split_inclusive(' ') {
            events.push(json!({"choices": [{"index": 0, "delta": {"content": piece}}]}));
        }
        if model == "tooly" {
            events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\""}}]}}]}));
            events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]}));
        }
        events.push(json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}));
        let sse: String = if model == "cut" {
            events[..2]
                .iter()
                .map(|e| format!("data: {e}\n\n"))
                .collect()
        } else {
            let mut sse: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            sse.push_str("data: [DONE]\n\n");
            sse
        };
        return ([("content-type", "text/event-stream")], sse).into_response();
    }
    let mut message = json!({"role": "assistant", "content": text});
    if model == "tooly" {
        message["tool_calls"] = json!([{"id": "call_9", "type": "function",
            "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]);
    }
    axum::Json(json!({"id": "c", "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}))
    .into_response()
}

/// The contents of a recorded request's messages (`""` where a content is not a string).
pub fn contents_of(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}
