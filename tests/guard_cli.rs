//! The startup guard and key policy, tested on the real binary: exit codes, stderr, sockets.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;

use common::{binary, start, KEY_A};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = binary();
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn wildcard_without_key_exits_78_and_never_listens() {
    let output = run(&["--host", "0.0.0.0", "--port", "0"], &[]);
    assert_eq!(output.status.code(), Some(78));
    let err = stderr(&output);
    assert!(err.contains("0.0.0.0"), "{err}");
    assert!(err.contains("API_SERVER_KEY"), "names the fix: {err}");
    assert!(!err.contains("listening"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}

#[test]
fn guard_runs_before_bind_even_when_port_is_taken() {
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let output = run(&["--host", "0.0.0.0", "--port", &port], &[]);
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    assert!(!stderr(&output).contains("in use"));
    // The holder never saw a connection attempt from the guard.
    holder.set_nonblocking(true).unwrap();
    assert!(holder.accept().is_err());
}

#[test]
fn address_in_use_is_its_own_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let output = run(&["--host", "127.0.0.1", "--port", &port], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("already in use"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn weak_key_exits_78_without_echoing_it() {
    let output = run(&["--port", "0"], &[("API_SERVER_KEY", "changeme")]);
    assert_eq!(output.status.code(), Some(78));
    let err = stderr(&output);
    assert!(!err.contains("changeme"), "{err}");
    assert!(err.contains("gatewayd keygen"), "{err}");
    let output = run(
        &["--port", "0"],
        &[(
            "API_SERVER_KEY",
            "Xk29-my-longer-but-still-password-ish-value",
        )],
    );
    assert_eq!(output.status.code(), Some(78));
    assert!(!stderr(&output).contains("Xk29"));
}

#[test]
fn ipv6_wildcard_without_key_exits_78() {
    for host in ["::", "[::]", "::ffff:0.0.0.0"] {
        let output = run(&["--host", host, "--port", "0"], &[]);
        assert_eq!(
            output.status.code(),
            Some(78),
            "{host}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn shorthand_ipv4_exits_78() {
    for host in ["0", "127.1", "2130706433"] {
        let output = run(&["--host", host, "--port", "0"], &[]);
        assert_eq!(output.status.code(), Some(78), "{host}");
        assert!(stderr(&output).contains("not a valid address"));
    }
}

#[test]
fn both_key_env_vars_are_refused() {
    let dir = common::temp_dir("keyfile");
    let file = dir.join("key");
    std::fs::write(&file, KEY_A).unwrap();
    let output = run(
        &["--port", "0"],
        &[
            ("API_SERVER_KEY", KEY_A),
            ("API_SERVER_KEY_FILE", file.to_str().unwrap()),
        ],
    );
    assert_eq!(output.status.code(), Some(78));
    assert!(stderr(&output).contains("ambiguous"));
}

#[test]
fn unreadable_key_file_is_refused_not_ignored() {
    let output = run(
        &["--port", "0"],
        &[("API_SERVER_KEY_FILE", "/nonexistent/gatewayd-key")],
    );
    assert_eq!(output.status.code(), Some(78));
}

#[test]
fn check_config_refuses_wildcard_without_key() {
    let output = run(&["check-config", "--host", "0.0.0.0"], &[]);
    assert_eq!(output.status.code(), Some(78));
    let output = run(&["check-config", "--host", "127.0.0.1"], &[]);
    assert_eq!(output.status.code(), Some(0));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("127.0.0.1:8642"), "{out}");
    assert!(out.contains("keyless"), "{out}");
}

#[test]
fn check_config_names_keys_but_never_shows_them() {
    let output = run(
        &["check-config", "--host", "0.0.0.0"],
        &[("API_SERVER_KEY", KEY_A)],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("default"), "{out}");
    assert!(!out.contains(&KEY_A[4..12]), "{out}");
}

#[test]
fn unknown_config_field_is_refused_with_name_and_file() {
    let dir = common::temp_dir("badcfg");
    let path = dir.join("typo.toml");
    std::fs::write(&path, "[server]\nprot = 1\n").unwrap();
    let output = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(78));
    let err = stderr(&output);
    assert!(err.contains("prot") && err.contains("typo.toml"), "{err}");
}

#[test]
fn keygen_prints_a_strong_key_and_digest() {
    let output = run(&["keygen", "--sha256"], &[]);
    assert!(output.status.success());
    let out = String::from_utf8(output.stdout).unwrap();
    let mut lines = out.lines();
    let key = lines.next().unwrap();
    assert!(key.starts_with("gwd_") && key.len() == 47, "{key}");
    assert!(gatewayd::keys::check_strength(key).is_ok());
    let digest_line = lines.next().unwrap();
    assert!(digest_line.contains(&common::sha256_hex(key)));
}

#[tokio::test]
async fn wildcard_with_generated_key_serves_and_requires_it() {
    let key = String::from_utf8(run(&["keygen"], &[]).stdout).unwrap();
    let key = key.trim();
    let mut command = binary();
    command
        .args(["--host", "0.0.0.0", "--port", "0"])
        .env("API_SERVER_KEY", key);
    let process = start(command);
    let client = common::client();
    let health = client.get(process.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), r#"{"status":"ok"}"#);
    let denied = client.get(process.url("/v1/models")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(
        denied.headers()["www-authenticate"],
        r#"Bearer realm="gatewayd""#
    );
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let allowed = client
        .get(process.url("/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let models: serde_json::Value = allowed.json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "echo");
    let log = process.stderr();
    assert!(
        log.contains("0.0.0.0:"),
        "startup line names the address: {log}"
    );
    assert!(!log.contains(key), "key leaked into logs");
}
