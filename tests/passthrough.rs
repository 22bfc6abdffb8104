//! Headers both ways through a real socket: what a recording mock upstream receives
//! (safe list, per-upstream extras, static and auth headers, Azure-style query), what the
//! client gets back (rate-limit headers, renamed request id, nothing naming the upstream),
//! Content-Type leniency with a key, and 404s that say what is not served.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::{client, config_from_toml, mock_upstream, spawn_gateway, KEY_A};
use serde_json::{json, Value};

const UPSTREAM_KEY: &str = "sk-upstream-passthrough-0123456789";

/// One request as the mock upstream received it.
#[derive(Clone, Debug)]
struct Received {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A mock upstream that records every request and answers like OpenAI, with the
/// response headers OpenAI sends (and some it must not see passed on).
async fn recording_upstream() -> (Log, String) {
    let log: Log = Log::default();
    let sink = log.clone();
    let router = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let host = headers["host"].to_str().unwrap().to_string();
                sink.lock().unwrap().push(Received {
                    method,
                    uri,
                    headers,
                    body,
                });
                answer(&request, &host)
            }
        },
    );
    let url = mock_upstream(router).await;
    (log, url)
}

fn answer(request: &Value, host: &str) -> Response {
    let status = match request["model"].as_str() {
        Some("limited") => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::OK,
    };
    let streaming = request["stream"] == json!(true) && status == StatusCode::OK;
    let content_type = if streaming {
        "text/event-stream"
    } else {
        "application/json"
    };
    let body = if streaming {
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"
            .to_string()
    } else if status == StatusCode::OK {
        json!({"id": "c1", "object": "chat.completion", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]})
        .to_string()
    } else {
        json!({"error": {"message": "Rate limit reached", "type": "requests",
            "param": null, "code": "rate_limit_exceeded"}})
        .to_string()
    };
    let location = format!("http://{host}/v1/somewhere");
    (
        status,
        [
            ("content-type", content_type),
            ("retry-after", "7"),
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("openai-processing-ms", "42"),
            ("openai-version", "2020-10-01"),
            ("x-request-id", "req_upstream_123"),
            ("openai-organization", "org-operator-secret"),
            ("set-cookie", "__cf_bm=tracking; path=/"),
            ("server", "cloudflare"),
            ("alt-svc", "h3=\":443\""),
            ("access-control-allow-origin", "*"),
            ("location", location.as_str()),
        ],
        body,
    )
        .into_response()
}

async fn gateway(upstreams_toml: &str) -> common::Gateway {
    std::env::set_var("PASSTHROUGH_UPSTREAM_KEY", UPSTREAM_KEY);
    let toml = format!("{}\n{upstreams_toml}", common::two_keys_toml());
    spawn_gateway(config_from_toml(&toml)).await
}

fn upstream(url: &str, extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"up\"\nbase_url = \"{url}\"\napi_key_env = \"PASSTHROUGH_UPSTREAM_KEY\"\nmodels = [\"*\"]\n{extra}\n"
    )
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// The headers an SDK sends, plus ones that must stay at the gateway.
fn sdk_request(gw: &common::Gateway, path: &str) -> reqwest::RequestBuilder {
    client()
        .post(gw.url(path))
        .bearer_auth(KEY_A)
        .header("x-api-key", KEY_A)
        .header("user-agent", "OpenAI/Python 1.50.0")
        .header("openai-beta", "assistants=v2")
        .header("idempotency-key", "idem-1")
        .header("x-stainless-lang", "python")
        .header("x-stainless-retry-count", "0")
        .header("accept", "application/json")
        .header("cookie", "session=abc")
        .header("openai-organization", "org-client")
        .header("openai-project", "proj-client")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-custom", "custom")
        .header("x-trace-id", "trace-1")
        .header("x-echo-key", format!("copy of {KEY_A}"))
}

async fn send_chat(gw: &common::Gateway, model: &str, stream: bool) -> reqwest::Response {
    sdk_request(gw, "/v1/chat/completions")
        .json(&chat(model, stream))
        .send()
        .await
        .unwrap()
}

