//! The adversarial suite (issue 5): DNS rebinding, CSRF, proxies, CORS, auth edge cases,
//! connection and request limits, per-key limits, security headers, paths, log redaction.
//!
//! In-process cases drive `app(state)` with `oneshot` (recording the peer as the server
//! would); socket-level cases (timeouts, connection limits, hyper's own limits) use a
//! gateway served on 127.0.0.1:0, and log redaction runs the real binary.
// Helpers outside #[test] fns unwrap too: a panic there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use common::{config_from_toml, sha256_hex, spawn_gateway, state_for, two_keys_toml, KEY_A, KEY_B};
use gatewayd::server::Peer;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

const LOCAL_HOST: &str = "127.0.0.1:8642";

fn keyless_app(toml: &str) -> Router {
    gatewayd::app(state_for(config_from_toml(toml)))
}

fn keyed_app(extra: &str) -> Router {
    gatewayd::app(state_for(config_from_toml(&format!(
        "{extra}\n{}",
        two_keys_toml()
    ))))
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn with_peer<B>(mut request: Request<B>, peer: &str) -> Request<B> {
    let addr: SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(Peer::Tcp(addr));
    request
}

/// A request as a local client would send it: loopback peer, local Host.
fn local(builder: axum::http::request::Builder, body: Body) -> Request<Body> {
    with_peer(
        builder.header("host", LOCAL_HOST).body(body).unwrap(),
        "127.0.0.1:50000",
    )
}

fn json_post(uri: &str) -> axum::http::request::Builder {
    Request::post(uri).header("content-type", "application/json")
}

fn chat_body(prompt: &str, stream: bool) -> Body {
    Body::from(
        json!({"model": "echo", "stream": stream, "messages": [{"role": "user", "content": prompt}]})
            .to_string(),
    )
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    json: Value,
}

async fn send(app: Router, request: Request<Body>) -> Reply {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

/// The OpenAI error shape, with the given status and code.
fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    let error = &reply.json["error"];
    assert!(error["message"].is_string(), "{}", reply.text);
    assert!(error["type"].is_string(), "{}", reply.text);
    assert!(error.get("param").is_some(), "{}", reply.text);
    assert_eq!(error["code"], code, "{}", reply.text);
}

fn assert_security_headers(headers: &HeaderMap) {
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let cache = headers["cache-control"].to_str().unwrap();
    assert!(cache.contains("no-store"), "{cache}");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert!(headers.contains_key("x-request-id"));
}

fn assert_no_cors(headers: &HeaderMap) {
    let cors: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "unexpected CORS headers {cors:?}");
}

async fn keyless_get_with_host(host: Option<&str>) -> Reply {
    let mut builder = Request::get("/v1/models");
    if let Some(host) = host {
        builder = builder.header("host", host);
    }
    let request = with_peer(builder.body(Body::empty()).unwrap(), "127.0.0.1:50000");
    send(keyless_app(""), request).await
}

// ---------------------------------------------------------------- DNS rebinding

