//! Behind a trusted proxy the forwarded client address is what the failed-auth throttle counts; from anyone else forwarding headers count for nothing. Keyless mode refuses every proxy header.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{client, config_from_toml, spawn_gateway, state_for, two_keys_toml, KEY_A};
use serde_json::Value;
use tower::ServiceExt;

const WRONG: &str = "gwd_Wr0ngKeyXq9Lz4Vb7Nc2Md5Fg8Hj3Kp6Ts";

async fn models(url: &str, key: &str, forwarded_for: Option<&str>) -> u16 {
    let mut request = client().get(url).bearer_auth(key);
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_an_attacker_cannot_lock_out_the_key_holder() {
    // The test client on 127.0.0.1 plays the reverse proxy (config_from_toml has
    // already opened the [server] table).
    let toml = format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n[limits]\nfailed_auth_per_minute = 5\n{}",
        two_keys_toml()
    );
    let gateway = spawn_gateway(config_from_toml(&toml)).await;
    let url = gateway.url("/v1/models");
    let mut throttled = 0;
    for _ in 0..20 {
        // A spoofed entry on the left is skipped: the proxy's own entry (right) counts.
        if models(&url, WRONG, Some("192.0.2.1, 203.0.113.9")).await == 429 {
            throttled += 1;
        }
    }
    assert!(
        throttled >= 10,
        "the attacker was throttled only {throttled} times"
    );
    for _ in 0..10 {
        assert_eq!(models(&url, KEY_A, Some("198.51.100.7")).await, 200);
    }
    gateway.shutdown.cancel();
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_do_not_dodge_the_throttle() {
    let toml = format!(
        "trusted_proxies = [\"10.0.0.0/8\"]\n[limits]\nfailed_auth_per_minute = 5\n{}",
        two_keys_toml()
    );
    let gateway = spawn_gateway(config_from_toml(&toml)).await;
    let url = gateway.url("/v1/models");
    let mut last = 0;
    for i in 0..20 {
        // A fresh "client address" every time: ignored, since 127.0.0.1 is no trusted proxy.
        last = models(&url, WRONG, Some(&format!("203.0.113.{i}"))).await;
    }
    assert_eq!(last, 429);
    gateway.shutdown.cancel();
}

#[tokio::test]
async fn every_proxy_header_is_refused_in_keyless_mode() {
    let app = gatewayd::app(state_for(config_from_toml("")));
    for name in gatewayd::hardening::PROXY_HEADERS {
        let mut request = Request::get("/v1/models")
            .header("host", "127.0.0.1:8642")
            .header(name, "192.0.2.60")
            .body(Body::empty())
            .unwrap();
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        request
            .extensions_mut()
            .insert(gatewayd::server::Peer::Tcp(peer));
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "forbidden", "{name}");
    }
    // The headers defect 7 found missing, by name, so the list cannot quietly shrink.
    for name in [
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(gatewayd::hardening::PROXY_HEADERS.contains(&name), "{name}");
    }
}
