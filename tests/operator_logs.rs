//! What an operator sees of failed authentications and of each request: the failed-auth
//! summary and throttle lines at `info`, the throttle's own 429, and the access log
//! (`[telemetry] access_log`) on standard output or in a file. Drives the real binary.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::upstream::chat_upstream;
use common::{binary, client, parse_listening, temp_dir, KEY_A};
use serde_json::{json, Value};

const WRONG_KEY: &str = "gwd_WrongWrongWrongWrongWrongWrong00";

type Lines = Arc<Mutex<Vec<String>>>;

/// The binary with both of its outputs read line by line.
struct Running {
    child: Child,
    port: u16,
    stderr: Lines,
    stdout: Lines,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn collect(reader: impl std::io::Read + Send + 'static, into: Lines) {
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
        {
            into.lock().unwrap().push(line);
        }
    });
}

fn run(mut command: Command) -> Running {
    command.stderr(Stdio::piped()).stdout(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let (stderr, stdout) = (Lines::default(), Lines::default());
    collect(child.stderr.take().unwrap(), stderr.clone());
    collect(child.stdout.take().unwrap(), stdout.clone());
    let line = wait_for(&stderr, "gatewayd listening", Duration::from_secs(60));
    Running {
        child,
        port: parse_listening(&line).port(),
        stderr,
        stdout,
    }
}

/// The first line containing `needle`, waiting up to `limit` for it.
fn wait_for(lines: &Lines, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(line) = lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} in:\n{}",
            lines.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_with(toml: &str) -> Running {
    let dir = temp_dir("oplogs");
    let path = dir.join("gatewayd.toml");
    std::fs::write(&path, format!("{}\n{toml}", common::two_keys_toml())).unwrap();
    let mut command = binary();
    command.args(["--port", "0", "--config"]).arg(&path);
    run(command)
}

#[tokio::test]
async fn failed_auths_are_summarised_once_and_the_throttle_names_itself() {
    // Four a minute: one failure's quota comes back every 15 s, so a slow box sending the
    // five requests (or the right key after them) cannot see the throttle refill.
    let gw = start_with("[limits]\nfailed_auth_per_minute = 4");
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = http
            .get(gw.url("/v1/models"))
            .bearer_auth(WRONG_KEY)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert!(statuses[..4].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[4], 429, "the 5th failure starts the throttle");

    // The right key, from the same address, is refused too, and told why and until when.
    let response = http
        .get(gw.url("/v1/models"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = response.json().await.unwrap();
    common::assert_openai_error(&body, "rate_limit_error", "failed_auth_throttled");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Too many failed authentications from this address (127.0.0.1)"),
        "{message}"
    );
    assert!(
        message.contains("refused, whatever key it sends, until 20"),
        "{message}"
    );
    assert!(
        message.contains(&format!("retry after {retry_after} s")),
        "{message}"
    );
    assert!(!message.contains(KEY_A) && !message.contains(WRONG_KEY));

    let started = wait_for(
        &gw.stderr,
        "failed-auth throttle started for 127.0.0.1",
        Duration::from_secs(10),
    );
    assert!(started.contains("INFO"), "{started}");
    // The sweep logs the end within a second of it.
    wait_for(
        &gw.stderr,
        "failed-auth throttle ended for 127.0.0.1",
        Duration::from_secs(retry_after + 30),
    );
    let log = gw.stderr.lock().unwrap().clone();
    let summaries: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("failed authentications from 127.0.0.1 in the last minute"))
        .collect();
    assert_eq!(
        summaries.len(),
        1,
        "one summary, not one line per failure:\n{}",
        log.join("\n")
    );
    let summary = summaries[0];
    assert!(summary.contains("INFO"), "{summary}");
    assert!(
        summary.contains("last minute: 5; action: throttled for "),
        "{summary}"
    );
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("throttle started"))
            .count(),
        1,
        "{}",
        log.join("\n")
    );
    assert!(log
        .iter()
        .all(|l| !l.contains(WRONG_KEY) && !l.contains(KEY_A)));
}

/// Sends the access-log traffic: a chat, a streamed chat and a request with a wrong key,
/// each with its own request id. Returns the ids.
async fn access_log_traffic(gw: &Running) -> [String; 3] {
    let http = client();
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "secret words"}]});
    let ids = ["req-plain-1", "req-stream-2", "req-denied-3"].map(String::from);
    let plain = http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-request-id", &ids[0])
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    plain.bytes().await.unwrap();
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let stream = http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-request-id", &ids[1])
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(String::from_utf8_lossy(&stream.bytes().await.unwrap()).contains("[DONE]"));
    let denied = http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(WRONG_KEY)
        .header("x-request-id", &ids[2])
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    ids
}

