//! Whole-config reload on the real binary, asked for with `gatewayd reload`: a new upstream takes new requests while a stream opened before finishes from the old one; a new rate limit, new CORS origins, a new body limit and a new log filter apply to new requests; a bad config is rejected whole, with the reason check-config gives; a new host is named as needing a restart while the rest applies; and `gatewayd reload` says so, or that no daemon runs.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::routing::post;
use axum::Router;
use common::{binary, client, mock_upstream, output_within, start, temp_dir, Process, KEY_A};
use serde_json::{json, Value};
use tokio::sync::watch;

/// A chat upstream that answers `from-NAME`. A streamed answer sends its first piece
/// (`NAME-1`) at once and the rest (`NAME-2`, then `[DONE]`) only once `release` is set.
struct Upstream {
    url: String,
    hits: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

impl Upstream {
    async fn start(name: &'static str) -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let counted = hits.clone();
        let router = Router::new().route(
            "/v1/chat/completions",
            post(move |body: Bytes| {
                counted.fetch_add(1, Ordering::SeqCst);
                reply(name, body, released.clone())
            }),
        );
        let url = mock_upstream(router).await;
        Upstream { url, hits, release }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn chunk(text: &str) -> Bytes {
    let event = json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    Bytes::from(format!("data: {event}\n\n"))
}

async fn reply(
    name: &'static str,
    body: Bytes,
    mut released: watch::Receiver<bool>,
) -> axum::response::Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    if request["stream"] != json!(true) {
        return axum::Json(json!({"id": "c", "object": "chat.completion", "created": 0,
            "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": format!("from-{name}")}}]}))
        .into_response();
    }
    let (send, receive) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    tokio::spawn(async move {
        let _ = send.send(Ok(chunk(&format!("{name}-1")))).await;
        let _ = released.wait_for(|&go| go).await;
        let _ = send.send(Ok(chunk(&format!("{name}-2")))).await;
        let _ = send.send(Ok(Bytes::from("data: [DONE]\n\n"))).await;
    });
    let stream = futures_util::stream::unfold(receive, |mut receive| async move {
        receive.recv().await.map(|piece| (piece, receive))
    });
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

use axum::response::IntoResponse;

/// A config file and a data dir, and the daemon started on them.
struct Daemon {
    config: PathBuf,
    data_dir: PathBuf,
    process: Process,
}

impl Daemon {
    fn start(tag: &str, toml: &str, key: bool) -> Daemon {
        let dir = temp_dir(tag);
        let config = dir.join("gatewayd.toml");
        let data_dir = dir.join("data");
        std::fs::write(&config, toml).unwrap();
        let mut command = binary();
        command
            .env("GATEWAYD_DATA_DIR", &data_dir)
            .args(["--port", "0", "--config"])
            .arg(&config);
        if key {
            command.env("API_SERVER_KEY", KEY_A);
        }
        let process = start(command);
        Daemon {
            config,
            data_dir,
            process,
        }
    }

    /// Rewrites the config file and runs `gatewayd reload` with the same config.
    fn reload_with(&self, toml: &str) -> Output {
        std::fs::write(&self.config, toml).unwrap();
        reload_command(&self.config, &self.data_dir)
    }
}

