//! Storage faults: a full SQLite database and a killed PostgreSQL backend never turn into an acknowledged but unstored turn, and the store recovers by itself.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use common::sessions::{create as create_ok, post_session, say, stored_contents};
use common::upstream::{chat_reply, chat_upstream, Seen};
use common::{client, config_from_toml, mock_upstream, open_store, spawn_gateway_with_store};
use common::{Backend, KEY_A};
use gatewayd::sessions::SessionStore;
use serde_json::{json, Value};

/// Asserts the OpenAI-shaped 503 a client gets when a write could not be stored.
async fn assert_storage_unavailable(response: reqwest::Response) {
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    assert_eq!(body["error"]["type"], "server_error");
}

async fn status_of(gw: &common::Gateway, path: &str) -> u16 {
    client()
        .get(gw.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// How a test makes room again once the store is full.
enum FreeSpace {
    /// Delete the filler session through the API (a capped database).
    DeleteFillerSession,
    /// Remove a ballast file from the full file system.
    RemoveFile(std::path::PathBuf),
}

/// The message contents stored for a session, read by a separate process (python3).
fn stored_in_sqlite(db: &std::path::Path, id: &str) -> Vec<String> {
    stored_contents(Backend::Sqlite, db.to_str().unwrap(), id)
}

/// The message contents stored for a session, read by a separate process (psql).
fn stored_in_postgres(url: &str, id: &str) -> Vec<String> {
    stored_contents(Backend::Postgres, url, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_database_refuses_writes_then_recovers() {
    let (url, _) = chat_upstream().await;
    // A 256 KiB cap fills after a few dozen 4 kB turns: SQLITE_FULL while a turn is
    // being written.
    let config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n\
         [sessions]\nmax_database_bytes = 262144\n",
        common::two_keys_toml()
    ));
    fill_refuse_free_verify(config, FreeSpace::DeleteFillerSession).await;
}

/// A 2 MiB tmpfs, unmounted when dropped (the database is read back before that).
struct SmallDisk(std::path::PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_then_recovers() {
    // A real ENOSPC: the data dir on a 2 MiB tmpfs. The write-ahead log runs out of room
    // while a turn commits, which is the fault that used to wedge the writer.
    if !nix_is_root() {
        eprintln!("not root: cannot mount a small tmpfs; the full-disk test needs root");
        return;
    }
    let mount_point = common::temp_dir("smalldisk");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mount_point)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs failed");
    let disk = SmallDisk(mount_point.clone());
    let ballast = mount_point.join("ballast");
    std::fs::write(&ballast, vec![0u8; 512 * 1024]).unwrap();
    let (url, _) = chat_upstream().await;
    let mut config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n",
        common::two_keys_toml()
    ));
    config.data_dir = mount_point.join("data");
    fill_refuse_free_verify(config, FreeSpace::RemoveFile(ballast)).await;
    drop(disk);
}

