//! Unit tests of the Anthropic reply shapes: stop reasons, tool ids that round-trip, messages and error bodies.

use serde_json::json;

use super::*;
use crate::gateway::decode::Usage;

#[test]
fn stop_reasons() {
    assert_eq!(stop_reason(Some("stop")), "end_turn");
    assert_eq!(stop_reason(Some("length")), "max_tokens");
    assert_eq!(stop_reason(Some("tool_calls")), "tool_use");
    assert_eq!(stop_reason(Some("function_call")), "tool_use");
    assert_eq!(stop_reason(Some("content_filter")), "refusal");
    assert_eq!(stop_reason(Some("something_new")), "end_turn");
    assert_eq!(stop_reason(None), "end_turn");
}

#[test]
fn tool_ids_round_trip() {
    for upstream in [
        "call_abc123",
        "chatcmpl-tool-9f",
        "toolu_01XYZ",
        "a",
        "functions.get_weather:0",
        "call:1/2",
        "b64_plain",
    ] {
        let id = tool_use_id(Some(upstream));
        assert!(id.starts_with("toolu_"));
        assert_eq!(chat_call_id(&id), upstream);
    }
    let odd = tool_use_id(Some("call:1/2"));
    assert!(
        odd.starts_with("toolu_b64_")
            && odd[6..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    );
    let random = tool_use_id(None);
    assert!(random.starts_with("toolu_") && random.len() > 20);
    assert_ne!(tool_use_id(Some("")), random);
    // Ids the gateway did not make are kept.
    assert_eq!(chat_call_id("abc"), "abc");
    assert_eq!(chat_call_id("toolu_"), "toolu_");
}

fn reply(message: serde_json::Value, finish: &str) -> Reply {
    Reply {
        message,
        model: None,
        finish_reason: Some(finish.into()),
        usage: Some(Usage {
            input_tokens: 12,
            output_tokens: 7,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            raw: json!({}),
        }),
    }
}

#[test]
fn message_with_text_and_tool_call() {
    let r = reply(
        json!({"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "Read", "arguments": "{\"path\":\"a.rs\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "Ls", "arguments": ""}},
            {"id": "call_3", "type": "function", "function": {"name": "Bad", "arguments": "{not json"}}
        ]}),
        "tool_calls",
    );
    let m = message(&r, "msg_1", "qwen");
    assert_eq!(
        m,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "qwen",
            "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_call_1", "name": "Read", "input": {"path": "a.rs"}},
                {"type": "tool_use", "id": "toolu_call_2", "name": "Ls", "input": {}},
                {"type": "tool_use", "id": "toolu_call_3", "name": "Bad", "input": {}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 7,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        })
    );
}

#[test]
fn message_without_text_or_usage() {
    let mut r = reply(json!({"role": "assistant", "content": null}), "length");
    r.usage = None;
    let m = message(&r, "msg_2", "m");
    assert_eq!(m["content"], json!([]));
    assert_eq!(m["stop_reason"], "max_tokens");
    assert_eq!(m["usage"]["input_tokens"], 0);
    let refused = reply(json!({"content": null, "refusal": "No."}), "content_filter");
    let m = message(&refused, "msg_3", "m");
    assert_eq!(m["content"], json!([{"type": "text", "text": "No."}]));
    assert_eq!(m["stop_reason"], "refusal");
    let parts = reply(
        json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
        "stop",
    );
    assert_eq!(message(&parts, "x", "m")["content"][0]["text"], "ab");
}

use crate::wire::anthropic::error_body;

#[test]
fn error_bodies() {
    let openai = json!({"error": {"message": "bad thing", "type": "x", "param": "p", "code": "c"}});
    for (status, kind) in [
        (400, "invalid_request_error"),
        (422, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
        (504, "timeout_error"),
        (500, "api_error"),
        (502, "api_error"),
    ] {
        assert_eq!(
            error_body(status, &openai).unwrap(),
            json!({"type": "error", "error": {"type": kind, "message": "bad thing"}}),
            "status {status}"
        );
    }
    // Not an OpenAI error body: left alone (an Anthropic body passes unchanged).
    assert!(error_body(502, &json!("not an object")).is_none());
}

#[test]
fn error_body_from_api_error() {
    let err = crate::wire::error::ApiError::RateLimited {
        retry_after_secs: 3,
    };
    let body = error_body(err.status_code().as_u16(), &err.body()).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        body["error"]["message"],
        "Rate limit exceeded; retry after 3 s."
    );
}

#[test]
fn a_call_without_an_id_gets_the_same_id_everywhere() {
    let chat = json!({"role": "assistant", "content": null, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "", "type": "function", "function": {"name": "g", "arguments": "{}"}}]});
    let stored = with_call_ids(&chat, "msg_ab12");
    assert_eq!(stored["tool_calls"][0]["id"], "call_ab12_0");
    assert_eq!(stored["tool_calls"][1]["id"], "call_ab12_1");
    let reply = Reply {
        message: chat,
        finish_reason: Some("tool_calls".into()),
        usage: None,
        model: None,
    };
    let shown = message(&reply, "msg_ab12", "m");
    // The client's id maps back to the stored call's id.
    let first = shown["content"][0]["id"].as_str().unwrap();
    assert_eq!(chat_call_id(first), "call_ab12_0");
}
