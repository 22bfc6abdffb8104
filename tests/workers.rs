//! `[server] workers = 2` through the binary: chat on both workers, socket activation,
//! the guard, SIGTERM drain and SIGHUP reload.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use common::{binary, client, mock_upstream, scrape_metrics, start, KEY_A, KEY_B};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// A config file with `[server] workers = 2` (and `extra` after it, in `[server]`).
fn workers_config(tag: &str, extra: &str) -> PathBuf {
    let dir = common::temp_dir(tag);
    let path = dir.join("gatewayd.toml");
    std::fs::write(&path, format!("[server]\nworkers = 2\n{extra}")).unwrap();
    path
}

fn signal(process: &common::Process, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Connections each worker accepted, from the metrics.
fn accepted_by_worker(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with("gatewayd_worker_connections_total{"))
        .map(|l| {
            let worker = l.split("worker=\"").nth(1).unwrap();
            let worker = worker[..worker.find('"').unwrap()].to_string();
            (worker, l.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect()
}

async fn echo_upstream() -> String {
    mock_upstream(Router::new().route(
        "/v1/chat/completions",
        post(|body: Bytes| async move {
            let request: Value = serde_json::from_slice(&body).unwrap();
            let said = request["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_string();
            axum::Json(json!({
                "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": format!("heard {said}")}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
            }))
        }),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_served_and_connections_land_on_both_workers() {
    let upstream = echo_upstream().await;
    let config = workers_config("workers-chat", "");
    let mut command = binary();
    command
        .args(["--port", "0", "--upstream", &upstream, "--config"])
        .arg(&config)
        .env("API_SERVER_KEY", KEY_A);
    let process = start(command);
    assert!(
        process.stderr().contains("workers=2"),
        "{}",
        process.stderr()
    );
    // Each request on a new connection: the kernel spreads them over the two sockets by
    // their source ports, so 40 all landing on one worker has odds of 2^-39.
    for i in 0..40 {
        let fresh = client();
        let response = fresh
            .post(process.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .json(
                &json!({"model": "m", "messages": [{"role": "user", "content": format!("n{i}")}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("heard n{i}")
        );
    }
    let unauthorized = client()
        .post(process.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401, "auth holds on every worker");
    let metrics = scrape_metrics(process.url("/metrics"), KEY_A).await;
    let counts = accepted_by_worker(&metrics);
    let of = |worker: &str| {
        counts
            .iter()
            .find(|(w, _)| w == worker)
            .map_or(0.0, |(_, n)| *n)
    };
    assert!(of("0") >= 1.0 && of("1") >= 1.0, "{counts:?}");
    assert!(of("0") + of("1") >= 41.0, "{counts:?}");
}

/// gatewayd under tests/support/activate.py, which passes it one socket as fd 3.
fn activated(socket: &[&str], env: &[(&str, &str)], args: &[&str]) -> Command {
    let command = binary();
    let program = command.get_program().to_owned();
    let mut wrapped = Command::new("python3");
    wrapped.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/activate.py"
    ));
    wrapped.args(socket).arg("--").arg(program).args(args);
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    for (key, value) in env {
        wrapped.env(key, value);
    }
    wrapped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inherited_socket_is_shared_by_the_workers() {
    let config = workers_config("workers-activated", "");
    let config = config.to_str().unwrap();
    let process = start(activated(
        &["tcp", "127.0.0.1", "0"],
        &[("API_SERVER_KEY", KEY_A)],
        &["--config", config],
    ));
    assert!(
        process.stderr().contains("workers=2"),
        "{}",
        process.stderr()
    );
    for _ in 0..20 {
        let response = client()
            .post(process.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let metrics = scrape_metrics(process.url("/metrics"), KEY_A).await;
    let total: f64 = accepted_by_worker(&metrics).iter().map(|(_, n)| n).sum();
    assert!(total >= 21.0, "{metrics}");

    // A wildcard socket without a key is refused before anything is served.
    let output = activated(&["tcp", "0.0.0.0", "0"], &[], &["--config", config])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_guard_refuses_a_network_address_without_a_key() {
    let config = workers_config("workers-guard", "");
    let output = common::output_within(
        {
            let mut command = binary();
            command
                .args(["--host", "0.0.0.0", "--port", "0", "--config"])
                .arg(&config);
            command
        },
        Duration::from_secs(60),
    );
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("0.0.0.0"), "{stderr}");
    assert!(!stderr.contains("gatewayd listening"), "{stderr}");
}

async fn slow_stream_upstream() -> String {
    mock_upstream(Router::new().route(
        "/v1/chat/completions",
        post(|_: Bytes| async {
            let events = futures_util::stream::iter(0..6).then(|i| async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let event = if i == 5 {
                    "data: [DONE]\n\n".to_string()
                } else {
                    format!(
                        "data: {}\n\n",
                        json!({"choices": [{"index": 0, "delta": {"content": format!("w{i} ")}}]})
                    )
                };
                Ok::<_, std::io::Error>(Bytes::from(event))
            });
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(events),
            )
                .into_response()
        }),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_long_stream_finish_then_exits_zero() {
    let upstream = slow_stream_upstream().await;
    let config = workers_config("workers-drain", "");
    let mut command = binary();
    command
        .args(["--port", "0", "--upstream", &upstream, "--config"])
        .arg(&config)
        .env("API_SERVER_KEY", KEY_A);
    let mut process = start(command);
    let response = client()
        .post(process.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    signal(&process, "TERM");
    let text = response.text().await.expect("the stream was cut");
    assert!(
        text.contains("w4 ") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    let status = tokio::task::spawn_blocking(move || process.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_keys_on_every_worker() {
    let dir = common::temp_dir("workers-hup");
    let key_file = dir.join("key");
    std::fs::write(&key_file, format!("{KEY_A}\n")).unwrap();
    let config = workers_config("workers-hup-config", "");
    let mut command = binary();
    command
        .args(["--port", "0", "--config"])
        .arg(&config)
        .env("API_SERVER_KEY_FILE", &key_file);
    let process = start(command);
    // A new connection each time, so both workers answer over the test.
    let status_with = |key: &'static str| {
        let url = process.url("/v1/models");
        async move {
            client()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status_with(KEY_A).await, 200);
    assert_eq!(status_with(KEY_B).await, 401);

    std::fs::write(&key_file, format!("{KEY_B}\n")).unwrap();
    signal(&process, "HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_with(KEY_B).await != 200 {
        assert!(Instant::now() < deadline, "the new key never worked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every later connection, whichever worker takes it, has the new keys.
    for _ in 0..20 {
        assert_eq!(status_with(KEY_B).await, 200);
        assert_eq!(status_with(KEY_A).await, 401);
    }
}

#[test]
fn a_second_process_on_the_same_port_is_refused() {
    let config = workers_config("workers-in-use", "");
    let mut command = binary();
    command.args(["--port", "0", "--config"]).arg(&config);
    let first = start(command);
    let port = first.addr.port().to_string();
    let mut second = binary();
    second.args(["--port", &port, "--config"]).arg(&config);
    let output = common::output_within(second, Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already in use"), "{stderr}");
}