/// The access log line with request id `id`, waiting for it to be written.
fn line_for(lines: &Lines, id: &str) -> Value {
    let line = wait_for(
        lines,
        &format!("\"request_id\":\"{id}\""),
        Duration::from_secs(20),
    );
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn assert_access_lines(lines: &Lines, ids: &[String; 3], upstream_url: &str) {
    let plain = line_for(lines, &ids[0]);
    assert_eq!(plain["method"], "POST");
    assert_eq!(plain["route"], "/v1/chat/completions");
    assert_eq!(plain["status"], 200);
    assert_eq!(plain["key"], "alice");
    assert_eq!(plain["model"], "m");
    assert_eq!(plain["upstream"], "mock");
    assert_eq!(plain["input_tokens"], 4);
    assert_eq!(plain["output_tokens"], 2);
    assert_eq!(plain["complete"], true);
    assert!(plain["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(plain["ttfb_ms"].as_f64().unwrap() <= plain["duration_ms"].as_f64().unwrap());
    assert!(plain["time"].as_str().unwrap().ends_with('Z'));

    let stream = line_for(lines, &ids[1]);
    assert_eq!(stream["route"], "/v1/chat/completions");
    assert_eq!(stream["status"], 200);
    assert_eq!(stream["key"], "alice");
    assert_eq!(stream["upstream"], "mock");
    assert_eq!(stream["complete"], true);
    assert!(stream["ttfb_ms"].as_f64().unwrap() <= stream["duration_ms"].as_f64().unwrap());

    let denied = line_for(lines, &ids[2]);
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["route"], "/v1/chat/completions");
    assert_eq!(denied["key"], Value::Null);
    assert_eq!(denied["model"], Value::Null);
    assert_eq!(denied["upstream"], Value::Null);

    let all = lines.lock().unwrap().join("\n");
    for secret in [KEY_A, WRONG_KEY, "secret words", "echo:", upstream_url] {
        assert!(
            !all.contains(secret),
            "{secret:?} in the access log:\n{all}"
        );
    }
}

fn mock_toml(url: &str) -> String {
    format!("[[upstreams]]\nname = \"mock\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n")
}

#[tokio::test]
async fn the_access_log_writes_one_json_line_per_request_to_standard_output() {
    let (url, _) = chat_upstream().await;
    let gw = start_with(&format!(
        "{}\n[telemetry]\naccess_log = true\n",
        mock_toml(&url)
    ));
    let ids = access_log_traffic(&gw).await;
    assert_access_lines(&gw.stdout, &ids, &url);

    // A streamed session turn: gatewayd reads the stream, so its tokens are known.
    let http = client();
    let session: Value = http
        .post(gw.url("/v1/sessions"))
        .bearer_auth(KEY_A)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let turn = http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-session-id", session["id"].as_str().unwrap())
        .header("x-request-id", "req-session-4")
        .json(&json!({"model": "m", "stream": true,
            "messages": [{"role": "user", "content": "secret words"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(turn.status(), 200);
    turn.bytes().await.unwrap();
    let line = line_for(&gw.stdout, "req-session-4");
    assert_eq!(line["status"], 200);
    assert_eq!(line["key"], "alice");
    assert_eq!(
        (&line["input_tokens"], &line["output_tokens"]),
        (&json!(4), &json!(2))
    );
    assert_eq!(line["complete"], true);

    // Standard output holds the access log and nothing else.
    for line in gw.stdout.lock().unwrap().iter() {
        serde_json::from_str::<Value>(line).unwrap();
    }
}

fn file_lines(path: &Path) -> Lines {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Arc::new(Mutex::new(text.lines().map(String::from).collect()))
}

#[tokio::test]
async fn the_access_log_goes_to_access_log_file_when_set() {
    let (url, _) = chat_upstream().await;
    let path = temp_dir("oplogs-file").join("access.log");
    let gw = start_with(&format!(
        "{}\n[telemetry]\naccess_log = true\naccess_log_file = \"{}\"\n",
        mock_toml(&url),
        path.display()
    ));
    let ids = access_log_traffic(&gw).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while file_lines(&path).lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the access log file has fewer than 3 lines"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_access_lines(&file_lines(&path), &ids, &url);
    assert!(
        gw.stdout.lock().unwrap().is_empty(),
        "nothing on standard output"
    );
}
