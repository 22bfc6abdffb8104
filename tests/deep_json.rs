//! JSON nested past the gateway's depth limit (100 levels, under serde_json's 128) is
//! refused at the door with an OpenAI-shaped 400 on every route that stores or forwards a
//! body — chat, Responses, Anthropic Messages, conversation items — so it is never
//! forwarded, never stored, and never read back as `null`. 100,000 nested `[` are refused
//! the same way, without a crash.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use common::sessions::call;
use common::{client, config_from_toml, mock_upstream, spawn_gateway, KEY_A};
use reqwest::Method;
use serde_json::{json, Value};

/// The gateway's limit, in levels of the whole body.
const LIMIT: usize = 100;

/// `depth` arrays inside each other, as text.
fn arrays(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

/// `depth` objects inside each other (`{"a":{"a":…{}}}`), as text.
fn objects(depth: usize) -> String {
    "{\"a\":".repeat(depth - 1) + "{}" + &"}".repeat(depth - 1)
}

/// A chat upstream that counts its calls and answers without reading the body (so a
/// body serde could not read still counts).
async fn counting_upstream() -> (Arc<AtomicUsize>, String) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let answer = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            axum::Json(
                json!({"id": "c1", "object": "chat.completion", "created": 1,
                "model": "m", "choices": [{"index": 0, "message": {"role": "assistant",
                "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}),
            )
            .into_response()
        }
    };
    let url = mock_upstream(Router::new().route("/v1/chat/completions", post(answer))).await;
    (calls, url)
}

async fn gateway() -> (Arc<AtomicUsize>, common::Gateway) {
    let (calls, url) = counting_upstream().await;
    let toml = format!(
        "{}\n[[upstreams]]\nname = \"up\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n",
        common::two_keys_toml()
    );
    (calls, spawn_gateway(config_from_toml(&toml)).await)
}

/// POSTs raw JSON text: the status and the body.
async fn post_raw(
    gw: &common::Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, Value) {
    let mut request = client()
        .post(gw.url(path))
        .bearer_auth(KEY_A)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn assert_too_deep(status: u16, body: &Value, param: &str) {
    assert_eq!(status, 400, "{body}");
    let error = &body["error"];
    assert_eq!(error["type"], "invalid_request_error", "{body}");
    assert_eq!(error["param"], param, "{body}");
    assert!(
        error["message"].as_str().unwrap().contains("100 levels"),
        "{body}"
    );
}

fn chat_with_content(content: &str) -> String {
    format!(r#"{{"model":"m","messages":[{{"role":"user","content":{content}}}]}}"#)
}

#[tokio::test]
async fn deep_chat_messages_are_refused_and_neither_forwarded_nor_stored() {
    let (calls, gw) = gateway().await;
    let (status, session) = call(&gw, KEY_A, Method::POST, "/v1/sessions", Some(json!({}))).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_string();
    let in_session = [("x-session-id", id.as_str())];

    // One level past the limit, where serde_json would still read it; then 100,000.
    for depth in [LIMIT - 2, 100_000] {
        let (status, body) = post_raw(
            &gw,
            "/v1/chat/completions",
            &in_session,
            chat_with_content(&arrays(depth)),
        )
        .await;
        assert_too_deep(status, &body, "messages");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a refused body reached the upstream"
    );
    let (status, stored) = call(&gw, KEY_A, Method::GET, &format!("/v1/sessions/{id}"), None).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["messages"], json!([]), "a refused turn was stored");

    // At the limit it is served, stored, and reads back intact.
    let content = arrays(LIMIT - 3);
    let (status, body) = post_raw(
        &gw,
        "/v1/chat/completions",
        &in_session,
        chat_with_content(&content),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let (_, stored) = call(&gw, KEY_A, Method::GET, &format!("/v1/sessions/{id}"), None).await;
    let expected: Value = serde_json::from_str(&content).unwrap();
    assert_eq!(stored["messages"][0]["content"], expected, "{stored}");
}

async fn new_conversation(gw: &common::Gateway) -> String {
    let (status, conversation) = call(
        gw,
        KEY_A,
        Method::POST,
        "/v1/conversations",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{conversation}");
    conversation["id"].as_str().unwrap().to_string()
}

async fn assert_no_items(gw: &common::Gateway, conversation: &str) {
    let path = format!("/v1/conversations/{conversation}/items");
    let (status, items) = call(gw, KEY_A, Method::GET, &path, None).await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["data"], json!([]), "a refused turn was stored");
}

#[tokio::test]
async fn deep_responses_are_refused_and_neither_forwarded_nor_stored() {
    let (calls, gw) = gateway().await;
    let conversation = new_conversation(&gw).await;
    // A tool schema one level past the limit (serde_json would read it), then 100,000.
    let schema = objects(LIMIT - 2);
    let deep_tool = format!(
        r#"{{"model":"m","input":"hi","conversation":"{conversation}","tools":[{{"type":"function","name":"f","parameters":{schema}}}]}}"#
    );
    let (status, body) = post_raw(&gw, "/v1/responses", &[], deep_tool).await;
    assert_too_deep(status, &body, "tools");
    let deep_input = format!(
        r#"{{"model":"m","conversation":"{conversation}","input":[{{"role":"user","content":{}}}]}}"#,
        arrays(100_000)
    );
    let (status, body) = post_raw(&gw, "/v1/responses", &[], deep_input).await;
    assert_too_deep(status, &body, "input");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a refused body reached the upstream"
    );
    assert_no_items(&gw, &conversation).await;
}

#[tokio::test]
async fn deep_conversation_items_are_refused_and_not_stored() {
    let (_calls, gw) = gateway().await;
    let conversation = new_conversation(&gw).await;
    let path = format!("/v1/conversations/{conversation}/items");
    let deep_item = format!(
        r#"{{"items":[{{"type":"message","role":"user","content":[{{"type":"input_text","text":"hi","extra":{}}}]}}]}}"#,
        objects(LIMIT - 4)
    );
    let (status, body) = post_raw(&gw, &path, &[], deep_item).await;
    assert_too_deep(status, &body, "items");
    assert_no_items(&gw, &conversation).await;
}

#[tokio::test]
async fn deep_anthropic_messages_are_refused_before_the_upstream() {
    let (calls, gw) = gateway().await;
    let deep_tool = format!(
        r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"hi"}}],"tools":[{{"name":"f","input_schema":{}}}]}}"#,
        objects(LIMIT - 2)
    );
    let (status, body) = post_raw(&gw, "/v1/messages", &[], deep_tool).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a refused body reached the upstream"
    );
}
