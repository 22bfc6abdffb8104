//! A chat stream ends for the client at the upstream's `data: [DONE]`: nothing after it is
//! forwarded or stored (even in the same chunk), and an upstream that keeps its body open
//! afterwards does not hold the client's response open. HTTP/1.1 and h2c clients get the
//! same stream from one listener.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::IntoResponse;
use axum::Router;
use common::{client, config_from_toml, mock_upstream, spawn_gateway, two_keys_toml, KEY_A};
use futures_util::StreamExt;
use serde_json::json;

const EVENTS: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";

/// Streams one event, `[DONE]` and one more event in one chunk, then keeps the body open
/// forever.
async fn upstream() -> String {
    let router = Router::new()
        .route(
            "/v2/chat/completions",
            axum::routing::post(|| async {
                // vLLM's way of failing mid-generation: an error event, then [DONE].
                let events = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n\
                              data: {\"error\":{\"message\":\"generation failed\",\"type\":\"InternalServerError\"}}\n\n\
                              data: [DONE]\n\n";
                ([("content-type", "text/event-stream")], events).into_response()
            }),
        )
        .route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            // One chunk: an event after [DONE] arrives with it, as a close-delimited
            // upstream can send it.
            let more = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" MORE\"}}]}\n\n";
            let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(
                format!("{EVENTS}{more}"),
            ))]);
            let never_ends = first.chain(futures_util::stream::pending());
            (
                [("content-type", "text/event-stream")],
                Body::from_stream(never_ends),
            )
                .into_response()
        }),
    );
    mock_upstream(router).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ends_at_done_even_if_the_upstream_body_stays_open() {
    let url = upstream().await;
    let config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"open\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n",
        two_keys_toml()
    ));
    let gw = spawn_gateway(config).await;
    // With a session (the turn is settled before the end is sent) and without one.
    for with_session in [true, false] {
        let session = common::sessions::create(&gw, KEY_A, json!({})).await;
        let mut request = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .json(&json!({"model": "m", "stream": true,
                "messages": [{"role": "user", "content": "hello"}]}));
        if with_session {
            request = request.header("x-session-id", &session);
        }
        let started = Instant::now();
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        // The whole body: it must end although the upstream's never does. Before, it
        // stayed open until the upstream's 60 s idle timeout, then got an error event.
        let body = tokio::time::timeout(Duration::from_secs(20), response.bytes())
            .await
            .expect("the client's stream did not end after [DONE]")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            EVENTS,
            "session: {with_session}"
        );
        if with_session {
            // What is stored is what the client saw.
            let stored = common::sessions::messages(&gw, KEY_A, &session).await;
            assert_eq!(stored.len(), 2, "{stored:?}");
            assert_eq!(stored[1]["content"], "hi");
        }
    }
}

/// One plain listener serves HTTP/1.1 and h2c (HTTP/2 with prior knowledge), told apart
/// by the connection's first bytes: both get the same stream, ended at `[DONE]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_clients_on_one_listener_get_the_same_stream() {
    let url = upstream().await;
    let config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"open\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n",
        two_keys_toml()
    ));
    let gw = spawn_gateway(config).await;
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (client, version) in [
        (h1, reqwest::Version::HTTP_11),
        (h2c, reqwest::Version::HTTP_2),
    ] {
        // Twice on the same connection: the first request's bytes were the sniffed ones.
        for _ in 0..2 {
            let response = client
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(KEY_A)
                .json(&json!({"model": "m", "stream": true,
                    "messages": [{"role": "user", "content": "hello"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), version);
            let body = tokio::time::timeout(Duration::from_secs(20), response.bytes())
                .await
                .expect("the client's stream did not end after [DONE]")
                .unwrap();
            assert_eq!(std::str::from_utf8(&body).unwrap(), EVENTS, "{version:?}");
        }
    }
}

/// An upstream that reports an error inside its stream, then sends `[DONE]`: the turn is
/// not stored, and the client's stream ends with an error event instead of `[DONE]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_inside_the_stream_is_not_stored() {
    let url = upstream().await.replace("/v1", "/v2");
    let config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"failing\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n",
        two_keys_toml()
    ));
    let gw = spawn_gateway(config).await;
    let session = common::sessions::create(&gw, KEY_A, json!({})).await;
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-session-id", &session)
        .json(&json!({"model": "m", "stream": true,
            "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap();
    assert!(body.contains("generation failed"), "{body}");
    assert!(!body.contains("[DONE]"), "{body}");
    assert!(body.trim_end().ends_with("}"), "{body}");
    assert!(body.contains("\"upstream_error\""), "{body}");
    assert_eq!(
        common::sessions::messages(&gw, KEY_A, &session).await,
        Vec::<serde_json::Value>::new(),
        "a turn the upstream failed is not stored"
    );
}

/// A close-delimited upstream (HTTP/1.1 without a length or chunking, `Connection:
/// close`) that writes "Hello", " world", `[DONE]` and then one more event " MORE" as
/// separate writes before closing. The client sees nothing after `[DONE]`, and the session
/// stores what the client saw: "Hello world".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_after_done_on_a_close_delimited_stream_is_neither_relayed_nor_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // Read the request head and its body (the gateway sends a content-length).
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let read = socket.read(&mut buffer).await.unwrap();
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length = text[..head_end]
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .and_then(|value| value.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= head_end + 4 + length {
                            break;
                        }
                    }
                }
                let event = |text: &str| {
                    format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n")
                };
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                for part in [
                    head.to_string(),
                    event("Hello"),
                    event(" world"),
                    "data: [DONE]\n\n".to_string(),
                    event(" MORE"),
                ] {
                    if socket.write_all(part.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = socket.flush().await;
                    tokio::task::yield_now().await;
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    let config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"close-delimited\"\nbase_url = \"http://{address}/v1\"\nmodels = [\"*\"]\n",
        two_keys_toml()
    ));
    let gw = spawn_gateway(config).await;
    for with_session in [true, false] {
        let session = common::sessions::create(&gw, KEY_A, json!({})).await;
        let mut request = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .json(&json!({"model": "m", "stream": true,
                "messages": [{"role": "user", "content": "hello"}]}));
        if with_session {
            request = request.header("x-session-id", &session);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body = String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap();
        assert!(body.contains("Hello") && body.contains(" world"), "{body}");
        assert!(
            body.ends_with("data: [DONE]\n\n"),
            "session {with_session}: {body}"
        );
        assert!(!body.contains("MORE"), "session {with_session}: {body}");
        if with_session {
            let stored = common::sessions::messages(&gw, KEY_A, &session).await;
            assert_eq!(stored.len(), 2, "{stored:?}");
            assert_eq!(stored[1]["content"], "Hello world");
        }
    }
}
