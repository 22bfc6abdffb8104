//! Headers that must not cross the gateway, through real sockets: a header the client's
//! `Connection` names (hop-by-hop) and the spoofable client-address headers a
//! `forward_headers = ["*"]` wildcard would otherwise pass upstream; and the upstream's key
//! echoed back, absolute `Location`s, forwarding headers and the upstream's own hop-by-hop
//! headers, none of which may reach the client.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::{client, config_from_toml, mock_upstream, spawn_gateway, KEY_A};
use serde_json::{json, Value};

const UPSTREAM_KEY: &str = "sk-upstream-leaks-9f8e7d6c5b4a3210";
const KEY_ENV: &str = "HEADER_LEAKS_UPSTREAM_KEY";

/// The headers of every request the mock upstream received, in order.
type Log = Arc<Mutex<Vec<HeaderMap>>>;

/// A mock chat upstream that records request headers and answers with headers that leak:
/// its key echoed, a forwarding header, a hop-by-hop header its `Connection` names, and
/// an absolute `Location` naming it as `localhost` (model "relative": relative ones).
async fn leaky_upstream() -> (Log, String) {
    let log: Log = Log::default();
    let sink = log.clone();
    let router = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let sink = sink.clone();
        async move {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let port = headers["host"]
                .to_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap();
            let port = port.to_string();
            sink.lock().unwrap().push(headers);
            answer(&request, &port)
        }
    });
    let url = mock_upstream(router).await;
    (log, url)
}

fn answer(request: &Value, port: &str) -> Response {
    let (location, content_location) = match request["model"].as_str() {
        Some("relative") => ("/v1/things/1".to_string(), "things/1".to_string()),
        _ => (
            format!("http://localhost:{port}/v1/things/1"),
            "https://internal.example/things/1".to_string(),
        ),
    };
    let echo = format!("Bearer {UPSTREAM_KEY}");
    let (content_type, body) = if request["stream"] == json!(true) {
        (
            "text/event-stream",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"
                .to_string(),
        )
    } else {
        (
            "application/json",
            json!({"id": "c1", "object": "chat.completion", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]})
            .to_string(),
        )
    };
    (
        [
            ("content-type", content_type),
            ("x-upstream-key-echo", echo.as_str()),
            ("x-forwarded-host", "internal.example"),
            ("x-forwarded-proto", "http"),
            ("forwarded", "for=10.0.0.9;host=internal.example"),
            ("x-real-ip", "10.0.0.9"),
            ("connection", "x-hop-up"),
            ("x-hop-up", "1"),
            ("location", location.as_str()),
            ("content-location", content_location.as_str()),
            ("x-kept", "kept"),
        ],
        body,
    )
        .into_response()
}

fn upstream_toml(url: &str, extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"up\"\nbase_url = \"{url}\"\napi_key_env = \"{KEY_ENV}\"\nmodels = [\"*\"]\n{extra}\n"
    )
}

async fn gateway(url: &str, extra: &str) -> common::Gateway {
    std::env::set_var(KEY_ENV, UPSTREAM_KEY);
    let toml = format!("{}\n{}", common::two_keys_toml(), upstream_toml(url, extra));
    spawn_gateway(config_from_toml(&toml)).await
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn headers_the_client_connection_names_are_not_forwarded() {
    let (log, url) = leaky_upstream().await;
    let gw = gateway(&url, "").await;
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("connection", "keep-alive, X-Stainless-Internal")
        .header("x-stainless-internal", "hop-secret")
        .header("x-stainless-lang", "python")
        .json(&chat("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = log.lock().unwrap().pop().unwrap();
    // The same prefix still forwards when the client does not name the header.
    assert_eq!(seen["x-stainless-lang"], "python");
    assert!(
        seen.get("x-stainless-internal").is_none(),
        "a header the client's Connection names reached the upstream: {seen:?}"
    );
}

#[tokio::test]
async fn upstream_key_absolute_locations_and_forwarding_headers_never_reach_the_client() {
    let (_log, url) = leaky_upstream().await;
    let gw = gateway(&url, "").await;
    let upstream_authority = url.trim_start_matches("http://").trim_end_matches("/v1");
    let port = upstream_authority.rsplit(':').next().unwrap();
    for stream in [false, true] {
        let response = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .json(&chat("m", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "stream {stream}");
        let headers = response.headers();
        assert_eq!(headers["x-kept"], "kept", "stream {stream}");
        for name in [
            "x-upstream-key-echo",
            "x-forwarded-host",
            "x-forwarded-proto",
            "forwarded",
            "x-real-ip",
            "x-hop-up",
            "location",
            "content-location",
        ] {
            assert!(
                headers.get(name).is_none(),
                "stream {stream}: {name} reached the client: {:?}",
                headers.get(name)
            );
        }
        for (name, value) in headers {
            let value = value.to_str().unwrap_or_default();
            assert!(!value.contains(UPSTREAM_KEY), "{name}: the upstream key");
            assert!(
                !value.contains(&format!("localhost:{port}")),
                "{name} names the upstream: {value}"
            );
        }
    }
    // A relative reference names no host: it passes.
    let relative = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&chat("relative", false))
        .send()
        .await
        .unwrap();
    assert_eq!(relative.status(), 200);
    assert_eq!(relative.headers()["location"], "/v1/things/1");
    assert_eq!(relative.headers()["content-location"], "things/1");
}

/// The client-address and original-URL headers a proxy or CDN sets, and `Cookie2`.
const SPOOFABLE: [&str; 6] = [
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-original-url",
    "x-rewrite-url",
    "cookie2",
];

#[tokio::test]
async fn a_wildcard_forwards_ordinary_headers_but_no_spoofable_one() {
    let (log, url) = leaky_upstream().await;
    let gw = gateway(&url, r#"forward_headers = ["*"]"#).await;
    let mut request = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-my-custom", "custom-value");
    for name in SPOOFABLE {
        request = request.header(name, "203.0.113.7");
    }
    let response = request.json(&chat("m", false)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = log.lock().unwrap().pop().unwrap();
    assert_eq!(seen["x-my-custom"], "custom-value");
    for name in SPOOFABLE {
        assert!(
            seen.get(name).is_none(),
            "{name} reached the upstream under a wildcard"
        );
    }

    // Named exactly, each is a startup error, as credentials are.
    for name in SPOOFABLE {
        std::env::set_var(KEY_ENV, UPSTREAM_KEY);
        let extra = format!("forward_headers = [\"{name}\"]");
        let config = config_from_toml(&upstream_toml("http://127.0.0.1:9/v1", &extra));
        let err = gatewayd::upstream::Registry::from_config(&config.upstreams)
            .err()
            .unwrap_or_else(|| panic!("forward_headers = [{name:?}] was accepted"))
            .to_string();
        assert!(err.contains("never forwarded"), "{err}");
    }
}