/// Fills the store with 4 kB turns until writes fail, checks that every write while it
/// is full is refused (503 or a final error event, never a success), makes room, checks
/// that writes work again without a restart, then reads the database file back from a
/// separate process: every acknowledged turn is there, no refused one is.
async fn fill_refuse_free_verify(config: gatewayd::config::Config, free: FreeSpace) {
    let db = config.data_dir.join("sessions.db");
    let store = open_store(&config, false).await;
    let gw = spawn_gateway_with_store(config, store).await;
    let filler = create_ok(&gw, KEY_A, json!({})).await;
    let main = create_ok(&gw, KEY_A, json!({})).await;
    let padding = "x".repeat(4000);
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();

    // Fill: alternate turns until the database is full.
    for turn in 0..200 {
        let (id, text) = match turn % 2 {
            0 => (&filler, format!("filler-{turn} {padding}")),
            _ => (&main, format!("main-{turn} {padding}")),
        };
        let response = say(&gw, KEY_A, id, "m", &text, false).await;
        if response.status() == 200 {
            response.bytes().await.unwrap();
            if id == &main {
                acknowledged.push(text);
            }
            continue;
        }
        assert_storage_unavailable(response).await;
        if id == &main {
            refused.push(text);
        }
        break;
    }
    eprintln!("acknowledged before full: {}", acknowledged.len());
    assert!(acknowledged.len() >= 5, "too few turns before full");
    assert_eq!(status_of(&gw, "/health/ready").await, 503);

    // While full, every write keeps failing honestly: no 200 for an unstored turn. These
    // turns are four times larger than the one that just failed, so no page left free by
    // chance can hold them.
    let large = padding.repeat(4);
    for attempt in 0..3 {
        let text = format!("while-full-{attempt} {large}");
        assert_storage_unavailable(say(&gw, KEY_A, &main, "m", &text, false).await).await;
        refused.push(text);
    }
    let text = format!("while-full-streamed {large}");
    // Refused before the stream starts (when even the session's lease cannot be
    // written), or a stream that ends with the error event instead of [DONE].
    let streamed = say(&gw, KEY_A, &main, "m", &text, true).await;
    if streamed.status() == 503 {
        assert_storage_unavailable(streamed).await;
    } else {
        assert_eq!(streamed.status(), 200);
        let events = streamed.text().await.unwrap();
        assert!(events.contains("\"storage_unavailable\""), "{events}");
        assert!(!events.contains("[DONE]"), "{events}");
    }
    refused.push(text);
    // A session created now either fails or really exists.
    let created = post_session(&gw, KEY_A, json!({})).await;
    if created.status() == 201 {
        let id = created.json::<Value>().await.unwrap()["id"].clone();
        let path = format!("/v1/sessions/{}", id.as_str().unwrap());
        let read = client().get(gw.url(&path)).bearer_auth(KEY_A).send().await;
        assert_eq!(read.unwrap().status(), 200);
    } else {
        assert_storage_unavailable(created).await;
    }

    // Make room; the store recovers without a restart.
    match free {
        FreeSpace::DeleteFillerSession => {
            let deleted = client()
                .delete(gw.url(&format!("/v1/sessions/{filler}")))
                .bearer_auth(KEY_A)
                .send()
                .await
                .unwrap();
            assert!(deleted.status().is_success(), "{}", deleted.status());
        }
        FreeSpace::RemoveFile(path) => std::fs::remove_file(path).unwrap(),
    }
    for turn in 0..3 {
        let text = format!("after-{turn} {padding}");
        let response = say(&gw, KEY_A, &main, "m", &text, turn == 2).await;
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        assert!(!body.contains("\"error\""), "{body}");
        acknowledged.push(text);
    }
    // A write that stored data shows the store takes writes again.
    assert_eq!(status_of(&gw, "/health/ready").await, 200);
    let fresh = create_ok(&gw, KEY_A, json!({})).await;
    let path = format!("/v1/sessions/{fresh}");
    let read = client().get(gw.url(&path)).bearer_auth(KEY_A).send().await;
    assert_eq!(read.unwrap().status(), 200);

    gw.shutdown.cancel();
    gw.handle.await.unwrap();
    let stored: Vec<String> = stored_in_sqlite(&db, &main);
    let users: Vec<&String> = stored.iter().filter(|m| !m.starts_with("echo: ")).collect();
    assert_eq!(stored.len(), 2 * users.len(), "a half-stored turn");
    let users: BTreeSet<&str> = users.into_iter().map(String::as_str).collect();
    for text in &acknowledged {
        assert!(users.contains(text.as_str()), "acknowledged turn lost");
    }
    for text in &refused {
        assert!(!users.contains(text.as_str()), "a refused turn was stored");
    }
    assert_eq!(users.len(), acknowledged.len());
}

/// A private database on the test server, so a trigger and killed backends touch no
/// other test. Dropped (with its connections) at the end.
struct PrivateDatabase {
    admin: sqlx::AnyPool,
    name: String,
    url: String,
}

