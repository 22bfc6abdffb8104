//! The admin API and `gatewayd keys`, through the real binary: only the admin key opens the admin listener and client listeners refuse it; runtime keys are created, changed and revoked, and reach every instance sharing PostgreSQL within 5 s; the admin key never appears in the log; the CLI works on a stopped daemon's SQLite store and refuses while a daemon owns it; bad `[admin]` setups refuse to start.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{assert_openai_error, binary, client, output_within, start, temp_dir, Process};
use common::{KEY_A, KEY_B};
use serde_json::{json, Value};

const ADMIN: &str = "gwd_Ad7Mn3Qx9Rv1Tz5Wb8Yc2Ek6Gh0Jp4Ls";
/// How long a key created or revoked on one instance may take to reach another.
const PROPAGATION: Duration = Duration::from_secs(5);

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("gatewayd.toml");
    let toml = format!(
        "[server]\nport = 0\ndata_dir = {:?}\n\n[admin]\nenabled = true\nlisten = \"127.0.0.1:0\"\n{extra}",
        dir.join("data")
    );
    std::fs::write(&path, toml).unwrap();
    path
}

fn daemon(config: &Path) -> Process {
    let mut command = binary();
    // The config file names the data dir (the CLI must find the daemon's store).
    command
        .env_remove("GATEWAYD_DATA_DIR")
        .arg("--config")
        .arg(config)
        .env("API_SERVER_KEY", KEY_A)
        .env("GATEWAYD_ADMIN_KEY", ADMIN)
        .env("RUST_LOG", "debug");
    start(command)
}

/// The admin listener's address from the "gatewayd listening" line.
fn admin_url(process: &Process, path: &str) -> String {
    // `start` returns on the line itself, which reaches `stderr()` a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = process.stderr();
    while !log.contains("admin=") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        log = process.stderr();
    }
    let start = log.find("admin=").expect("no admin address logged") + "admin=".len();
    let end = log[start..].find([' ', ',', '"']).unwrap() + start;
    format!("http://{}{path}", &log[start..end])
}

