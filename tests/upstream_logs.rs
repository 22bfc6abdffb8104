//! Logs an operator can act on: a failed upstream connection names the upstream, its
//! host:port and the OS error (never its key), and "trying the next one" appears only
//! when there is a next one. Drives the real binary and reads its stderr.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use common::{binary, client, mock_upstream, refused_upstream, start, temp_dir};
use serde_json::json;

const UPSTREAM_KEY: &str = "sk-upstream-logs-0123456789abcdef";

fn upstream_toml(name: &str, url: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"{name}\"\nbase_url = \"{url}\"\napi_key_env = \"LOGS_UPSTREAM_KEY\"\nmodels = [\"*\"]\n"
    )
}

fn start_with(toml: &str) -> common::Process {
    let dir = temp_dir("logs");
    let path = dir.join("gatewayd.toml");
    std::fs::write(&path, toml).unwrap();
    let mut command = binary();
    command
        .args(["--port", "0", "--config"])
        .arg(&path)
        .env("LOGS_UPSTREAM_KEY", UPSTREAM_KEY);
    start(command)
}

/// Waits until stderr has a line containing `needle` (the log is written before the
/// response, but read by another thread).
fn wait_for_line(process: &common::Process, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = process.stderr();
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn post_chat(process: &common::Process) -> reqwest::Response {
    client()
        .post(process.url("/v1/chat/completions"))
        .header("host", "localhost")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn connect_failure_names_host_port_and_os_error() {
    let down = refused_upstream().await;
    let port = down
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/v1")
        .to_string();
    let process = start_with(&upstream_toml("down", &down));
    let response = post_chat(&process).await;
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(
        !body.contains(&port),
        "the client must not learn the upstream address: {body}"
    );
    let line = wait_for_line(&process, "could not connect to upstream down");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(line.to_lowercase().contains("connection refused"), "{line}");
    assert!(!line.contains("trying the next one"), "{line}");
    assert!(!process.stderr().contains(UPSTREAM_KEY));
}

#[tokio::test]
async fn trying_the_next_one_only_when_there_is_one() {
    let down = refused_upstream().await;
    let up = mock_upstream(Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            axum::Json(json!({"id": "c1", "object": "chat.completion", "choices": []}))
        }),
    ))
    .await;
    let toml = format!(
        "{}{}",
        upstream_toml("down", &down),
        upstream_toml("up", &up)
    );
    let process = start_with(&toml);
    let response = post_chat(&process).await;
    assert_eq!(response.status(), 200);
    let line = wait_for_line(&process, "could not connect to upstream down");
    assert!(line.contains("trying the next one"), "{line}");
}