impl PrivateDatabase {
    async fn create(base_url: &str) -> PrivateDatabase {
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(base_url).await.unwrap();
        let suffix = common::temp_dir("pgfault");
        let suffix = suffix.file_name().unwrap().to_str().unwrap();
        let name = suffix.replace('-', "_");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let (server, _) = base_url.rsplit_once('/').unwrap();
        let url = format!("{server}/{name}");
        PrivateDatabase { admin, name, url }
    }

    async fn drop_now(self) {
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_backend_killed_mid_turn_stores_nothing_and_recovers() {
    let Ok(base_url) = std::env::var("GATEWAYD_TEST_POSTGRES_URL") else {
        eprintln!("GATEWAYD_TEST_POSTGRES_URL not set: PostgreSQL fault test not run");
        return;
    };
    let database = PrivateDatabase::create(&base_url).await;
    let limits = gatewayd::config::SessionsSection::default().limits();
    let store = SessionStore::open_postgres(&database.url, limits)
        .await
        .unwrap();
    // A turn whose text says SLOW-COMMIT stalls inside its INSERT, so the test can kill
    // the backend exactly while the turn is being committed.
    let test_pool = sqlx::AnyPool::connect(&database.url).await.unwrap();
    sqlx::query(
        "CREATE FUNCTION stall() RETURNS trigger AS $$ BEGIN \
         IF NEW.message LIKE '%SLOW-COMMIT%' THEN PERFORM pg_sleep(60); END IF; \
         RETURN NEW; END $$ LANGUAGE plpgsql",
    )
    .execute(&test_pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER stall BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION stall()",
    )
    .execute(&test_pool)
    .await
    .unwrap();

    let (url, _) = chat_upstream().await;
    let config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n",
        common::two_keys_toml()
    ));
    let gw = spawn_gateway_with_store(config, store).await;
    let id = create_ok(&gw, KEY_A, json!({})).await;
    assert_eq!(say(&gw, KEY_A, &id, "m", "one", false).await.status(), 200);

    let stalled = {
        let (url, id) = (gw.url("/v1/chat/completions"), id.clone());
        tokio::spawn(async move {
            client()
                .post(url)
                .bearer_auth(KEY_A)
                .header("x-session-id", id)
                .json(&json!({"model": "m", "messages": [{"role": "user", "content": "SLOW-COMMIT two"}]}))
                .send()
                .await
                .unwrap()
        })
    };
    // Wait for the commit to stall, then kill the backend running it.
    let mut killed = 0i64;
    for _ in 0..1500 {
        let row = sqlx::query(
            "SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE datname = $1 AND wait_event = 'PgSleep'",
        )
        .bind(&database.name)
        .fetch_one(&test_pool)
        .await
        .unwrap();
        killed = sqlx::Row::try_get(&row, "n").unwrap();
        if killed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(killed, 1, "the stalled commit was never seen");
    assert_storage_unavailable(stalled.await.unwrap()).await;

    // No restart: the next turns are stored (a client honouring Retry-After may meet the
    // abandoned turn's lease for a moment).
    let mut status = 0;
    for _ in 0..20 {
        status = say(&gw, KEY_A, &id, "m", "three", false)
            .await
            .status()
            .as_u16();
        if status != 409 {
            break;
        }
    }
    assert_eq!(status, 200);

    // A separate process (psql) reads what is really stored.
    assert_eq!(
        stored_in_postgres(database.url.as_str(), &id),
        ["one", "echo: one", "three", "echo: three"]
    );

    gw.shutdown.cancel();
    gw.handle.await.unwrap();
    drop(gw.state);
    test_pool.close().await;
    database.drop_now().await;
}

/// A throwaway PostgreSQL server of its own (initdb in a temp dir, a Unix socket only),
/// so the test can stop and start it without disturbing anything else.
struct PrivateServer {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl PrivateServer {
    fn pg(&self, tool: &str) -> Command {
        let tool = self.bin.join(tool);
        // PostgreSQL refuses to run as root: run its tools as the postgres user then.
        if nix_is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(tool);
            command
        } else {
            Command::new(tool)
        }
    }

