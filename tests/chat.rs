//! Chat completions through a real socket to an in-process mock upstream.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use common::{client, config_from_toml, mock_upstream, refused_upstream, spawn_gateway, KEY_A};
use futures_util::StreamExt;
use serde_json::{json, Value};

const UPSTREAM_KEY: &str = "sk-upstream-secret-0123456789";

/// What the mock upstream received.
#[derive(Clone, Default)]
struct Seen {
    bodies: Arc<Mutex<Vec<Bytes>>>,
    auth: Arc<Mutex<Vec<String>>>,
    dropped: Arc<tokio::sync::Notify>,
}

const SSE: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n",
    "data: [DONE]\n\n",
);

/// Fires `dropped` when the response body is dropped (the gateway hung up).
struct DropSignal(Arc<tokio::sync::Notify>);
impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

async fn upstream_chat(seen: Seen, headers: HeaderMap, body: Bytes) -> Response {
    seen.bodies.lock().unwrap().push(body.clone());
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    seen.auth.lock().unwrap().push(auth.unwrap_or_default());
    let request: Value = serde_json::from_slice(&body).unwrap();
    let model = request["model"].as_str().unwrap_or_default().to_string();
    let sse = |body: Body| ([("content-type", "text/event-stream")], body).into_response();
    match model.as_str() {
        "bad" => (StatusCode::BAD_REQUEST, [("content-type", "application/json")],
                  r#"{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}"#).into_response(),
        "flaky" => (StatusCode::INTERNAL_SERVER_ERROR, "http://internal-host:9/v1 exploded").into_response(),
        "creds" => (StatusCode::UNAUTHORIZED, format!("Incorrect API key provided: {}", &UPSTREAM_KEY[..8])).into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "too late".into_response()
        }
        "midfail" => {
            // One event, a pause (so headers and the event are on the wire), then a crash.
            let first = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"par\"}}]}\n\n"))
            });
            let crash = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err(std::io::Error::other("upstream crashed"))
            });
            sse(Body::from_stream(first.chain(crash)))
        }
        "hang" => {
            let signal = DropSignal(seen.dropped.clone());
            let first = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(b"data: {\"choices\":[]}\n\n"))
            });
            let pending = futures_util::stream::once(async move {
                let _keep = signal;
                std::future::pending::<()>().await;
                Ok(Bytes::new())
            });
            sse(Body::from_stream(first.chain(pending)))
        }
        _ if request["stream"] == json!(true) => {
            // Dribble the canned stream in pieces that split events mid-line.
            let pieces: Vec<Result<Bytes, std::io::Error>> = SSE
                .as_bytes()
                .chunks(37)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            sse(Body::from_stream(futures_util::stream::iter(pieces).then(|p| async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                p
            })))
        }
        _ => (
            [("content-type", "application/json")],
            json!({"id": "c1", "object": "chat.completion", "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).to_string(),
        ).into_response(),
    }
}

const COMPLETION_SSE: &str = concat!(
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"Once\",\"index\":0}]}\n\n",
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\" upon\",\"index\":0,\"finish_reason\":\"length\"}]}\n\n",
    "data: [DONE]\n\n",
);

fn other_routes() -> Router {
    Router::new()
        .route(
            "/v1/completions",
            post(|body: Bytes| async move {
                let request: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(request["prompt"], "Tell a story");
                ([("content-type", "text/event-stream")], COMPLETION_SSE)
            }),
        )
        .route(
            "/v1/embeddings",
            post(|body: Bytes| async move {
                let request: Value = serde_json::from_slice(&body).unwrap();
                axum::Json(json!({"object": "list", "model": request["model"],
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}]}))
            }),
        )
        .route(
            "/v1/models",
            get(|| async {
                axum::Json(json!({"object": "list", "data": [{"id": "live-1"}, {"id": "other"}]}))
            }),
        )
}

