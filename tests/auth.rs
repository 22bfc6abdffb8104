//! The auth layer, driven in-process through `app(state)` with `oneshot`.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{config_from_toml, state_for, two_keys_toml, KEY_A, KEY_B};
use tower::ServiceExt;

fn keyed_app() -> axum::Router {
    gatewayd::app(state_for(config_from_toml(&two_keys_toml())))
}

async fn get(
    app: axum::Router,
    uri: &str,
    auth: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let mut request = Request::get(uri);
    if let Some(value) = auth {
        request = request.header("authorization", value);
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

fn assert_unauthorized(status: StatusCode, body: &serde_json::Value) {
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(body["error"]["param"].is_null());
    assert!(body["error"]["message"].is_string());
}

#[tokio::test]
async fn missing_header_is_401_with_plain_challenge() {
    let (status, headers, body) = get(keyed_app(), "/v1/models", None).await;
    assert_unauthorized(status, &body);
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="gatewayd""#);
}

#[tokio::test]
async fn wrong_keys_are_401_with_invalid_token() {
    let plus_one = format!("Bearer {KEY_A}x");
    let prefix = format!("Bearer {}", &KEY_A[..KEY_A.len() - 1]);
    let basic = format!("Basic {KEY_A}");
    for value in [
        "Bearer gwd_WrongWrongWrongWrongWrongWrongWro",
        plus_one.as_str(),
        prefix.as_str(),
        basic.as_str(),
        "Bearer",
        "Bearer ",
        "Bearer\tabc",
    ] {
        let (status, headers, body) = get(keyed_app(), "/v1/models", Some(value)).await;
        assert_unauthorized(status, &body);
        assert_eq!(
            headers["www-authenticate"], r#"Bearer realm="gatewayd", error="invalid_token""#,
            "{value}"
        );
        let text = body.to_string();
        assert!(!text.contains(&KEY_A[4..]), "key echoed for {value}");
    }
}

#[tokio::test]
async fn query_api_key_never_authenticates() {
    let uri = format!("/v1/models?api_key={KEY_A}");
    let (status, _, body) = get(keyed_app(), &uri, None).await;
    assert_unauthorized(status, &body);
}

#[tokio::test]
async fn lowercase_bearer_and_extra_spaces_are_accepted() {
    for value in [format!("bearer {KEY_A}"), format!("BEARER   {KEY_B}")] {
        let (status, _, body) = get(keyed_app(), "/v1/models", Some(&value)).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        assert_eq!(body["object"], "list");
    }
}

#[tokio::test]
async fn x_api_key_header_is_accepted() {
    let request = Request::get("/v1/models")
        .header("x-api-key", KEY_A)
        .body(Body::empty())
        .unwrap();
    let response = keyed_app().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_is_the_only_public_route() {
    let (status, _, body) = get(keyed_app(), "/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    for uri in ["/v1/models", "/nope", "/health/", "/v1/chat/completions"] {
        let (status, _, _) = get(keyed_app(), uri, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
}

#[tokio::test]
async fn unknown_route_and_wrong_method_are_openai_shaped() {
    let auth = format!("Bearer {KEY_A}");
    let (status, _, body) = get(keyed_app(), "/v1/nope", Some(&auth)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"]["message"].is_string());
    let (status, _, body) = get(keyed_app(), "/v1/chat/completions", Some(&auth)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"]["message"].is_string());
    assert!(body["error"].get("code").is_some());
}

#[tokio::test]
async fn keyless_loopback_mode_serves_as_local() {
    let app = gatewayd::app(state_for(config_from_toml("")));
    let request = Request::get("/v1/models")
        .header("host", "127.0.0.1:8642")
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(common::from_localhost(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["data"][0]["id"], "echo");
}

#[tokio::test]
async fn keyless_mode_without_a_recorded_peer_fails_closed() {
    let app = gatewayd::app(state_for(config_from_toml("")));
    let (status, _, body) = get(app, "/v1/models", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");
}

#[test]
fn verify_matches_any_configured_key() {
    let state = state_for(config_from_toml(&two_keys_toml()));
    let keys = state.keys.load();
    assert_eq!(
        gatewayd::auth::verify(&keys, KEY_A.as_bytes())
            .unwrap()
            .name,
        "alice"
    );
    assert_eq!(
        gatewayd::auth::verify(&keys, KEY_B.as_bytes())
            .unwrap()
            .name,
        "bob"
    );
    assert!(gatewayd::auth::verify(&keys, b"gwd_nope").is_none());
}

#[test]
fn bearer_separator_is_spaces_only() {
    // Found by the auth_header fuzz target: a tab after "Bearer " was skipped.
    assert_eq!(gatewayd::auth::parse_bearer(b"Bearer \tabc"), None);
    assert_eq!(gatewayd::auth::parse_bearer(b"Bearer\tabc"), None);
    assert_eq!(
        gatewayd::auth::parse_bearer(b"Bearer   abc"),
        Some(&b"abc"[..])
    );
    assert_eq!(
        gatewayd::auth::parse_bearer(b"bearer abc=="),
        Some(&b"abc=="[..])
    );
}