#[tokio::test]
async fn rebinding_host_evil_com_is_403() {
    assert_error(
        &keyless_get_with_host(Some("evil.com")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}

#[tokio::test]
async fn rebinding_host_evil_com_with_port_is_403() {
    let reply = keyless_get_with_host(Some("evil.com:8642")).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn host_0_0_0_0_is_403() {
    for host in ["0.0.0.0", "0.0.0.0:8642"] {
        assert_error(
            &keyless_get_with_host(Some(host)).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
}

#[tokio::test]
async fn rebinding_host_nip_io_is_403() {
    let reply = keyless_get_with_host(Some("127.0.0.1.nip.io:8642")).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn rebinding_host_localhost_evil_com_is_403() {
    let reply = keyless_get_with_host(Some("localhost.evil.com")).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn missing_host_is_403() {
    assert_error(
        &keyless_get_with_host(None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}

#[tokio::test]
async fn host_with_slash_or_question_mark_is_403_keyless_and_401_keyed() {
    for host in ["localhost/x", "localhost?x", "127.0.0.1:8642/v1"] {
        let reply = keyless_get_with_host(Some(host)).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
        let request = Request::get("/v1/models")
            .header("host", host)
            .body(Body::empty())
            .unwrap();
        let reply = send(keyed_app(""), request).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
}

#[tokio::test]
async fn local_host_names_are_served() {
    for host in [
        "localhost",
        "LocalHost:1234",
        "localhost.",
        "127.0.0.1",
        "[::1]:8642",
    ] {
        let reply = keyless_get_with_host(Some(host)).await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text);
    }
}

#[tokio::test]
async fn http2_style_uri_authority_is_checked_too() {
    let request = with_peer(
        Request::get("http://evil.com/v1/models")
            .body(Body::empty())
            .unwrap(),
        "127.0.0.1:50000",
    );
    assert_error(
        &send(keyless_app(""), request).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let request = with_peer(
        Request::get("http://localhost:8642/v1/models")
            .body(Body::empty())
            .unwrap(),
        "127.0.0.1:50000",
    );
    assert_eq!(send(keyless_app(""), request).await.status, StatusCode::OK);
}

// ---------------------------------------------------------------- CSRF and browsers

#[tokio::test]
async fn csrf_post_from_evil_origin_is_403() {
    let request = local(
        json_post("/v1/chat/completions").header("origin", "https://evil.com"),
        chat_body("hi", false),
    );
    assert_error(
        &send(keyless_app(""), request).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}

#[tokio::test]
async fn preflight_from_evil_origin_is_403_keyless() {
    let request = local(
        Request::options("/v1/chat/completions")
            .header("origin", "https://evil.com")
            .header("access-control-request-method", "POST"),
        Body::empty(),
    );
    let reply = send(keyless_app(""), request).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
    assert_no_cors(&reply.headers);
}

#[tokio::test]
async fn csrf_text_plain_post_is_415() {
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let request = local(
            Request::post("/v1/chat/completions").header("content-type", content_type),
            chat_body("hi", false),
        );
        let reply = send(keyless_app(""), request).await;
        assert_error(
            &reply,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
}

#[tokio::test]
async fn non_json_post_to_unknown_route_is_415_keyless() {
    let request = local(
        Request::post("/v1/whatever").header("content-type", "text/plain"),
        Body::from("x"),
    );
    let reply = send(keyless_app(""), request).await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
}

#[tokio::test]
async fn proxy_headers_are_403_in_keyless_mode() {
    for (name, value) in [
        ("forwarded", "for=192.0.2.60"),
        ("x-forwarded-for", "192.0.2.60"),
        ("x-real-ip", "192.0.2.60"),
        ("via", "1.1 proxy"),
    ] {
        let request = local(
            Request::get("/v1/models").header(name, value),
            Body::empty(),
        );
        let reply = send(keyless_app(""), request).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(message.contains("needs a key"), "{name}: {message}");
    }
}

#[tokio::test]
async fn proxy_headers_and_peers_are_fine_with_a_key() {
    let request = Request::get("/v1/models")
        .header("x-forwarded-for", "192.0.2.60")
        .header("authorization", bearer(KEY_A))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(keyed_app(""), request).await.status, StatusCode::OK);
}

#[tokio::test]
async fn non_loopback_peer_is_403_in_keyless_mode() {
    for peer in ["192.0.2.7:1234", "[2001:db8::1]:1234", "0.0.0.0:1"] {
        let request = Request::get("/v1/models")
            .header("host", LOCAL_HOST)
            .body(Body::empty())
            .unwrap();
        let reply = send(keyless_app(""), with_peer(request, peer)).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
    }
    let request = Request::get("/v1/models")
        .header("host", LOCAL_HOST)
        .body(Body::empty())
        .unwrap();
    let reply = send(keyless_app(""), with_peer(request, "[::ffff:127.0.0.1]:1")).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn missing_peer_fails_closed_in_keyless_mode() {
    let request = Request::get("/v1/models")
        .header("host", LOCAL_HOST)
        .body(Body::empty())
        .unwrap();
    assert_error(
        &send(keyless_app(""), request).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}

// ---------------------------------------------------------------- CORS

const CORS_TOML: &str = "cors_origins = [\"http://localhost:3000\"]\n";

#[tokio::test]
async fn no_cors_headers_by_default() {
    let request = Request::get("/v1/models")
        .header("origin", "http://localhost:3000")
        .header("authorization", bearer(KEY_A))
        .body(Body::empty())
        .unwrap();
    let reply = send(keyed_app(""), request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_no_cors(&reply.headers);
    let preflight = Request::options("/v1/chat/completions")
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    assert_no_cors(&send(keyed_app(""), preflight).await.headers);
}

#[tokio::test]
async fn allowed_origin_gets_cors_headers() {
    let request = Request::get("/v1/models")
        .header("origin", "http://localhost:3000")
        .header("authorization", bearer(KEY_A))
        .body(Body::empty())
        .unwrap();
    let reply = send(keyed_app(CORS_TOML), request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let exposed = reply.headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        exposed.contains("x-session-id") && exposed.contains("x-request-id"),
        "{exposed}"
    );
    assert!(!reply
        .headers
        .contains_key("access-control-allow-credentials"));
}

#[tokio::test]
async fn allowed_preflight_is_answered_before_auth() {
    let request = Request::options("/v1/chat/completions")
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-session-id",
        )
        .header("access-control-request-private-network", "true")
        .body(Body::empty())
        .unwrap();
    let reply = send(keyed_app(CORS_TOML), request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let methods = reply.headers["access-control-allow-methods"]
        .to_str()
        .unwrap();
    for method in ["GET", "POST", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = reply.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for name in [
        "authorization",
        "content-type",
        "x-session-id",
        "idempotency-key",
    ] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert!(!reply
        .headers
        .contains_key("access-control-allow-private-network"));
    assert_security_headers(&reply.headers);
}

#[tokio::test]
async fn evil_origin_gets_no_cors_headers_with_cors_enabled() {
    let request = Request::get("/v1/models")
        .header("origin", "https://evil.com")
        .header("authorization", bearer(KEY_A))
        .body(Body::empty())
        .unwrap();
    assert_no_cors(&send(keyed_app(CORS_TOML), request).await.headers);
    let preflight = Request::options("/v1/chat/completions")
        .header("origin", "https://evil.com")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    let reply = send(keyed_app(CORS_TOML), preflight).await;
    assert!(!reply.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn keyless_allowed_origin_may_post_json() {
    let request = local(
        json_post("/v1/chat/completions").header("origin", "http://localhost:3000"),
        chat_body("hi", false),
    );
    // config_from_toml opens [server]; the origin line lands in it.
    let reply = send(keyless_app(CORS_TOML), request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
}

#[test]
fn wildcard_cors_without_a_key_exits_78() {
    let mut child = common::binary()
        .args(["--port", "0"])
        .env("API_SERVER_CORS_ORIGINS", "*")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gatewayd started with cors_origins = * and no key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("cors_origins"), "{stderr}");
}

// ---------------------------------------------------------------- auth edge cases

#[tokio::test]
async fn duplicate_authorization_headers_are_400() {
    let request = Request::get("/v1/models")
        .header("authorization", bearer(KEY_A))
        .header("authorization", bearer(KEY_A))
        .body(Body::empty())
        .unwrap();
    let reply = send(keyed_app(""), request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn authorization_and_different_x_api_key_are_400() {
    let request = Request::get("/v1/models")
        .header("authorization", bearer(KEY_A))
        .header("x-api-key", KEY_B)
        .body(Body::empty())
        .unwrap();
    let reply = send(keyed_app(""), request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(!reply.text.contains(KEY_B) && !reply.text.contains(KEY_A));
}

#[tokio::test]
async fn tokens_with_control_or_non_ascii_bytes_are_401() {
    let mut values: Vec<Vec<u8>> = vec![
        format!("Bearer {KEY_A}\u{e9}").into_bytes(),
        b"Bearer gwd_\xff\xfe\xfd".to_vec(),
        format!("Bearer {}\t{}", &KEY_A[..10], &KEY_A[10..]).into_bytes(),
        b"Bearer \x80".to_vec(),
    ];
    values.push(b"\xffBearer x".to_vec());
    for value in values {
        let request = Request::get("/v1/models")
            .header("authorization", HeaderValue::from_bytes(&value).unwrap())
            .body(Body::empty())
            .unwrap();
        let reply = send(keyed_app(""), request).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
}

#[tokio::test]
async fn query_api_key_never_authenticates() {
    for uri in [
        format!("/v1/models?api_key={KEY_A}"),
        format!("/v1/models?key={KEY_A}&authorization=Bearer%20{KEY_A}"),
    ] {
        let request = Request::get(uri.as_str()).body(Body::empty()).unwrap();
        let reply = send(keyed_app(""), request).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
}

// ---------------------------------------------------------------- per-key limits

fn keys_toml(alice_extra: &str) -> String {
    format!(
        "[[keys]]\nname = \"alice\"\nsha256 = \"{}\"\n{alice_extra}\n\n[[keys]]\nname = \"bob\"\nsha256 = \"{}\"\n",
        sha256_hex(KEY_A),
        sha256_hex(KEY_B)
    )
}

fn models_as(key: &str) -> Request<Body> {
    Request::get("/v1/models")
        .header("authorization", bearer(key))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn per_key_rate_limit_is_429_with_retry_after() {
    let app = gatewayd::app(state_for(config_from_toml(&keys_toml(
        "requests_per_minute = 2",
    ))));
    for _ in 0..2 {
        assert_eq!(
            send(app.clone(), models_as(KEY_A)).await.status,
            StatusCode::OK
        );
    }
    let reply = send(app.clone(), models_as(KEY_A)).await;
    assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded");
    assert_eq!(reply.json["error"]["type"], "rate_limit_error");
    let retry: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_security_headers(&reply.headers);
    // Another key's budget is its own.
    assert_eq!(send(app, models_as(KEY_B)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn global_rate_limit_applies_unless_a_key_overrides_it() {
    let toml = format!(
        "[limits]\nper_key_requests_per_minute = 1\n{}",
        keys_toml("requests_per_minute = 100")
    );
    let app = gatewayd::app(state_for(config_from_toml(&toml)));
    for _ in 0..3 {
        assert_eq!(
            send(app.clone(), models_as(KEY_A)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        send(app.clone(), models_as(KEY_B)).await.status,
        StatusCode::OK
    );
    let reply = send(app, models_as(KEY_B)).await;
    assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded");
}

#[tokio::test]
async fn per_key_concurrency_holds_until_the_body_ends() {
    let app = gatewayd::app(state_for(config_from_toml(&keys_toml(
        "concurrent_requests = 1",
    ))));
    // The first response's body is not read yet: the request is still in flight.
    let first = app.clone().oneshot(models_as(KEY_A)).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let reply = send(app.clone(), models_as(KEY_A)).await;
    assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded");
    assert!(reply.headers.contains_key("retry-after"));
    assert_eq!(
        send(app.clone(), models_as(KEY_B)).await.status,
        StatusCode::OK
    );
    axum::body::to_bytes(first.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(send(app, models_as(KEY_A)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn per_key_concurrency_counts_a_stream_until_its_last_event() {
    let app = gatewayd::app(state_for(config_from_toml(&keys_toml(
        "concurrent_requests = 1",
    ))));
    let stream_request = || {
        json_post("/v1/chat/completions")
            .header("authorization", bearer(KEY_A))
            .body(chat_body("a streamed answer", true))
            .unwrap()
    };
    let streaming = app.clone().oneshot(stream_request()).await.unwrap();
    assert_eq!(streaming.status(), StatusCode::OK);
    let reply = send(app.clone(), models_as(KEY_A)).await;
    assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded");
    let events = axum::body::to_bytes(streaming.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&events).contains("data: [DONE]"));
    assert_eq!(send(app, models_as(KEY_A)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn failed_auth_is_throttled_per_address_before_comparison() {
    let toml = format!("[limits]\nfailed_auth_per_minute = 3\n{}", two_keys_toml());
    let app = gatewayd::app(state_for(config_from_toml(&toml)));
    let attempt = |key: &str, peer: &str| with_peer(models_as(key), peer);
    let wrong = "gwd_Wr0ngWr0ngWr0ngWr0ngWr0ngWr0ng12";
    for _ in 0..3 {
        let reply = send(app.clone(), attempt(wrong, "192.0.2.9:1000")).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
    let reply = send(app.clone(), attempt(wrong, "192.0.2.9:1001")).await;
    assert_error(
        &reply,
        StatusCode::TOO_MANY_REQUESTS,
        "failed_auth_throttled",
    );
    assert!(reply.headers.contains_key("retry-after"));
    // Blocked before any comparison: even the right key waits, and is told why.
    let reply = send(app.clone(), attempt(KEY_A, "192.0.2.9:1002")).await;
    assert_error(
        &reply,
        StatusCode::TOO_MANY_REQUESTS,
        "failed_auth_throttled",
    );
    let message = reply.json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("failed authentications from this address (192.0.2.9)"),
        "{message}"
    );
    // Other addresses are not affected; successes never spend quota.
    for _ in 0..10 {
        assert_eq!(
            send(app.clone(), attempt(KEY_A, "192.0.2.10:1"))
                .await
                .status,
            StatusCode::OK
        );
    }
}

// ---------------------------------------------------------------- paths

const PATH_VARIANTS: [&str; 8] = [
    "/V1/models",
    "//v1/models",
    "/v1/models/",
    "/v1/../v1/models",
    "/v1/./models",
    "/v1/%6dodels",
    "/%761/models",
    "/v1%2fmodels",
];

#[tokio::test]
async fn path_variants_without_a_key_are_401() {
    for path in PATH_VARIANTS {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let reply = send(keyed_app(""), request).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
}

#[tokio::test]
async fn path_variants_with_a_key_are_404_never_200() {
    for path in PATH_VARIANTS {
        let reply = send(keyed_app(""), {
            let mut r = models_as(KEY_A);
            *r.uri_mut() = path.parse().unwrap();
            r
        })
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert!(reply.json["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn path_variants_reach_no_handler_over_a_socket() {
    let gateway = spawn_gateway(config_from_toml(&two_keys_toml())).await;
    for path in PATH_VARIANTS {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let response = exchange(gateway.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 401"), "{path}: {response}");
    }
    gateway.shutdown.cancel();
}

// ---------------------------------------------------------------- security headers

#[tokio::test]
async fn security_headers_on_401() {
    let reply = send(
        keyed_app(""),
        Request::get("/v1/models").body(Body::empty()).unwrap(),
    )
    .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
    assert_security_headers(&reply.headers);
}

#[tokio::test]
async fn security_headers_on_403() {
    let reply = keyless_get_with_host(Some("evil.com")).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
    assert_security_headers(&reply.headers);
}

#[tokio::test]
async fn security_headers_on_404() {
    let mut request = models_as(KEY_A);
    *request.uri_mut() = "/v1/nope".parse().unwrap();
    let reply = send(keyed_app(""), request).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_security_headers(&reply.headers);
}

#[tokio::test]
async fn security_headers_on_413() {
    let app = keyed_app("[limits]\nmax_body_bytes = 64\n");
    let request = json_post("/v1/chat/completions")
        .header("authorization", bearer(KEY_A))
        .body(chat_body(&"x".repeat(500), false))
        .unwrap();
    let reply = send(app, request).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_security_headers(&reply.headers);
}

#[tokio::test]
async fn security_headers_on_415_and_431() {
    let reply = send(
        keyless_app(""),
        local(Request::post("/v1/chat/completions"), Body::from("x")),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_security_headers(&reply.headers);
    let mut builder = Request::get("/v1/models").header("authorization", bearer(KEY_A));
    for i in 0..101 {
        builder = builder.header(format!("x-filler-{i}"), "1");
    }
    let reply = send(keyed_app(""), builder.body(Body::empty()).unwrap()).await;
    assert_error(
        &reply,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request_headers_too_large",
    );
    assert_security_headers(&reply.headers);
}

#[tokio::test]
async fn security_headers_on_a_stream() {
    let request = json_post("/v1/chat/completions")
        .header("authorization", bearer(KEY_A))
        .body(chat_body("stream me", true))
        .unwrap();
    let reply = send(keyed_app(""), request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(reply.text.contains("data: [DONE]"));
    assert_security_headers(&reply.headers);
}

#[tokio::test]
async fn request_id_is_generated_or_propagated() {
    let reply = send(
        keyed_app(""),
        Request::get("/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(reply.headers["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
    let request = Request::get("/health")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(keyed_app(""), request).await.headers["x-request-id"],
        "abc-123"
    );
}

// ---------------------------------------------------------------- sockets: limits and timeouts

/// Writes `request`, then reads until the server closes (at most 10 s).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer (and stop reading) before all of it is written.
    let _ = stream.write_all(request).await;
    read_to_close(&mut stream, Duration::from_secs(10)).await.0
}

/// Reads until EOF or reset; returns what was read and how long it took.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("socket still open after {limit:?}"),
        }
    }
    (
        String::from_utf8_lossy(&seen).into_owned(),
        started.elapsed(),
    )
}

/// Reads until `needle` has arrived.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("timed out")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

const FAST_TIMEOUTS: &str = "[limits]\nheader_read_timeout_secs = 1\nkeepalive_idle_secs = 30\n";

#[tokio::test]
async fn slowloris_partial_headers_are_cut_off() {
    let gateway = spawn_gateway(config_from_toml(FAST_TIMEOUTS)).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    // Keep trickling one byte at a time: progress must not extend the deadline.
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "server kept a slowloris connection open for 3 s"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    trickle.abort();
    gateway.shutdown.cancel();
}

#[tokio::test]
async fn silent_connection_is_closed() {
    let gateway = spawn_gateway(config_from_toml(FAST_TIMEOUTS)).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let (seen, took) = read_to_close(&mut stream, Duration::from_secs(3)).await;
    assert!(seen.is_empty(), "{seen}");
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );
    gateway.shutdown.cancel();
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed_after_keepalive_idle() {
    let toml = "[limits]\nheader_read_timeout_secs = 10\nkeepalive_idle_secs = 1\n";
    let gateway = spawn_gateway(config_from_toml(toml)).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let get = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    stream.write_all(get).await.unwrap();
    read_until(&mut stream, "{\"status\":\"ok\"}").await;
    // Still usable between requests…
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(get).await.unwrap();
    read_until(&mut stream, "{\"status\":\"ok\"}").await;
    // …and closed once idle for keepalive_idle_secs, well before the header timeout.
    let (_, took) = read_to_close(&mut stream, Duration::from_secs(4)).await;
    assert!(
        took >= Duration::from_millis(700),
        "closed too early: {took:?}"
    );
    gateway.shutdown.cancel();
}

#[tokio::test]
async fn oversized_chunked_body_is_413() {
    let toml = format!("[limits]\nmax_body_bytes = 1024\n{}", two_keys_toml());
    let gateway = spawn_gateway(config_from_toml(&toml)).await;
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY_A}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let body = format!(
        "{{\"model\":\"echo\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "z".repeat(4000)
    );
    for chunk in body.as_bytes().chunks(500) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = exchange(gateway.addr, &request).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    let json: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["error"]["code"], "payload_too_large");
    assert!(response
        .to_lowercase()
        .contains("x-content-type-options: nosniff"));
    gateway.shutdown.cancel();
}

#[tokio::test]
async fn too_many_headers_on_the_wire_is_431() {
    let gateway = spawn_gateway(config_from_toml(&two_keys_toml())).await;
    let mut request =
        String::from("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for i in 0..150 {
        request.push_str(&format!("X-Filler-{i}: 1\r\n"));
    }
    request.push_str("\r\n");
    let response = exchange(gateway.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    gateway.shutdown.cancel();
}

#[tokio::test]
async fn oversized_header_block_is_431() {
    let gateway = spawn_gateway(config_from_toml(&two_keys_toml())).await;
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(64 * 1024)
    );
    let response = exchange(gateway.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    gateway.shutdown.cancel();
}

/// An upstream whose stream takes ~1.5 s: ten events 150 ms apart.
async fn slow_stream_upstream() -> String {
    let router = Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            let events = futures_util::stream::unfold(0u32, |i| async move {
                if i > 10 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
                let event = if i == 10 {
                    "data: [DONE]\n\n".to_string()
                } else {
                    format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n")
                };
                Some((Ok::<_, std::io::Error>(Bytes::from(event)), i + 1))
            });
            ([("content-type", "text/event-stream")], Body::from_stream(events)).into_response()
        }),
    );
    common::mock_upstream(router).await
}

#[tokio::test]
async fn beyond_max_connections_new_connections_wait_and_streams_go_on() {
    let upstream = slow_stream_upstream().await;
    let toml = format!(
        "[limits]\nmax_connections = 1\n\n[[upstreams]]\nname = \"slow\"\nbase_url = \"{upstream}\"\nmodels = [\"*\"]\n"
    );
    let gateway = spawn_gateway(config_from_toml(&toml)).await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut first = TcpStream::connect(gateway.addr).await.unwrap();
    first.write_all(request.as_bytes()).await.unwrap();
    read_until(&mut first, "t0").await;

    // The second connection is accepted by the kernel but not served meanwhile.
    let mut second = TcpStream::connect(gateway.addr).await.unwrap();
    second
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "second connection was served beyond max_connections"
    );

    let (rest, _) = read_to_close(&mut first, Duration::from_secs(10)).await;
    assert!(
        rest.contains("t9") && rest.contains("data: [DONE]"),
        "{rest}"
    );
    let (answer, _) = read_to_close(&mut second, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    gateway.shutdown.cancel();
}

// ---------------------------------------------------------------- logs

#[tokio::test]
async fn logs_never_contain_keys_or_prompts() {
    const CANARY: &str = "canary-prompt-5f1e0c7d";
    const WRONG: &str = "gwd_Cx9WrongCanaryKey7Qp2Lm4Zt8Rb6Hs";
    let mut command = common::binary();
    command
        .args(["--port", "0"])
        .env("API_SERVER_KEY", KEY_A)
        .env("RUST_LOG", "trace");
    let process = common::start(command);
    let client = common::client();
    for stream in [false, true] {
        let response = client
            .post(process.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .header("cookie", "session=cookie-canary-91ab")
            .json(&json!({"model": "echo", "stream": stream, "messages": [{"role": "user", "content": CANARY}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(
            text.contains(CANARY),
            "the echo model should answer with the prompt"
        );
    }
    let response = client
        .get(process.url("/v1/models"))
        .header("x-api-key", WRONG)
        .header("proxy-authorization", format!("Basic {WRONG}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = process.stderr();
    assert!(
        logs.contains("request"),
        "no request was logged at all: {logs}"
    );
    for secret in [KEY_A, &KEY_A[4..20], WRONG, CANARY, "cookie-canary-91ab"] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}
