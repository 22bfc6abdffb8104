//! Operations, with the test acting as systemd: sd_notify, socket activation, SIGTERM drain, SIGHUP reload, metrics, JSON logs.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::Command;
use std::time::Duration;

use axum::body::Bytes;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use common::{binary, client, mock_upstream, scrape_metrics, start, KEY_A, KEY_B};
use futures_util::StreamExt;
use serde_json::{json, Value};

fn signal(process: &common::Process, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// gatewayd under tests/support/activate.py, which passes it one socket as fd 3.
fn activated(socket: &[&str], env: &[(&str, &str)]) -> Command {
    let command = binary();
    let program = command.get_program().to_owned();
    let mut wrapped = Command::new("python3");
    wrapped.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/activate.py"
    ));
    wrapped.args(socket).arg("--").arg(program);
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

fn raw_http(stream: &mut impl ReadWrite, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn ready_is_notified_after_the_listener_is_up_and_never_on_refusal() {
    let dir = common::temp_dir("notify");
    let path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let mut command = binary();
    command.args(["--port", "0"]).env("NOTIFY_SOCKET", &path);
    let process = start(command);
    let mut buffer = [0u8; 256];
    let n = notify.recv(&mut buffer).unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).contains("READY=1"));
    // By the time READY=1 arrived, the listener accepts connections.
    let mut stream = std::net::TcpStream::connect(process.addr).unwrap();
    let response = raw_http(
        &mut stream,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    signal(&process, "TERM");
    let n = notify.recv(&mut buffer).unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).contains("STOPPING=1"));

    let output = binary()
        .args(["--host", "0.0.0.0", "--port", "0"])
        .env("NOTIFY_SOCKET", &path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    notify.set_nonblocking(true).unwrap();
    assert!(
        notify.recv(&mut buffer).is_err(),
        "a refused start sent a notification"
    );
}

#[test]
fn an_inherited_wildcard_socket_needs_a_key() {
    let output = activated(&["tcp", "0.0.0.0", "0"], &[]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("0.0.0.0"));
    let output = activated(&["tcp", "::", "0"], &[]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(78),
        "a dual-stack :: socket is network-reachable"
    );

    let process = start(activated(
        &["tcp", "0.0.0.0", "0"],
        &[("API_SERVER_KEY", KEY_A)],
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let response = client()
            .get(process.url("/v1/models"))
            .bearer_auth(KEY_A)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let response = client()
            .get(process.url("/v1/models"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    });
}

#[test]
fn a_unix_socket_is_served() {
    let dir = common::temp_dir("unix");
    let path = dir.join("gatewayd.sock");
    let path_str = path.to_str().unwrap();
    let mut command = activated(&["unix", path_str], &[]);
    command.stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stream = None;
    for _ in 0..200 {
        if let Ok(s) = UnixStream::connect(&path) {
            stream = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stream = stream.expect("gatewayd did not serve the unix socket");
    let body = r#"{"model":"echo","messages":[{"role":"user","content":"over unix"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = raw_http(&mut stream, &request);
    let _ = child.kill();
    let _ = child.wait();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("over unix"));
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
    let mut command = binary();
    command
        .args(["--port", "0", "--upstream", &upstream])
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
async fn sighup_swaps_keys_on_the_running_process() {
    let dir = common::temp_dir("hup");
    let key_file = dir.join("key");
    std::fs::write(&key_file, format!("{KEY_A}\n")).unwrap();
    let mut command = binary();
    command
        .args(["--port", "0"])
        .env("API_SERVER_KEY_FILE", &key_file);
    let process = start(command);
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

    // An open keep-alive connection survives the reload.
    let keep = client();
    assert_eq!(
        keep.get(process.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    std::fs::write(&key_file, format!("{KEY_B}\n")).unwrap();
    signal(&process, "HUP");
    let mut swapped = false;
    for _ in 0..100 {
        if status_with(KEY_B).await == 200 {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(swapped, "the new key never worked");
    assert_eq!(status_with(KEY_A).await, 401);
    assert_eq!(
        keep.get(process.url("/v1/models"))
            .bearer_auth(KEY_B)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // An invalid new key set is rejected and logged; the old one stays in force.
    std::fs::write(&key_file, "changeme\n").unwrap();
    signal(&process, "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_with(KEY_B).await, 200);
    let log = process.stderr();
    assert!(log.contains("key reload rejected"), "{log}");
    assert!(!log.contains("changeme"));
}

#[tokio::test]
async fn metrics_count_requests_and_report_overhead() {
    let gw = common::spawn_gateway(common::config_from_toml(&common::two_keys_toml())).await;
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "count me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let denied = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(denied.status(), 401, "metrics need a key");
    let text = scrape_metrics(gw.url("/metrics"), KEY_A).await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("gatewayd_requests_total")
                && l.contains("route=\"/v1/chat/completions\"")
                && l.contains("status=\"200\"")
                && l.contains("model=\"echo\"")
        })
        .unwrap_or_else(|| panic!("no request counter in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0);
    assert!(
        text.contains("gatewayd_gateway_overhead_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("gatewayd_upstream_latency_seconds_count"),
        "{text}"
    );
    assert!(text.contains("gatewayd_sessions_stored"), "{text}");
    // The 401 above was counted as an authentication failure.
    assert!(
        text.lines()
            .any(|l| l.starts_with("gatewayd_auth_failures_total ")),
        "{text}"
    );
}

/// The request span's fields are formatted only when a line is written inside it; the
/// line reads as if they had been formatted when the request came in.
#[tokio::test]
async fn text_lines_inside_a_request_carry_its_span_fields() {
    let mut command = binary();
    command.args(["--port", "0"]).env("RUST_LOG", "debug");
    let process = start(command);
    let response = client()
        .post(process.url("/v1/chat/completions?x=1"))
        .header("x-request-id", "req-span-7")
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let expected =
        "request{request_id=req-span-7 client=127.0.0.1 method=POST path=/v1/chat/completions}";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = process.stderr();
        if log.contains("finished processing request") && log.contains("req-span-7") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no line for the request:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let line = log
        .lines()
        .find(|l| l.contains("finished processing request"))
        .unwrap();
    assert!(line.contains(expected), "{line}");
    // Each field once: recorded when the first line was written, not again for the next.
    for line in log.lines().filter(|l| l.contains("req-span-7")) {
        assert_eq!(line.matches("request_id=").count(), 1, "{line}");
    }
}

#[tokio::test]
async fn json_logs_parse_and_carry_request_ids() {
    let mut command = binary();
    command
        .args(["--port", "0", "--log-format", "json"])
        .env("RUST_LOG", "debug");
    let process = start(command);
    let response = client()
        .post(process.url("/v1/chat/completions"))
        .header("x-request-id", "req-test-4242")
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "log me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-test-4242");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = process.stderr();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let request_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l.to_string().contains("/v1/chat/completions"))
        .collect();
    assert!(
        !request_lines.is_empty(),
        "no log line for the request:\n{log}"
    );
    for line in request_lines {
        assert_eq!(line["span"]["request_id"], "req-test-4242", "{line}");
    }
    assert!(!log.contains("log me"), "prompt logged");
}