    fn init() -> PrivateServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .map(|entry| entry.unwrap().path().join("bin"))
            .find(|bin| bin.join("initdb").exists())
            .expect("initdb");
        let dir = common::temp_dir("pgcluster");
        if nix_is_root() {
            assert!(Command::new("chown")
                .args(["postgres"])
                .arg(&dir)
                .status()
                .unwrap()
                .success());
        }
        let server = PrivateServer { bin, dir };
        let initdb = server
            .pg("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(server.dir.join("data"))
            .output()
            .unwrap();
        assert!(initdb.status.success(), "{initdb:?}");
        server.start();
        server
    }

    fn start(&self) {
        let options = format!("-c listen_addresses= -k {}", self.dir.display());
        let started = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(started.status.success(), "{started:?}");
    }

    fn stop(&self) {
        let stopped = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .unwrap();
        assert!(stopped.status.success(), "{stopped:?}");
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost/postgres?host={}",
            self.dir.display()
        )
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_postgres_server_gets_503_and_a_restarted_one_is_used_again() {
    if std::env::var("GATEWAYD_TEST_POSTGRES_URL").is_err() {
        eprintln!("GATEWAYD_TEST_POSTGRES_URL not set: PostgreSQL restart test not run");
        return;
    }
    let server = tokio::task::spawn_blocking(PrivateServer::init)
        .await
        .unwrap();
    let limits = gatewayd::config::SessionsSection::default().limits();
    let store = SessionStore::open_postgres(&server.url(), limits)
        .await
        .unwrap();
    let (url, _) = chat_upstream().await;
    let config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n",
        common::two_keys_toml()
    ));
    let gw = spawn_gateway_with_store(config, store).await;
    let id = create_ok(&gw, KEY_A, json!({})).await;
    assert_eq!(
        say(&gw, KEY_A, &id, "m", "before", false).await.status(),
        200
    );

    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    assert_storage_unavailable(say(&gw, KEY_A, &id, "m", "while-down", false).await).await;
    assert_storage_unavailable(post_session(&gw, KEY_A, json!({})).await).await;
    assert_eq!(status_of(&gw, "/health/ready").await, 503);

    let server = tokio::task::spawn_blocking(move || {
        server.start();
        server
    })
    .await
    .unwrap();
    // Readiness stays 503 for 5 s after the last failure, then probes at most once a
    // second; a balancer polls until it is back.
    let mut ready = 0;
    for _ in 0..300 {
        ready = status_of(&gw, "/health/ready").await;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 200);
    assert_eq!(
        say(&gw, KEY_A, &id, "m", "after", false).await.status(),
        200
    );

    assert_eq!(
        stored_in_postgres(server.url().as_str(), &id),
        ["before", "echo: before", "after", "echo: after"]
    );
    gw.shutdown.cancel();
    gw.handle.await.unwrap();
}