fn assert_passed_through(headers: &reqwest::header::HeaderMap) {
    for (name, value) in [
        ("retry-after", "7"),
        ("x-ratelimit-limit-requests", "500"),
        ("x-ratelimit-remaining-requests", "0"),
        ("openai-processing-ms", "42"),
        ("openai-version", "2020-10-01"),
        ("x-upstream-request-id", "req_upstream_123"),
    ] {
        assert_eq!(
            headers.get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{name}"
        );
    }
    let own_id = headers["x-request-id"].to_str().unwrap();
    assert!(
        own_id.starts_with("req_") && own_id != "req_upstream_123",
        "{own_id}"
    );
    for name in [
        "set-cookie",
        "server",
        "alt-svc",
        "access-control-allow-origin",
        "location",
        "openai-organization",
    ] {
        assert!(headers.get(name).is_none(), "{name} was passed on");
    }
    let cache_control = headers["cache-control"].to_str().unwrap();
    assert!(cache_control.contains("no-store"), "{cache_control}");
}

#[tokio::test]
async fn response_headers_pass_through_on_success_error_and_stream() {
    let (_log, url) = recording_upstream().await;
    let gw = gateway(&upstream(&url, "")).await;

    let ok = send_chat(&gw, "m", false).await;
    assert_eq!(ok.status(), 200);
    assert_passed_through(ok.headers());
    assert_eq!(ok.headers()["content-type"], "application/json");

    let stream = send_chat(&gw, "m", true).await;
    assert_eq!(stream.status(), 200);
    assert_passed_through(stream.headers());
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    assert!(stream.text().await.unwrap().ends_with("data: [DONE]\n\n"));

    // Last: its `Retry-After: 7` keeps this (only) upstream out for 7 s.
    let limited = send_chat(&gw, "limited", false).await;
    assert_eq!(limited.status(), 429);
    assert_passed_through(limited.headers());
    let error: Value = limited.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn request_headers_default_safe_list() {
    let (log, url) = recording_upstream().await;
    let gw = gateway(&upstream(&url, "")).await;
    let response = sdk_request(&gw, "/v1/embeddings")
        .json(&json!({"model": "m", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = log.lock().unwrap().pop().unwrap();
    assert_eq!(
        (seen.method, seen.uri.path()),
        (Method::POST, "/v1/embeddings")
    );
    let h = &seen.headers;
    let ua = h["user-agent"].to_str().unwrap();
    assert_eq!(
        ua,
        format!(
            "OpenAI/Python 1.50.0 gatewayd/{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(h["openai-beta"], "assistants=v2");
    assert_eq!(h["idempotency-key"], "idem-1");
    assert_eq!(h["x-stainless-lang"], "python");
    assert_eq!(h["x-stainless-retry-count"], "0");
    assert_eq!(h["accept"], "application/json");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(
        h["authorization"],
        format!("Bearer {UPSTREAM_KEY}").as_str()
    );
    assert_eq!(h.get_all("authorization").iter().count(), 1);
    for never in [
        "x-api-key",
        "cookie",
        "openai-organization",
        "openai-project",
        "x-forwarded-for",
        "x-custom",
        "x-trace-id",
        "x-echo-key",
    ] {
        assert!(h.get(never).is_none(), "{never} reached the upstream");
    }
    for (name, value) in h {
        assert!(
            !value
                .as_bytes()
                .windows(KEY_A.len())
                .any(|w| w == KEY_A.as_bytes()),
            "client key in {name}"
        );
    }
    assert_eq!(seen.body, json!({"model": "m", "input": "hi"}).to_string());
}

/// Azure OpenAI: a deployment URL, `api-key` with no scheme, `api-version` on every
/// call, static headers from env and file, and a widened forward list.
#[tokio::test]
async fn azure_style_upstream_end_to_end() {
    let (log, url) = recording_upstream().await;
    let root = url.trim_end_matches("/v1");
    std::env::set_var("PASSTHROUGH_AZURE_TAG", "tag-from-env");
    let dir = common::temp_dir("azure");
    let file = dir.join("tenant");
    std::fs::write(&file, "tenant-from-file\n").unwrap();
    let extra = format!(
        r#"auth_header = "api-key"
auth_scheme = ""
query = {{ "api-version" = "2024-06-01" }}
headers = {{ "x-ms-client-tag" = "env:PASSTHROUGH_AZURE_TAG", "x-tenant" = "file:{}", "x-literal" = "plain" }}
forward_headers = ["x-custom", "x-trace-*"]
"#,
        file.display()
    );
    let toml = upstream(&format!("{root}/openai/deployments/gpt4o"), &extra);
    let config = config_from_toml(&format!("{}\n{toml}", common::two_keys_toml()));
    let debug = format!("{:?}", config.upstreams);
    assert!(
        !debug.contains("tag-from-env") && !debug.contains("plain"),
        "{debug}"
    );
    let gw = gateway(&toml).await;

    let response = send_chat(&gw, "gpt-4o", false).await;
    assert_eq!(response.status(), 200);
    let seen = log.lock().unwrap().pop().unwrap();
    assert_eq!(
        seen.uri.to_string(),
        "/openai/deployments/gpt4o/chat/completions?api-version=2024-06-01"
    );
    let h = &seen.headers;
    assert_eq!(h["api-key"], UPSTREAM_KEY);
    assert!(h.get("authorization").is_none());
    assert_eq!(h["x-ms-client-tag"], "tag-from-env");
    assert_eq!(h["x-tenant"], "tenant-from-file");
    assert_eq!(h["x-literal"], "plain");
    assert_eq!(h["x-custom"], "custom");
    assert_eq!(h["x-trace-id"], "trace-1");
    assert_eq!(h["x-stainless-lang"], "python");
    assert!(h.get("x-echo-key").is_none() && h.get("cookie").is_none());
    assert_passed_through(response.headers());
}

#[tokio::test]
async fn forward_headers_cannot_name_credentials() {
    let toml = upstream(
        "http://127.0.0.1:9/v1",
        r#"forward_headers = ["Authorization"]"#,
    );
    std::env::set_var("PASSTHROUGH_UPSTREAM_KEY", UPSTREAM_KEY);
    let config = config_from_toml(&toml);
    let err = gatewayd::upstream::Registry::from_config(&config.upstreams)
        .err()
        .expect("forwarding Authorization must be refused")
        .to_string();
    assert!(err.contains("never forwarded"), "{err}");
    assert!(!err.contains(UPSTREAM_KEY));
}

#[tokio::test]
async fn keyed_post_without_content_type_is_accepted_when_the_body_is_json() {
    let (log, url) = recording_upstream().await;
    let gw = gateway(&upstream(&url, "")).await;
    let send = |content_type: Option<&'static str>, body: String| {
        let mut request = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };
    let json_body = chat("m", false).to_string();
    let ok = send(None, json_body.clone()).await.unwrap();
    assert_eq!(ok.status(), 200, "{}", ok.text().await.unwrap());
    assert_eq!(log.lock().unwrap().len(), 1);
    let before = log.lock().unwrap().len();
    for (content_type, body) in [
        (Some("text/plain"), json_body.clone()),
        (Some("application/x-www-form-urlencoded"), json_body),
        (None, "model=m&messages=hi".to_string()),
    ] {
        let refused = send(content_type, body).await.unwrap();
        assert_eq!(refused.status(), 415, "{content_type:?}");
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unsupported_media_type");
    }
    assert_eq!(
        log.lock().unwrap().len(),
        before,
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn keyless_post_without_content_type_stays_415() {
    use tower::ServiceExt;
    let state = common::state_for(config_from_toml(""));
    let request = axum::http::Request::post("/v1/chat/completions")
        .header("host", "127.0.0.1")
        .body(axum::body::Body::from(
            json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        ))
        .unwrap();
    let response = gatewayd::app(state)
        .oneshot(common::from_localhost(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn unknown_and_unsupported_routes_say_so() {
    let (_log, url) = recording_upstream().await;
    let gw = gateway(&upstream(&url, "")).await;
    let cases = [
        (Method::GET, "/v1/nothing-here", "unknown_route", false),
        (Method::POST, "/v1/assistants", "unsupported_route", true),
        (
            Method::POST,
            "/v1/images/generations",
            "unsupported_route",
            true,
        ),
        (
            Method::POST,
            "/v1/audio/transcriptions",
            "unsupported_route",
            true,
        ),
        (Method::POST, "/v1/moderations", "unsupported_route", true),
        (Method::GET, "/v1/files", "unsupported_route", true),
        (
            Method::GET,
            "/v1/chat/completions/chatcmpl-1",
            "unsupported_route",
            true,
        ),
    ];
    for (method, path, code, openai) in cases {
        let response = client()
            .request(method.clone(), gw.url(path))
            .bearer_auth(KEY_A)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let error: Value = response.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert_eq!(error["error"]["code"], code, "{path}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(message.contains(&format!("{method} {path}")), "{message}");
        assert_eq!(message.contains("does not support"), openai, "{message}");
    }
}