async fn gateway_with(upstreams_toml: &str) -> common::Gateway {
    std::env::set_var("CHAT_TEST_UPSTREAM_KEY", UPSTREAM_KEY);
    let toml = format!("{}\n{upstreams_toml}", common::two_keys_toml());
    spawn_gateway(config_from_toml(&toml)).await
}

fn upstream_toml(name: &str, url: &str, models: &str, extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"{name}\"\nbase_url = \"{url}\"\napi_key_env = \"CHAT_TEST_UPSTREAM_KEY\"\nmodels = {models}\n{extra}\n"
    )
}

async fn start_mock() -> (Seen, String) {
    let seen = Seen::default();
    let s = seen.clone();
    let router = Router::new()
        .route(
            "/v1/chat/completions",
            post(move |h: HeaderMap, b: Bytes| upstream_chat(s.clone(), h, b)),
        )
        .merge(other_routes());
    (seen.clone(), mock_upstream(router).await)
}

async fn post_chat(gw: &common::Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn messages() -> Value {
    json!([{"role": "user", "content": "hi"}])
}

#[tokio::test]
async fn non_stream_round_trip_is_byte_for_byte() {
    let (seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml("a", &url, r#"["gpt-4o-mini"]"#, "")).await;
    let body = json!({"model": "gpt-4o-mini", "messages": messages(), "temperature": 0.2, "vendor_x": {"k": [1, 2]}});
    let sent = serde_json::to_vec(&body).unwrap();
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("content-type", "application/json")
        .body(sent.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "Hello");
    assert_eq!(seen.bodies.lock().unwrap()[0].as_ref(), sent.as_slice());
    assert_eq!(
        seen.auth.lock().unwrap()[0],
        format!("Bearer {UPSTREAM_KEY}")
    );
}

#[tokio::test]
async fn stream_round_trip_is_byte_for_byte_with_sse_headers() {
    let (_seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml("a", &url, r#"["gpt-4o*"]"#, "")).await;
    let body = json!({"model": "gpt-4o-mini", "messages": messages(), "stream": true,
                      "stream_options": {"include_usage": true}});
    let response = post_chat(&gw, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-cache"));
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let text = response.text().await.unwrap();
    assert_eq!(text, SSE);
}

#[tokio::test]
async fn first_stream_bytes_arrive_before_the_upstream_finishes() {
    let (seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml("a", &url, r#"["hang"]"#, "")).await;
    let response = post_chat(
        &gw,
        &json!({"model": "hang", "messages": messages(), "stream": true}),
    )
    .await;
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), body.next()).await;
    let first = first.expect("first event was buffered").unwrap().unwrap();
    assert_eq!(first.as_ref(), b"data: {\"choices\":[]}\n\n");
    // Client disconnect: the gateway must drop the upstream request at once.
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), seen.dropped.notified())
        .await
        .expect("upstream request was not closed after the client left");
}

#[tokio::test]
async fn tools_and_image_parts_reach_the_upstream_unchanged() {
    let (seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml("a", &url, r#"["*"]"#, "")).await;
    let body = json!({
        "model": "vision-model",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "result"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"}
    });
    let response = post_chat(&gw, &body).await;
    assert_eq!(response.status(), 200);
    let received: Value = serde_json::from_slice(&seen.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(received, body);
}

#[tokio::test]
async fn upstream_400_passes_through() {
    let (_seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml("a", &url, r#"["bad"]"#, "")).await;
    let response = post_chat(&gw, &json!({"model": "bad", "messages": messages()})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "bad temperature");
    assert_eq!(body["error"]["param"], "temperature");
}

#[tokio::test]
async fn upstream_500_is_retried_on_the_next_upstream() {
    let (first_seen, first_url) = start_mock().await;
    let (second_seen, second_url) = start_mock().await;
    let config = format!(
        "{}{}",
        upstream_toml("primary", &first_url, r#"["flaky"]"#, ""),
        upstream_toml("backup", &second_url, r#"["flak*"]"#, "")
    );
    let gw = gateway_with(&config).await;
    let response = post_chat(&gw, &json!({"model": "flaky", "messages": messages()})).await;
    // The backup's mock answers "flaky" with 500 too, so the client gets a clean 502...
    assert_eq!(response.status(), 502);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("internal-host") && !text.contains("127.0.0.1"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["type"], "upstream_error");
    // ...after both upstreams were tried, in order.
    assert_eq!(first_seen.bodies.lock().unwrap().len(), 1);
    assert_eq!(second_seen.bodies.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_failed_upstream_falls_back_to_a_working_one() {
    let (_first_seen, first_url) = start_mock().await;
    let (second_seen, second_url) = start_mock().await;
    let config = format!(
        "{}{}",
        upstream_toml(
            "primary",
            &first_url,
            r#"["m"]"#,
            r#"aliases = { m2 = "flaky" }"#
        ),
        upstream_toml("backup", &second_url, r#"["m2"]"#, "")
    );
    let gw = gateway_with(&config).await;
    // "m2" is an alias on primary (renamed to "flaky", which fails) and exact on backup.
    let response = post_chat(&gw, &json!({"model": "m2", "messages": messages()})).await;
    assert_eq!(response.status(), 200);
    let received: Value = serde_json::from_slice(&second_seen.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(received["model"], "m2");
}

#[tokio::test]
async fn aliases_rename_the_model_for_the_upstream() {
    let (seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml(
        "a",
        &url,
        r#"["gpt-4o-mini"]"#,
        r#"aliases = { fast = "gpt-4o-mini" }"#,
    ))
    .await;
    let response = post_chat(
        &gw,
        &json!({"model": "fast", "messages": messages(), "seed": 7}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let received: Value = serde_json::from_slice(&seen.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(received["model"], "gpt-4o-mini");
    assert_eq!(received["seed"], 7);
}

#[tokio::test]
async fn connection_refused_is_502() {
    let url = refused_upstream().await;
    let gw = gateway_with(&upstream_toml("down", &url, r#"["m"]"#, "")).await;
    let response = post_chat(&gw, &json!({"model": "m", "messages": messages()})).await;
    assert_eq!(response.status(), 502);
    let text = response.text().await.unwrap();
    assert!(!text.contains(&url[7..]), "upstream address leaked: {text}");
    assert!(!text.contains(UPSTREAM_KEY));
}

#[tokio::test]
async fn slow_upstream_is_504_after_the_timeout() {
    let (_seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml(
        "a",
        &url,
        r#"["slow"]"#,
        "first_byte_timeout_secs = 1",
    ))
    .await;
    let started = std::time::Instant::now();
    let response = post_chat(&gw, &json!({"model": "slow", "messages": messages()})).await;
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(4));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn mid_stream_failure_ends_with_an_error_event() {
    let (_seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml("a", &url, r#"["midfail"]"#, "")).await;
    let response = post_chat(
        &gw,
        &json!({"model": "midfail", "messages": messages(), "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    // The body ends cleanly (no transport error) with a final error event.
    let text = response.text().await.expect("stream did not end cleanly");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(
        events[0],
        "data: {\"choices\":[{\"delta\":{\"content\":\"par\"}}]}"
    );
    let last: Value =
        serde_json::from_str(events.last().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error");
    assert!(text.ends_with("\n\n"));
}

#[tokio::test]
async fn upstream_credential_errors_are_hidden() {
    let (_seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml("a", &url, r#"["creds"]"#, "")).await;
    let response = post_chat(&gw, &json!({"model": "creds", "messages": messages()})).await;
    assert_eq!(response.status(), 502);
    assert!(!response.text().await.unwrap().contains(&UPSTREAM_KEY[..8]));
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let (_seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml("a", &url, r#"["gpt-4o-mini"]"#, "")).await;
    let response = post_chat(&gw, &json!({"model": "nope", "messages": messages()})).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn validation_names_the_param_and_non_json_is_415() {
    let gw = gateway_with("").await;
    for (body, param) in [
        (json!({"messages": messages()}), Value::from("model")),
        (json!({"model": "echo"}), Value::from("messages")),
        (
            json!({"model": "echo", "messages": []}),
            Value::from("messages"),
        ),
        (json!(["not an object"]), Value::Null),
    ] {
        let response = post_chat(&gw, &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{body}");
    }
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("content-type", "text/plain")
        .body(r#"{"model":"echo","messages":[{"role":"user","content":"x"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn echo_model_answers_without_upstreams() {
    let gw = gateway_with("").await;
    let response = post_chat(&gw, &json!({"model": "echo", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "say three words"}]})).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "say three words");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    let response = post_chat(
        &gw,
        &json!({"model": "echo", "stream": true, "messages": messages()}),
    )
    .await;
    let text = response.text().await.unwrap();
    assert!(
        text.contains("\"content\":\"hi\"") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
}

#[tokio::test]
async fn models_lists_configured_names_and_live_pattern_models() {
    let (_seen, url) = start_mock().await;
    let gw = gateway_with(&format!(
        "{}{}",
        upstream_toml(
            "a",
            &url,
            r#"["gpt-4o-mini"]"#,
            r#"aliases = { fast = "gpt-4o-mini" }"#
        ),
        upstream_toml("b", &url, r#"["live-*"]"#, "")
    ))
    .await;
    let response = client()
        .get(gw.url("/v1/models"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    // Config order: upstream a's name and alias, then what b lists.
    assert_eq!(ids, vec!["gpt-4o-mini", "fast", "live-1"]);
}

#[tokio::test]
async fn legacy_completions_stream_through() {
    let (_seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml("a", &url, r#"["davinci-002"]"#, "")).await;
    let response = client()
        .post(gw.url("/v1/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "davinci-002", "prompt": "Tell a story", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.text().await.unwrap(), COMPLETION_SSE);
}

#[tokio::test]
async fn embeddings_are_routed_and_forwarded() {
    let (_seen, url) = start_mock().await;
    let gw = gateway_with(&upstream_toml(
        "a",
        &url,
        r#"["text-embedding-3-small"]"#,
        "",
    ))
    .await;
    let response = client()
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "text-embedding-3-small", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"][0]["embedding"], json!([0.5, 0.25]));
}

#[test]
fn upstream_key_appears_in_no_response_and_no_log_line() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (seen, url) = runtime.block_on(start_mock());
    let mut command = common::binary();
    command
        .args(["--port", "0", "--upstream", &url])
        .env("API_SERVER_KEY", KEY_A)
        .env("GATEWAYD_UPSTREAM_API_KEY", UPSTREAM_KEY)
        .env("RUST_LOG", "trace");
    let process = common::start(command);
    let bodies = runtime.block_on(async {
        let mut texts = Vec::new();
        for model in ["gpt-4o-mini", "bad", "flaky", "creds"] {
            for stream in [false, true] {
                let response = client()
                    .post(process.url("/v1/chat/completions"))
                    .bearer_auth(KEY_A)
                    .json(&json!({"model": model, "messages": messages(), "stream": stream}))
                    .send()
                    .await
                    .unwrap();
                texts.push(format!("{:?}", response.headers()));
                texts.push(response.text().await.unwrap());
            }
        }
        texts
    });
    assert!(seen
        .auth
        .lock()
        .unwrap()
        .iter()
        .all(|a| a == &format!("Bearer {UPSTREAM_KEY}")));
    std::thread::sleep(Duration::from_millis(200));
    let log = process.stderr();
    for text in bodies.iter().chain(std::iter::once(&log)) {
        assert!(!text.contains(&UPSTREAM_KEY[3..]), "upstream key leaked");
        assert!(!text.contains(&KEY_A[4..]), "client key leaked");
    }
    assert!(log.contains("gatewayd listening"));
}