/// The reproduction: plain turns one after another on ONE session whose data dir
/// is a 1 MiB tmpfs. While one turn's upstream answers, a ballast file takes the last free
/// byte, so that turn's commit fails (503 `storage_unavailable`) and so would a write
/// releasing its lease. Every later turn of the session must still get 503
/// `storage_unavailable` at once (well under `busy_timeout_secs`), never 409
/// `session_busy` from a lease the failed turn could not give back. Once the ballast is
/// deleted the next turn is stored and answered, and the database file, read back by a
/// separate process, holds exactly the acknowledged turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_on_a_full_disk_releases_its_lease() {
    if !nix_is_root() {
        eprintln!("not root: cannot mount a small tmpfs; the full-disk test needs root");
        return;
    }
    let mount_point = common::temp_dir("fulldisk-lease");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount_point)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs failed");
    let disk = SmallDisk(mount_point.clone());
    let (url, mut filling, gate) = disk_filling_upstream().await;
    let mut config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n",
        common::two_keys_toml()
    ));
    config.data_dir = mount_point.join("data");
    let db = config.data_dir.join("sessions.db");
    let store = open_store(&config, false).await;
    let gw = spawn_gateway_with_store(config, store).await;
    let id = create_ok(&gw, KEY_A, json!({})).await;
    let ballast = mount_point.join("ballast");
    std::fs::write(&ballast, b"").unwrap();

    let padding = "x".repeat(4000);
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for turn in 0..3 {
        let text = format!("turn-{turn} {padding}");
        let response = say(&gw, KEY_A, &id, "m", &text, false).await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        acknowledged.push(text);
    }

    // The disk fills while this turn's upstream answers: its lease is taken, its commit
    // cannot be written.
    let text = format!("FILL-DISK {padding}");
    let filled_turn =
        tokio::spawn(common::sessions::turn(&gw, KEY_A, &id, "m", &text, false).send());
    assert_eq!(filling.recv().await.unwrap(), text);
    fill(&ballast);
    gate.notify_one();
    assert_storage_unavailable(filled_turn.await.unwrap().unwrap()).await;
    refused.push(text);

    // While the disk stays full, every turn of the session is refused at once, as
    // storage, not as busy.
    for attempt in 0..3 {
        let text = format!("while-full-{attempt} {padding}");
        let started = Instant::now();
        let response = say(&gw, KEY_A, &id, "m", &text, false).await;
        let took = started.elapsed();
        assert_ne!(
            response.status(),
            409,
            "while full, turn {attempt} got session_busy after {took:?}: the failed turn's lease was never released"
        );
        assert_storage_unavailable(response).await;
        assert!(took < Duration::from_secs(2), "refused only after {took:?}");
        refused.push(text);
    }

    // Space comes back: the next turn is stored and answered.
    std::fs::remove_file(&ballast).unwrap();
    let text = format!("after {padding}");
    let response = say(&gw, KEY_A, &id, "m", &text, false).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        format!("echo: {text}")
    );
    acknowledged.push(text);

    gw.shutdown.cancel();
    gw.handle.await.unwrap();
    let stored = stored_in_sqlite(&db, &id);
    let expected: Vec<String> = acknowledged
        .iter()
        .flat_map(|t| [t.clone(), format!("echo: {t}")])
        .collect();
    assert!(
        stored == expected,
        "stored turns are not exactly the acknowledged ones"
    );
    for text in &refused {
        assert!(!stored.contains(text), "a refused turn was stored");
    }
    drop(disk);
}

/// The shared mock chat upstream, except that a turn whose text starts with FILL-DISK is
/// reported on the channel and answered only once the gate is opened.
async fn disk_filling_upstream() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    std::sync::Arc<tokio::sync::Notify>,
) {
    let (arrived, filling) = tokio::sync::mpsc::unbounded_channel();
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let opened = gate.clone();
    let seen = Seen::default();
    let url = mock_upstream(Router::new().route(
        "/v1/chat/completions",
        post(move |body: Bytes| {
            let (arrived, opened, seen) = (arrived.clone(), opened.clone(), seen.clone());
            async move {
                let request: Value = serde_json::from_slice(&body).unwrap();
                let last = request["messages"].as_array().unwrap().last().unwrap()["content"]
                    .as_str()
                    .unwrap()
                    .to_string();
                if last.starts_with("FILL-DISK") {
                    arrived.send(last).unwrap();
                    opened.notified().await;
                }
                chat_reply(seen, body).await
            }
        }),
    ))
    .await;
    (url, filling, gate)
}

/// Grows `ballast` until the file system has not one byte left.
fn fill(ballast: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(ballast)
        .unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::StorageFull => break,
            Err(err) => panic!("filling the disk: {err}"),
        }
    }
}
