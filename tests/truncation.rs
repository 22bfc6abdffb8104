//! Truncated upstream answers: streams without `data: [DONE]`, bodies cut short or not JSON, and what a session stores.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::sessions::without_timestamps;
use common::sse::{assert_event_stream, data_payloads};
use common::{assert_openai_error, client, config_from_toml, spawn_gateway, two_keys_toml};
use common::{Gateway, KEY_A};
use serde_json::{json, Value};
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const EVENT_1: &str = r#"{"choices":[{"index":0,"delta":{"content":"Hello"}}]}"#;
const EVENT_2: &str = r#"{"choices":[{"index":0,"delta":{"content":", world"}}]}"#;
/// A close-delimited event stream: no Content-Length, not chunked; the body ends when
/// the connection closes.
const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";

/// Two content events and then nothing: the upstream closes without `data: [DONE]`.
fn cut_stream() -> Vec<Vec<u8>> {
    vec![
        SSE_HEAD.into(),
        format!("data: {EVENT_1}\n\n").into(),
        format!("data: {EVENT_2}\n\n").into(),
    ]
}

/// The same two events, then `data: [DONE]`, then the close.
fn complete_stream() -> Vec<Vec<u8>> {
    let mut pieces = cut_stream();
    pieces.push(b"data: [DONE]\n\n".to_vec());
    pieces
}

/// A JSON response head with the given Content-Length, followed by `body`.
fn json_response(content_length: usize, body: &[u8]) -> Vec<Vec<u8>> {
    vec![
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\n"
        )
        .into(),
        body.to_vec(),
    ]
}

/// A plain TCP server speaking just enough HTTP/1.1: it reads each request whole, then
/// writes the canned response pieces and closes the connection.
struct RawUpstream {
    base_url: String,
    /// Requests read in full (counted before any response byte is written).
    requests: Arc<AtomicUsize>,
    /// Their JSON bodies, in arrival order.
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl RawUpstream {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn raw_upstream(response: Vec<Vec<u8>>) -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (requests.clone(), bodies.clone());
    let response = Arc::new(response);
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let (count, seen, response) = (count.clone(), seen.clone(), response.clone());
            tokio::spawn(async move {
                serve_once(socket, &count, &seen, &response).await;
            });
        }
    });
    RawUpstream {
        base_url: format!("http://{addr}/v1"),
        requests,
        bodies,
    }
}

async fn serve_once(
    mut socket: TcpStream,
    count: &AtomicUsize,
    seen: &Mutex<Vec<Value>>,
    response: &[Vec<u8>],
) {
    // Read the whole request first: closing with unread bytes would send a reset, not
    // the clean end of body these tests are about.
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "request ended inside its head");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let content_length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("the gateway sends requests with a Content-Length");
    while buffer.len() < head_end + content_length {
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "request ended inside its body");
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body: Value = serde_json::from_slice(&buffer[head_end..head_end + content_length]).unwrap();
    seen.lock().unwrap().push(body);
    count.fetch_add(1, Ordering::SeqCst);
    // The gateway may hang up first (e.g. once it has a whole Content-Length body); what
    // it made of the answer is asserted on the client side.
    for piece in response {
        if socket.write_all(piece).await.is_err() || socket.flush().await.is_err() {
            return;
        }
    }
    let _ = socket.shutdown().await;
}

/// `[[upstreams]]` entries: (name, base URL, models, extra lines).
fn gateway_toml(upstreams: &[(&str, &str, &str, &str)]) -> String {
    let mut toml = two_keys_toml();
    for (name, url, models, extra) in upstreams {
        toml.push_str(&format!(
            "\n[[upstreams]]\nname = \"{name}\"\nbase_url = \"{url}\"\nmodels = {models}\n{extra}\n"
        ));
    }
    toml
}

async fn gateway(upstreams: &[(&str, &str, &str, &str)]) -> Gateway {
    spawn_gateway(config_from_toml(&gateway_toml(upstreams))).await
}