fn reload_command(config: &Path, data_dir: &Path) -> Output {
    let mut command = binary();
    command
        .env("GATEWAYD_DATA_DIR", data_dir)
        .arg("reload")
        .arg("--config")
        .arg(config);
    output_within(command, Duration::from_secs(60))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn upstream_toml(url: &str) -> String {
    format!("[[upstreams]]\nname = \"main\"\nbase_url = \"{url}\"\nmodels = [\"m\"]\n")
}

async fn chat(process: &Process, stream: bool) -> reqwest::Response {
    client()
        .post(process.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "m", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

/// Waits until stderr has a line containing `needle`.
fn wait_for_line(process: &Process, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !process.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in:\n{}",
            process.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_finishes_on_the_old_upstream_and_new_requests_reach_the_new_one() {
    let old = Upstream::start("old").await;
    let new = Upstream::start("new").await;
    let daemon = Daemon::start("reload-upstream", &upstream_toml(&old.url), true);

    let mut open = chat(&daemon.process, true).await;
    assert_eq!(open.status(), 200);
    let mut streamed = String::new();
    while !streamed.contains("old-1") {
        let piece = open.chunk().await.unwrap().expect("the stream ended early");
        streamed.push_str(&String::from_utf8_lossy(&piece));
    }

    let output = daemon.reload_with(&upstream_toml(&new.url));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let verdict = stdout(&output);
    assert!(
        verdict.contains("changed for new requests: upstreams"),
        "{verdict}"
    );

    let answer: Value = chat(&daemon.process, false).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "from-new");
    assert_eq!(new.hits(), 1);

    old.release.send(true).unwrap();
    while let Some(piece) = open.chunk().await.unwrap() {
        streamed.push_str(&String::from_utf8_lossy(&piece));
    }
    assert!(streamed.contains("old-2"), "{streamed}");
    assert!(streamed.trim_end().ends_with("data: [DONE]"), "{streamed}");
    assert_eq!(
        old.hits(),
        1,
        "only the open stream went to the old upstream"
    );
}

/// The CORS header a GET with `origin` gets back, if any.
async fn allowed_origin(process: &Process, origin: &str) -> Option<String> {
    let response = client()
        .get(process.url("/v1/models"))
        .bearer_auth(KEY_A)
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    let allowed = response.headers().get("access-control-allow-origin");
    allowed.map(|value| value.to_str().unwrap().to_string())
}

async fn models_status(process: &Process) -> u16 {
    let response = client()
        .get(process.url("/v1/models"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rate_limit_and_new_cors_origins_apply_to_new_requests() {
    let first = "[server]\ncors_origins = [\"https://old.example\"]\n";
    let daemon = Daemon::start("reload-limits", first, true);
    let process = &daemon.process;

    let unchanged = daemon.reload_with(first);
    assert_eq!(unchanged.status.code(), Some(0), "{}", stderr(&unchanged));
    assert!(
        stdout(&unchanged).contains("nothing changed"),
        "{}",
        stdout(&unchanged)
    );

    let old = "https://old.example";
    let new = "https://new.example";
    assert_eq!(allowed_origin(process, old).await.as_deref(), Some(old));
    assert_eq!(allowed_origin(process, new).await, None);
    for _ in 0..3 {
        assert_eq!(models_status(process).await, 200, "no rate limit yet");
    }

    let second = "[server]\ncors_origins = [\"https://new.example\"]\n\
                  [limits]\nper_key_requests_per_minute = 2\n";
    let output = daemon.reload_with(second);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let verdict = stdout(&output);
    assert!(
        verdict.contains("server.cors_origins, limits.per_key_requests_per_minute"),
        "{verdict}"
    );
    assert!(!verdict.contains("restart"), "{verdict}");

    assert_eq!(allowed_origin(process, new).await.as_deref(), Some(new));
    assert_eq!(allowed_origin(process, old).await, None);
    // Two requests above used the new minute's quota of two.
    let status = models_status(process).await;
    assert_eq!(status, 429, "the new rate limit is not applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_rejected_whole_and_the_log_and_the_verdict_say_why() {
    let up = Upstream::start("kept").await;
    let good = upstream_toml(&up.url);
    let daemon = Daemon::start("reload-bad", &good, true);
    let process = &daemon.process;

    // A rate limit that would apply, and an upstream that cannot: nothing applies.
    let bad = format!(
        "[limits]\nper_key_requests_per_minute = 1\n{good}\
         [[upstreams]]\nname = \"broken\"\nbase_url = \"ftp://example.com\"\nmodels = [\"x\"]\n"
    );
    let output = daemon.reload_with(&bad);
    let why = "upstream \"broken\": base_url must start with http:// or https://";
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let verdict = stderr(&output);
    assert!(verdict.contains("reload rejected"), "{verdict}");
    assert!(verdict.contains(why), "{verdict}");
    wait_for_line(process, "config reload rejected");
    let log = process.stderr();
    assert!(log.contains(why), "{log}");

    // check-config gives the same reason.
    let mut check = binary();
    check
        .arg("check-config")
        .arg("--config")
        .arg(&daemon.config);
    let checked = output_within(check, Duration::from_secs(60));
    assert_eq!(checked.status.code(), Some(78));
    assert!(stderr(&checked).contains(why), "{}", stderr(&checked));

    // The old config is whole: no rate limit, the old upstream.
    for _ in 0..3 {
        let answer: Value = chat(process, false).await.json().await.unwrap();
        assert_eq!(answer["choices"][0]["message"]["content"], "from-kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_host_needs_a_restart_and_the_rest_of_the_reload_applies() {
    let daemon = Daemon::start("reload-host", "[server]\nhost = \"127.0.0.1\"\n", true);
    let process = &daemon.process;

    let second = "[server]\nhost = \"localhost\"\n[limits]\nper_key_requests_per_minute = 1\n";
    let output = daemon.reload_with(second);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let verdict = stdout(&output);
    assert!(
        verdict.contains("changed for new requests: limits.per_key_requests_per_minute"),
        "{verdict}"
    );
    assert!(
        verdict.contains(
            "needs a restart to take effect (still running with the old value): server.host"
        ),
        "{verdict}"
    );
    wait_for_line(process, "need a restart");
    let log = process.stderr();
    let line = log.lines().find(|l| l.contains("need a restart")).unwrap();
    assert!(line.contains("server.host"), "{line}");

    // Still on the old address, with the new limit.
    assert_eq!(models_status(process).await, 200);
    assert_eq!(models_status(process).await, 429);
}

/// The start time `/proc` gives process `pid` (field 22 of its stat line).
fn start_time_of(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    after_name.split_whitespace().nth(19).unwrap().to_string()
}

/// A pid file that names a live process that is not gatewayd, with that process's true
/// start time (as someone who can write the data dir could write it), or that is a
/// symlink to such a record, never gets that process signalled.
#[test]
fn gatewayd_reload_never_signals_a_process_that_is_not_gatewayd() {
    let dir = temp_dir("reload-forged");
    let config = dir.join("gatewayd.toml");
    std::fs::write(&config, "").unwrap();
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    // `sleep` ends on SIGHUP: a signal sent to it would show.
    let mut bystander = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = bystander.id();
    let record = format!("{pid}\nstart_time={}\n", start_time_of(pid));

    let elsewhere = dir.join("elsewhere.pid");
    std::fs::write(&elsewhere, &record).unwrap();
    std::os::unix::fs::symlink(&elsewhere, data_dir.join("gatewayd.pid")).unwrap();
    let output = reload_command(&config, &data_dir);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("symbolic link"),
        "{}",
        stderr(&output)
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "sleep was signalled"
    );

    std::fs::remove_file(data_dir.join("gatewayd.pid")).unwrap();
    std::fs::write(data_dir.join("gatewayd.pid"), &record).unwrap();
    let output = reload_command(&config, &data_dir);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("not gatewayd"),
        "{}",
        stderr(&output)
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "sleep was signalled"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatewayd_reload_fails_clearly_when_no_daemon_runs() {
    let dir = temp_dir("reload-none");
    let config = dir.join("gatewayd.toml");
    std::fs::write(&config, "").unwrap();
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();

    let output = reload_command(&config, &data_dir);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("not running"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("no pid file"),
        "{}",
        stderr(&output)
    );

    // A pid file left by a process that has exited.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(data_dir.join("gatewayd.pid"), format!("{gone_pid}\n")).unwrap();
    let output = reload_command(&config, &data_dir);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("stale"), "{}", stderr(&output));

    // A pid the kernel has given to another process since (this test, started later).
    let other = format!("{}\nstart_time=1\n", std::process::id());
    std::fs::write(data_dir.join("gatewayd.pid"), other).unwrap();
    let output = reload_command(&config, &data_dir);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("another program"),
        "{}",
        stderr(&output)
    );

    // A pid file without a start time, naming a live process that is not gatewayd.
    std::fs::write(
        data_dir.join("gatewayd.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let output = reload_command(&config, &data_dir);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("not gatewayd"),
        "{}",
        stderr(&output)
    );

    // A daemon that has stopped took its pid file with it.
    std::fs::remove_file(data_dir.join("gatewayd.pid")).unwrap();
    let daemon = Daemon::start("reload-stopped", "", false);
    assert!(daemon.data_dir.join("gatewayd.pid").exists());
    let pid = daemon.process.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let Daemon {
        config,
        data_dir,
        mut process,
    } = daemon;
    process.child.wait().unwrap();
    assert!(!data_dir.join("gatewayd.pid").exists());
    let output = reload_command(&config, &data_dir);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_log_filter_applies_to_the_lines_logged_after_the_reload() {
    let dir = temp_dir("reload-log");
    let config = dir.join("gatewayd.toml");
    let data_dir = dir.join("data");
    std::fs::write(&config, "[server]\nlog_filter = \"info\"\n").unwrap();
    let mut command = binary();
    command
        .env_remove("RUST_LOG")
        .env("GATEWAYD_DATA_DIR", &data_dir)
        .args(["--port", "0", "--config"])
        .arg(&config);
    let process = start(command);
    let debug_line = "finished processing request";
    let health = || client().get(process.url("/health")).send();
    assert_eq!(health().await.unwrap().status(), 200);

    std::fs::write(&config, "[server]\nlog_filter = \"info,gatewayd=debug\"\n").unwrap();
    let output = reload_command(&config, &data_dir);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("server.log_filter"),
        "{}",
        stdout(&output)
    );
    assert!(
        !process.stderr().contains(debug_line),
        "debug lines before the reload"
    );

    assert_eq!(health().await.unwrap().status(), 200);
    wait_for_line(&process, debug_line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_body_limit_applies_to_new_requests() {
    let daemon = Daemon::start("reload-body", "", true);
    let post = |size: usize| {
        let body =
            json!({"model": "echo", "messages": [{"role": "user", "content": "x".repeat(size)}]});
        client()
            .post(daemon.process.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .json(&body)
            .send()
    };
    assert_eq!(post(4096).await.unwrap().status(), 200);

    let output = daemon.reload_with("[limits]\nmax_body_bytes = 1024\n");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("limits.max_body_bytes"),
        "{}",
        stdout(&output)
    );

    assert_eq!(post(4096).await.unwrap().status(), 413);
    assert_eq!(post(16).await.unwrap().status(), 200);
}

/// A report left in the data dir by an earlier daemon (another pid, a higher count, a
/// start time in the future as after a clock step) is never taken for this daemon's,
/// and does not hide this daemon's answer either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_left_by_an_earlier_daemon_is_neither_taken_nor_in_the_way() {
    let toml = "[server]\ncors_origins = [\"https://old.example\"]\n";
    let daemon = Daemon::start("reload-old-report", toml, true);
    let left = serde_json::json!({
        "pid": daemon.process.child.id() + 100_000,
        "process_start": 1,
        "generation": 99,
        "started_ms": 4_102_444_800_000u64, // 2100-01-01
        "outcome": "rejected",
        "reason": "written by an earlier daemon",
    });
    std::fs::write(
        daemon.data_dir.join("gatewayd.reload"),
        serde_json::to_vec(&left).unwrap(),
    )
    .unwrap();

    let output = daemon.reload_with("[server]\ncors_origins = [\"https://new.example\"]\n");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("server.cors_origins"),
        "{}",
        stdout(&output)
    );
    assert!(
        !stdout(&output).contains("earlier daemon"),
        "{}",
        stdout(&output)
    );
}
