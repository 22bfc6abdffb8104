//! Another key's session is not found, busy or not: its id never says whether a turn on
//! it is running (SQLite's in-memory leases check the owner before waiting).
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use common::{client, config_from_toml, mock_upstream, spawn_gateway, two_keys_toml, KEY_A, KEY_B};
use serde_json::json;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_keys_busy_session_is_not_found_at_once() {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (seen, go) = (arrived.clone(), release.clone());
    // Holds the first turn (and so its lease) until the test lets it go.
    let router = Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let (seen, go) = (seen.clone(), go.clone());
            async move {
                seen.notify_one();
                go.notified().await;
                axum::Json(json!({"choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "done"}}]}))
            }
        }),
    );
    let url = mock_upstream(router).await;
    let config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"held\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n",
        two_keys_toml()
    ));
    let gw = spawn_gateway(config).await;
    let session = common::sessions::create(&gw, KEY_A, json!({})).await;
    let turn = |key: &'static str| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-session-id", &session)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let first = tokio::spawn(turn(KEY_A));
    arrived.notified().await;
    // A's turn holds the lease now. B asks for A's session: 404, without waiting for the
    // 10 s busy timeout (which would also tell B the session exists).
    let started = Instant::now();
    let foreign = turn(KEY_B).await.unwrap();
    assert_eq!(foreign.status(), 404);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    release.notify_one();
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
}