async fn chat(
    gw: &Gateway,
    session: Option<&str>,
    model: &str,
    text: &str,
    stream: bool,
) -> reqwest::Response {
    let mut request = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": text}]}));
    if let Some(id) = session {
        request = request.header("x-session-id", id);
    }
    request.send().await.unwrap()
}

/// The session's messages as GET /v1/sessions/{id} shows them, without timestamps.
async fn stored_messages(gw: &Gateway, id: &str) -> Vec<Value> {
    let messages = common::sessions::messages(gw, KEY_A, id).await;
    for m in &messages {
        assert!(m["created_at"].is_i64(), "{m}");
    }
    without_timestamps(&messages)
}

/// (message rows, the session row's message_count) straight from the SQLite file.
async fn rows_in_database(data_dir: &Path, id: &str) -> (i64, i64) {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", data_dir.join("sessions.db").display());
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM messages WHERE session_id = $1) AS n, message_count \
         FROM sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let counts = (
        row.try_get::<i64, _>("n").unwrap(),
        row.try_get::<i64, _>("message_count").unwrap(),
    );
    pool.close().await;
    counts
}

/// Checks a relayed stream that was cut: both events arrive unchanged, then the
/// `upstream_truncated` error event, and no `[DONE]`.
fn assert_truncated(text: &str) {
    assert!(!text.contains("[DONE]"), "{text}");
    let payloads = data_payloads(text);
    assert_eq!(payloads.len(), 3, "{text}");
    assert_eq!(payloads[0], EVENT_1);
    assert_eq!(payloads[1], EVENT_2);
    let error: Value = serde_json::from_str(&payloads[2]).unwrap();
    assert_openai_error(&error, "upstream_error", "upstream_truncated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_stream_in_a_session_stores_nothing() {
    let cut = raw_upstream(cut_stream()).await;
    let good = raw_upstream(complete_stream()).await;
    let gw = gateway(&[
        ("cut", &cut.base_url, "[\"cut\"]", ""),
        ("good", &good.base_url, "[\"good\"]", ""),
    ])
    .await;
    let id = common::sessions::create(&gw, KEY_A, json!({})).await;

    let response = chat(&gw, Some(&id), "cut", "lost turn", true).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-session-id"], id.as_str());
    assert_truncated(&response.text().await.unwrap());
    assert_eq!(cut.requests(), 1);
    assert!(stored_messages(&gw, &id).await.is_empty());
    assert_eq!(
        rows_in_database(&gw.state.config.data_dir, &id).await,
        (0, 0)
    );

    // The session is still usable (the truncated turn released it), and the next turn
    // neither sees nor stores the lost one.
    let response = chat(&gw, Some(&id), "good", "next turn", true).await;
    assert_eq!(response.status(), 200);
    let payloads = data_payloads(&response.text().await.unwrap());
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    assert_eq!(good.requests(), 1);
    assert_eq!(
        good.bodies.lock().unwrap()[0]["messages"],
        json!([{"role": "user", "content": "next turn"}])
    );
    assert_eq!(
        stored_messages(&gw, &id).await,
        [
            json!({"role": "user", "content": "next turn"}),
            json!({"role": "assistant", "content": "Hello, world"}),
        ]
    );
    assert_eq!(
        rows_in_database(&gw.state.config.data_dir, &id).await,
        (2, 2)
    );
    assert_eq!(cut.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_stream_without_a_session_ends_with_an_error_event() {
    let cut = raw_upstream(cut_stream()).await;
    let gw = gateway(&[("cut", &cut.base_url, "[\"*\"]", "")]).await;
    let response = chat(&gw, None, "any-model", "hello", true).await;
    assert_event_stream(&response);
    assert!(response.headers().get("x-session-id").is_none());
    assert_truncated(&response.text().await.unwrap());
    assert_eq!(cut.requests(), 1);
    assert_eq!(cut.bodies.lock().unwrap()[0]["stream"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eof_upstream_ends_streams_at_the_close_and_stores_the_turn() {
    let cut = raw_upstream(cut_stream()).await;
    let gw = gateway(&[("eof", &cut.base_url, "[\"*\"]", "stream_end = \"eof\"")]).await;
    let id = common::sessions::create(&gw, KEY_A, json!({})).await;

    let response = chat(&gw, Some(&id), "m", "hi", true).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("error"), "{text}");
    assert_eq!(data_payloads(&text), [EVENT_1, EVENT_2]);
    assert_eq!(cut.requests(), 1);
    assert_eq!(
        stored_messages(&gw, &id).await,
        [
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "Hello, world"}),
        ]
    );
    assert_eq!(
        rows_in_database(&gw.state.config.data_dir, &id).await,
        (2, 2)
    );

    // Without a session the stream ends cleanly too.
    let response = chat(&gw, None, "m", "hi", true).await;
    let text = response.text().await.unwrap();
    assert_eq!(data_payloads(&text), [EVENT_1, EVENT_2]);
    assert_eq!(cut.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ending_with_done_is_stored() {
    let good = raw_upstream(complete_stream()).await;
    let gw = gateway(&[("good", &good.base_url, "[\"*\"]", "")]).await;
    let id = common::sessions::create(&gw, KEY_A, json!({})).await;

    let response = chat(&gw, Some(&id), "m", "hi", true).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("error"), "{text}");
    assert_eq!(data_payloads(&text), [EVENT_1, EVENT_2, "[DONE]"]);
    assert_eq!(good.requests(), 1);
    assert_eq!(
        stored_messages(&gw, &id).await,
        [
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "Hello, world"}),
        ]
    );
    assert_eq!(
        rows_in_database(&gw.state.config.data_dir, &id).await,
        (2, 2)
    );
}

/// Sends a non-streaming turn with and without a session; both must be a 502 with an
/// OpenAI error, and the session must hold nothing.
async fn assert_bad_answer_is_502(upstream: &RawUpstream, gw: &Gateway) {
    let response = chat(gw, None, "m", "plain", false).await;
    assert_eq!(response.status(), 502);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_openai_error(
        &response.json().await.unwrap(),
        "upstream_error",
        "upstream_error",
    );
    assert_eq!(upstream.requests(), 1);

    let id = common::sessions::create(gw, KEY_A, json!({})).await;
    let response = chat(gw, Some(&id), "m", "lost turn", false).await;
    assert_eq!(response.status(), 502);
    assert_openai_error(
        &response.json().await.unwrap(),
        "upstream_error",
        "upstream_error",
    );
    assert_eq!(upstream.requests(), 2);
    assert!(stored_messages(gw, &id).await.is_empty());
    assert_eq!(
        rows_in_database(&gw.state.config.data_dir, &id).await,
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_cut_short_of_its_content_length_is_a_502() {
    let full = br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"a complete reply"},"finish_reason":"stop"}]}"#;
    assert!(full.len() > 100);
    let upstream = raw_upstream(json_response(100, &full[..40])).await;
    let gw = gateway(&[("short", &upstream.base_url, "[\"*\"]", "")]).await;
    assert_bad_answer_is_502(&upstream, &gw).await;
}

/// The 40 bytes that did arrive happen to be a whole reply: only the Content-Length
/// shows that the body was cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_short_of_its_content_length_is_a_502_even_when_it_parses() {
    let arrived = format!("{:<40}", r#"{"choices":[{"message":{}}]}"#);
    assert_eq!(arrived.len(), 40);
    assert!(serde_json::from_str::<Value>(&arrived).is_ok());
    let upstream = raw_upstream(json_response(100, arrived.as_bytes())).await;
    let gw = gateway(&[("short", &upstream.base_url, "[\"*\"]", "")]).await;
    assert_bad_answer_is_502(&upstream, &gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_body_that_is_not_json_is_a_502() {
    let body = br#"{"choices":["#;
    let upstream = raw_upstream(json_response(body.len(), body)).await;
    let gw = gateway(&[("mangled", &upstream.base_url, "[\"*\"]", "")]).await;
    assert_bad_answer_is_502(&upstream, &gw).await;
}