async fn call(method: &str, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client()
        .request(method.parse().unwrap(), url)
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `url` with `key` until it answers `want`, for at most [`PROPAGATION`].
async fn until_status(url: &str, key: &str, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        let (status, _) = call("GET", url, key, None).await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PROPAGATION,
            "{url} still answers {status}, not {want}, after {PROPAGATION:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unique(tag: &str) -> String {
    let mut random = [0u8; 6];
    getrandom::getrandom(&mut random).unwrap();
    format!("{tag}-{}", hex::encode(random))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_takes_only_the_admin_key_and_manages_runtime_keys() {
    let dir = temp_dir("admin");
    let gw = daemon(&write_config(&dir, ""));
    let keys_url = admin_url(&gw, "/admin/v1/keys");
    // Each listener refuses the other's key.
    let (status, body) = call("GET", &keys_url, KEY_A, None).await;
    assert_eq!(status, 401, "{body}");
    assert_openai_error(&body, "invalid_request_error", "invalid_api_key");
    let (status, _) = call("GET", &gw.url("/v1/models"), ADMIN, None).await;
    assert_eq!(status, 401, "the client listener accepted the admin key");
    let (status, _) = call("GET", &admin_url(&gw, "/v1/models"), ADMIN, None).await;
    assert_eq!(status, 404, "the admin listener serves only the admin API");

    let (status, created) = call(
        "POST",
        &keys_url,
        ADMIN,
        Some(
            json!({"name": "team-a", "models": ["echo"], "tokens_per_day": 1000,
                    "expires_at": "2099-01-01T00:00:00Z"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("gwd_"));
    assert_eq!(created["origin"], "runtime");
    assert_eq!(created["models"], json!(["echo"]));
    assert_eq!(created["expires_at"], "2099-01-01T00:00:00Z");
    until_status(&gw.url("/v1/models"), &key, 200).await;
    let (_, models) = call("GET", &gw.url("/v1/models"), &key, None).await;
    assert_eq!(models["data"][0]["id"], "echo");

    // The list shows every key with its origin and usage, and never a key or digest.
    let (status, list) = call("GET", &keys_url, ADMIN, None).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<(&str, &str)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap(), k["origin"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("default", "config"), ("team-a", "runtime")]);
    assert_eq!(list["data"][1]["usage"]["day"]["tokens"], 0);
    let text = list.to_string();
    assert!(!text.contains(&key[4..]) && !text.contains(&common::sha256_hex(&key)));

    // Refusals, each OpenAI-shaped.
    for (method, url, body, status, code) in [
        (
            "POST",
            keys_url.clone(),
            json!({"name": "team-a"}),
            409,
            "already_exists",
        ),
        (
            "POST",
            keys_url.clone(),
            json!({"name": "default"}),
            409,
            "already_exists",
        ),
        (
            "POST",
            keys_url.clone(),
            json!({"name": "x", "tokens_per_day": 0}),
            400,
            "",
        ),
        (
            "POST",
            keys_url.clone(),
            json!({"name": "x", "models": []}),
            400,
            "",
        ),
        (
            "POST",
            keys_url.clone(),
            json!({"name": "x", "expires_at": "soon"}),
            400,
            "",
        ),
        (
            "POST",
            keys_url.clone(),
            json!({"name": "x", "colour": "red"}),
            400,
            "",
        ),
        (
            "PATCH",
            format!("{keys_url}/default"),
            json!({"disabled": true}),
            403,
            "forbidden",
        ),
        (
            "PATCH",
            format!("{keys_url}/nobody"),
            json!({"disabled": true}),
            404,
            "key_not_found",
        ),
    ] {
        let (got, body) = call(method, &url, ADMIN, Some(body)).await;
        assert_eq!(got, status, "{method} {url}: {body}");
        assert!(body["error"]["message"].as_str().is_some(), "{body}");
        if !code.is_empty() {
            assert_eq!(body["error"]["code"], code, "{body}");
        }
    }
    let (status, body) = call("DELETE", &format!("{keys_url}/nobody"), ADMIN, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call("DELETE", &format!("{keys_url}/default"), ADMIN, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("config file"));

    // Usage: validated, and a list.
    let usage = admin_url(&gw, "/admin/v1/usage");
    let (status, body) = call(
        "GET",
        &format!("{usage}?group_by=key&from=2026-01-01"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(
        (status, body["object"].as_str()),
        (200, Some("list")),
        "{body}"
    );
    for bad in ["from=2026-1-1", "group_by=week", "colour=red"] {
        let (status, body) = call("GET", &format!("{usage}?{bad}"), ADMIN, None).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Disabling through PATCH, then revoking.
    let team = format!("{keys_url}/team-a");
    let (status, body) = call("PATCH", &team, ADMIN, Some(json!({"disabled": true}))).await;
    assert_eq!((status, &body["disabled"]), (200, &json!(true)), "{body}");
    assert_eq!(
        body["tokens_per_day"], 1000,
        "a patch keeps the fields it leaves out"
    );
    until_status(&gw.url("/v1/models"), &key, 401).await;
    let (status, body) = call(
        "PATCH",
        &team,
        ADMIN,
        Some(json!({"disabled": false, "tokens_per_day": null})),
    )
    .await;
    assert_eq!(
        (status, &body["tokens_per_day"]),
        (200, &Value::Null),
        "{body}"
    );
    until_status(&gw.url("/v1/models"), &key, 200).await;
    let (status, body) = call("DELETE", &team, ADMIN, None).await;
    assert_eq!(status, 200, "{body}");
    until_status(&gw.url("/v1/models"), &key, 401).await;

    // Nothing of the admin key (nor of the created key) is ever logged.
    let log = gw.stderr();
    assert!(log.contains("runtime key revoked"), "{log}");
    for secret in [ADMIN, key.as_str()] {
        for window in secret.as_bytes().windows(12) {
            let part = std::str::from_utf8(window).unwrap();
            assert!(!log.contains(part), "part of a key is in the log: {part}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_key_reaches_every_instance_sharing_postgres_within_5s() {
    let Ok(url) = std::env::var("GATEWAYD_TEST_POSTGRES_URL") else {
        eprintln!("GATEWAYD_TEST_POSTGRES_URL not set: two-instance test not run");
        return;
    };
    let extra = format!("\n[sessions]\ndatabase_url = {url:?}\n");
    let a = daemon(&write_config(&temp_dir("admin-a"), &extra));
    let b = daemon(&write_config(&temp_dir("admin-b"), &extra));
    let name = unique("shared");
    let (status, created) = call(
        "POST",
        &admin_url(&a, "/admin/v1/keys"),
        ADMIN,
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    until_status(&b.url("/v1/models"), &key, 200).await;
    until_status(&a.url("/v1/models"), &key, 200).await;
    // B lists it too, as a runtime key.
    let (_, list) = call("GET", &admin_url(&b, "/admin/v1/keys"), ADMIN, None).await;
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["name"] == name.as_str() && k["origin"] == "runtime"));
    let (status, _) = call(
        "DELETE",
        &admin_url(&a, &format!("/admin/v1/keys/{name}")),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 200);
    until_status(&b.url("/v1/models"), &key, 401).await;
    until_status(&a.url("/v1/models"), &key, 401).await;
}

fn keys_cli(config: &Path, args: &[&str]) -> std::process::Output {
    let mut command = binary();
    command.env_remove("GATEWAYD_DATA_DIR");
    command.arg("--config").arg(config).arg("keys").args(args);
    output_within(command, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_keys_with_the_daemon_stopped_and_refuses_while_it_runs() {
    let dir = temp_dir("admin-cli");
    let config = write_config(&dir, "");
    let created = keys_cli(
        &config,
        &[
            "create",
            "--name",
            "cli-team",
            "--models",
            "echo",
            "--tokens-per-day",
            "500",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(key.starts_with("gwd_") && key.len() == 47, "{key}");
    let listed = keys_cli(&config, &["list"]);
    let text = String::from_utf8(listed.stdout).unwrap();
    assert!(
        text.contains("cli-team\truntime\tmodels=echo\tday=500"),
        "{text}"
    );
    assert!(!text.contains(&key[4..]));
    let twice = keys_cli(&config, &["create", "--name", "cli-team"]);
    assert_eq!(twice.status.code(), Some(1));

    // The daemon takes the key at start; meanwhile the CLI refuses to touch its store.
    let gw = daemon(&config);
    until_status(&gw.url("/v1/models"), &key, 200).await;
    for args in [
        vec!["create", "--name", "other"],
        vec!["revoke", "cli-team"],
        vec!["list"],
    ] {
        let refused = keys_cli(&config, &args);
        let stderr = String::from_utf8(refused.stderr).unwrap();
        assert_eq!(refused.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("the daemon is running and owns the SQLite store")
                && stderr.contains("admin API"),
            "{stderr}"
        );
    }
    drop(gw);

    let revoked = keys_cli(&config, &["revoke", "cli-team"]);
    assert!(revoked.status.success(), "{revoked:?}");
    let listed = String::from_utf8(keys_cli(&config, &["list"]).stdout).unwrap();
    assert!(!listed.contains("cli-team"), "{listed}");
    let usage = keys_cli(&config, &["usage", "--group-by", "key"]);
    assert!(usage.status.success(), "{usage:?}");
    let bad = keys_cli(&config, &["usage", "--from", "yesterday"]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn bad_admin_setups_refuse_to_start() {
    let dir = temp_dir("admin-refuse");
    let key_file = dir.join("admin_key");
    std::fs::write(&key_file, format!("{ADMIN}\n")).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let cases: [(&str, Option<&str>, &str); 6] = [
        ("", None, "no admin key is configured"),
        (
            &format!("key_file = {key_file:?}\n"),
            Some(ADMIN),
            "ambiguous",
        ),
        (
            "key_file = \"/nonexistent/admin_key\"\n",
            None,
            "cannot use key file",
        ),
        ("", Some("changeme-please-0000"), "not a strong key"),
        ("", Some(KEY_A), "also a client key"),
        ("", Some(ADMIN), "plain HTTP"),
    ];
    for (i, (extra, env, says)) in cases.iter().enumerate() {
        let listen = if i == 5 { "0.0.0.0:0" } else { "127.0.0.1:0" };
        let path = dir.join(format!("{i}.toml"));
        std::fs::write(
            &path,
            format!("[admin]\nenabled = true\nlisten = \"{listen}\"\n{extra}"),
        )
        .unwrap();
        let mut command = binary();
        command
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .env("API_SERVER_KEY", KEY_A);
        if let Some(key) = env {
            command.env("GATEWAYD_ADMIN_KEY", key);
        }
        let output = output_within(command, Duration::from_secs(30));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(78), "case {i}: {stderr}");
        assert!(stderr.contains(says), "case {i}: {stderr}");
        assert!(
            !stderr.contains("changeme") && !stderr.contains(&ADMIN[4..16]),
            "{stderr}"
        );
    }
    // A good setup passes and says where the admin API listens; off by default.
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!("[admin]\nenabled = true\nkey_file = {key_file:?}\n"),
    )
    .unwrap();
    let mut command = binary();
    command
        .arg("--config")
        .arg(&good)
        .arg("check-config")
        .env("API_SERVER_KEY", KEY_B);
    let output = output_within(command, Duration::from_secs(30));
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("admin API on: 127.0.0.1:8643"), "{stdout}");
    let mut command = binary();
    command.arg("check-config").env("API_SERVER_KEY", KEY_B);
    let stdout = String::from_utf8(output_within(command, Duration::from_secs(30)).stdout).unwrap();
    assert!(!stdout.contains("admin"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_keeps_the_runtime_keys_last_read() {
    use gatewayd::config::keys::{digest, KeySet, KeySettings};
    use gatewayd::daemon::key_book::KeyBook;
    let dir = temp_dir("admin-outage");
    let store = std::sync::Arc::new(
        gatewayd::sessions::SessionStore::open_sqlite(&dir, Default::default())
            .await
            .unwrap(),
    );
    let settings = KeySettings::default();
    store
        .create_key("kept", &digest(KEY_B.as_bytes()), &settings)
        .await
        .unwrap();
    let published = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(KeySet::default()));
    let book = KeyBook::new(published.clone());
    assert!(!book.refresh(&store, false).await, "the first read failed");
    assert_eq!(published.load().names(), ["kept"]);
    // The table disappears from under the store: reads fail, and the keys stay.
    let url = format!("sqlite://{}", dir.join("sessions.db").display());
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE api_keys RENAME TO api_keys_away")
        .execute(&raw)
        .await
        .unwrap();
    assert!(book.refresh(&store, false).await, "the read did not fail");
    assert!(book.refresh(&store, true).await);
    assert_eq!(
        published.load().names(),
        ["kept"],
        "an outage emptied the key set"
    );
    // Back again: the next read is in force (here, a revocation made meanwhile).
    sqlx::query("ALTER TABLE api_keys_away RENAME TO api_keys")
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query("DELETE FROM api_keys")
        .execute(&raw)
        .await
        .unwrap();
    assert!(!book.refresh(&store, true).await);
    assert!(published.load().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_runtime_keys_in_force() {
    let dir = temp_dir("admin-reload");
    let config = write_config(&dir, "");
    let gw = daemon(&config);
    let (status, created) = call(
        "POST",
        &admin_url(&gw, "/admin/v1/keys"),
        ADMIN,
        Some(json!({"name": "runtime-one"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    until_status(&gw.url("/v1/models"), &key, 200).await;
    // A reload that changes the config keys (adds one).
    let toml = std::fs::read_to_string(&config).unwrap();
    let entry = format!(
        "\n[[keys]]\nname = \"added\"\nsha256 = \"{}\"\n",
        common::sha256_hex(KEY_B)
    );
    std::fs::write(&config, format!("{toml}{entry}")).unwrap();
    let mut command = binary();
    command
        .env_remove("GATEWAYD_DATA_DIR")
        .env("API_SERVER_KEY", KEY_A)
        .env("GATEWAYD_ADMIN_KEY", ADMIN)
        .arg("reload")
        .arg("--config")
        .arg(&config);
    let reloaded = output_within(command, Duration::from_secs(60));
    assert!(reloaded.status.success(), "{reloaded:?}");
    // Straight after the reload, before any poll could put them back: both kinds work.
    let (status, _) = call("GET", &gw.url("/v1/models"), &key, None).await;
    assert_eq!(status, 200, "the reload dropped the runtime key");
    let (status, _) = call("GET", &gw.url("/v1/models"), KEY_B, None).await;
    assert_eq!(status, 200, "the reload did not add the config key");
}
