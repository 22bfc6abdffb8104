//! Sessions across processes: SIGKILL mid-flight loses no acknowledged turn; two instances share PostgreSQL.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use common::sessions::{contents, create, turn};
use common::upstream::{chat_reply, Seen};
use common::{binary, mock_upstream, start, KEY_A};
use serde_json::{json, Value};

/// The shared mock chat upstream, each answer 5 ms late (so turns overlap the kill).
async fn echo_upstream() -> String {
    mock_upstream(Router::new().route(
        "/v1/chat/completions",
        post(|body: Bytes| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            chat_reply(Seen::default(), body).await
        }),
    ))
    .await
}

fn gateway(
    upstream: &str,
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) -> common::Process {
    let mut command = binary();
    command
        .args(["--port", "0", "--upstream", upstream])
        .env("API_SERVER_KEY", KEY_A)
        .env("GATEWAYD_DATA_DIR", data_dir);
    if let Some(url) = database_url {
        command.env("GATEWAYD_DATABASE_URL", url);
    }
    start(command)
}

/// One plain turn of session `id`; an error when the process is gone.
async fn say(base: &str, id: &str, text: &str) -> Result<reqwest::Response, reqwest::Error> {
    turn(base, KEY_A, id, "m", text, false).send().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_turn() {
    let upstream = echo_upstream().await;
    let data_dir = common::temp_dir("crash");
    let mut process = gateway(&upstream, &data_dir, None);
    let base = process.url("");
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(create(&process, KEY_A, json!({})).await);
    }
    let acknowledged = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut workers = Vec::new();
    for (w, id) in sessions.iter().enumerate() {
        let (base, id, acknowledged) = (base.clone(), id.clone(), acknowledged.clone());
        workers.push(tokio::spawn(async move {
            for turn in 0.. {
                let text = format!("w{w}-t{turn}");
                match say(&base, &id, &text).await {
                    Ok(r) if r.status() == 200 => {
                        if r.json::<Value>().await.is_ok() {
                            acknowledged.lock().unwrap().insert((id.clone(), text));
                        }
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    process.child.kill().unwrap(); // SIGKILL
    process.child.wait().unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 10,
        "too few turns to be meaningful: {}",
        acknowledged.len()
    );

    let restarted = gateway(&upstream, &data_dir, None);
    let base = restarted.url("");
    for id in &sessions {
        let stored = contents(&base, KEY_A, id).await;
        assert_eq!(stored.len() % 2, 0, "a half-written turn survived");
        for pair in stored.chunks(2) {
            assert_eq!(pair[1], format!("echo: {}", pair[0]));
        }
        for (_, text) in acknowledged.iter().filter(|(s, _)| s == id) {
            assert!(stored.contains(text), "acknowledged turn {text} was lost");
        }
    }
    // The database still takes writes after the crash.
    assert_eq!(
        say(&base, &sessions[0], "after").await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_postgres_sessions() {
    let Ok(url) = std::env::var("GATEWAYD_TEST_POSTGRES_URL") else {
        eprintln!("GATEWAYD_TEST_POSTGRES_URL not set: two-instance test not run");
        return;
    };
    let upstream = echo_upstream().await;
    let first = gateway(&upstream, &common::temp_dir("pg1"), Some(&url));
    let second = gateway(&upstream, &common::temp_dir("pg2"), Some(&url));
    let id = create(&first, KEY_A, json!({})).await;
    assert_eq!(
        say(&first.url(""), &id, "on first").await.unwrap().status(),
        200
    );
    let response = say(&second.url(""), &id, "on second").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        contents(&first.url(""), KEY_A, &id).await,
        vec!["on first", "echo: on first", "on second", "echo: on second"]
    );
}
