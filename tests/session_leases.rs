//! Continuations are serialised per session (one instance or several on PostgreSQL), wait at most `busy_timeout`, and never wait on another session.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use common::sessions::{contents, create, turn};
use common::upstream::{chat_reply, Seen};
use common::{config_from_toml, mock_upstream, open_store, spawn_gateway_with_store};
use common::{KEY_A, KEY_B};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

/// What the mock upstream saw, and the gate that holds back a "TURN-ONE" reply.
#[derive(Clone, Default)]
struct Upstream {
    seen: Seen,
    gate: Arc<Notify>,
    arrived: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>>,
}

/// The shared mock chat upstream (see `common::upstream::chat_reply`), except that each
/// request's last message is reported on `arrived`, and a last message "TURN-ONE" waits
/// for the test to open the gate.
async fn reply(upstream: Upstream, body: Bytes) -> axum::response::Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    let last = request["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    if let Some(arrived) = upstream.arrived.lock().unwrap().as_ref() {
        let _ = arrived.send(last.clone());
    }
    if last == "TURN-ONE" {
        upstream.gate.notified().await;
    }
    chat_reply(upstream.seen, body).await
}

async fn start_upstream(upstream: &Upstream) -> String {
    let u = upstream.clone();
    mock_upstream(Router::new().route(
        "/v1/chat/completions",
        post(move |b: Bytes| reply(u.clone(), b)),
    ))
    .await
}

fn config(upstream_url: &str, extra: &str) -> gatewayd::config::Config {
    let run = common::temp_dir("lease");
    let run = run.file_name().unwrap().to_str().unwrap();
    config_from_toml(&format!(
        "stream_keepalive_secs = 1\n{}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{upstream_url}\"\nmodels = [\"*\"]\n{extra}",
        common::named_keys_toml(&format!("a-{run}"), &format!("b-{run}"))
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_serialise_overlapping_continuations() {
    if std::env::var("GATEWAYD_TEST_POSTGRES_URL").is_err() {
        eprintln!("GATEWAYD_TEST_POSTGRES_URL not set: two-instance test not run");
        return;
    }
    let upstream = Upstream::default();
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    *upstream.arrived.lock().unwrap() = Some(arrived_tx);
    let url = start_upstream(&upstream).await;
    // Two instances: two gateways, each with its own connection pool, one database.
    let config_a = config(&url, "");
    let keys_toml_config = config_a.key_entries.clone();
    let store_a = open_store(&config_a, true).await;
    let mut config_b = config(&url, "");
    config_b.key_entries = keys_toml_config;
    let store_b = open_store(&config_b, true).await;
    let a = spawn_gateway_with_store(config_a, store_a).await;
    let b = spawn_gateway_with_store(config_b, store_b).await;
    let id = create(&a, KEY_A, json!({})).await;

    let first = tokio::spawn(turn(&a, KEY_A, &id, "m", "TURN-ONE", false).send());
    assert_eq!(arrived.recv().await.unwrap(), "TURN-ONE");
    let second = tokio::spawn(turn(&b, KEY_A, &id, "m", "TURN-TWO", false).send());
    // Give TURN-TWO time to reach instance B and wait there. (If it arrived later still,
    // it would still have to see TURN-ONE: this pause only makes the overlap real.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    upstream.gate.notify_one();
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(second.await.unwrap().unwrap().status(), 200);

    let seen = upstream.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "each turn reached the upstream once");
    let second_request: Vec<&str> = seen[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        second_request,
        ["TURN-ONE", "echo: TURN-ONE", "TURN-TWO"],
        "the second continuation must see the first turn"
    );
    assert_eq!(
        contents(&b, KEY_A, &id).await,
        ["TURN-ONE", "echo: TURN-ONE", "TURN-TWO", "echo: TURN-TWO"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_session_answers_409_after_busy_timeout() {
    let upstream = Upstream::default();
    let url = start_upstream(&upstream).await;
    let config = config(&url, "[sessions]\nbusy_timeout_secs = 1\n");
    let store = open_store(&config, false).await;
    let gw = spawn_gateway_with_store(config, store).await;
    let id = create(&gw, KEY_A, json!({})).await;

    // A streamed turn that never ends holds the session.
    let holder = turn(&gw, KEY_A, &id, "hangy", "slow", true)
        .send()
        .await
        .unwrap();
    assert_eq!(holder.status(), 200);
    let mut holder_body = holder.bytes_stream();
    let first = holder_body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("par"));

    let started = Instant::now();
    let busy = turn(&gw, KEY_A, &id, "m", "second", false)
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(busy.status(), 409);
    assert_eq!(busy.headers()["retry-after"], "1");
    let error: Value = busy.json().await.unwrap();
    assert_eq!(error["error"]["code"], "session_busy");
    assert!(error["error"]["message"].is_string());
    assert!(
        waited >= Duration::from_millis(900),
        "answered 409 before busy_timeout: {waited:?}"
    );

    // The holder leaves: its turn is abandoned, the session is free again. A client
    // that honours Retry-After gets through.
    drop(holder_body);
    let mut status = 0;
    for _ in 0..30 {
        let response = turn(&gw, KEY_A, &id, "m", "third", false)
            .send()
            .await
            .unwrap();
        status = response.status().as_u16();
        if status != 409 {
            break;
        }
    }
    assert_eq!(status, 200);
    assert_eq!(contents(&gw, KEY_A, &id).await, ["third", "echo: third"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_keys_stalled_streams_never_delay_a_continuation() {
    let upstream = Upstream::default();
    let url = start_upstream(&upstream).await;
    let config = config(&url, "");
    let store = open_store(&config, false).await;
    let gw = spawn_gateway_with_store(config, store).await;

    // Key B holds a stalled stream on each of 64 of its sessions and stops reading.
    let mut stalled = Vec::new();
    for _ in 0..64 {
        let id = create(&gw, KEY_B, json!({})).await;
        let response = turn(&gw, KEY_B, &id, "hangy", "hold", true)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        body.next().await.unwrap().unwrap();
        stalled.push(body);
    }

    // Key A continues 200 of its own sessions; each turn must be quick.
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(create(&gw, KEY_A, json!({})).await);
    }
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    for id in &ids {
        let started = Instant::now();
        let response = quick
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .header("x-session-id", id)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("continuation of {id} did not complete: {e}"));
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest of 200 continuations: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a continuation took {slowest:?}"
    );
    drop(stalled);
}
