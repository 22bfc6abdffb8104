//! Session policies: the per-key session quota (also under concurrent creates) and idle-session retention, on SQLite and PostgreSQL.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use common::Backend;
use common::{
    client, config_from_toml, mock_upstream, open_store, spawn_gateway_with_store, KEY_A, KEY_B,
};
use serde_json::{json, Value};
use sqlx::Row;

/// Replies "echo: <last user content>" to every (non-streamed) chat completion.
async fn upstream(body: Bytes) -> axum::Json<Value> {
    let request: Value = serde_json::from_slice(&body).unwrap();
    let last = request["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    let text = format!("echo: {}", last.as_str().unwrap_or("?"));
    axum::Json(json!({"id": "c", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
        "finish_reason": "stop"}]}))
}

struct Setup {
    gw: common::Gateway,
    backend: Backend,
    data_dir: std::path::PathBuf,
    /// The key names (session owners) of KEY_A and KEY_B, unique to this run.
    owner_a: String,
}

async fn setup(backend: Backend, sessions_toml: &str) -> Setup {
    let url = mock_upstream(Router::new().route("/v1/chat/completions", post(upstream))).await;
    let run = common::temp_dir("owner");
    let run = run.file_name().unwrap().to_str().unwrap();
    let (owner_a, owner_b) = (format!("a-{run}"), format!("b-{run}"));
    let config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n{sessions_toml}",
        common::named_keys_toml(&owner_a, &owner_b)
    ));
    let data_dir = config.data_dir.clone();
    let store = open_store(&config, matches!(backend, Backend::Postgres)).await;
    let gw = spawn_gateway_with_store(config, store).await;
    Setup {
        gw,
        backend,
        data_dir,
        owner_a,
    }
}

impl Setup {
    async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = client().request(method, self.gw.url(path)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POST /v1/sessions: the status and the body.
    async fn try_create(&self, key: &str) -> (u16, Value) {
        self.call(key, reqwest::Method::POST, "/v1/sessions", Some(json!({})))
            .await
    }

    async fn create(&self, key: &str) -> String {
        let (status, session) = self.try_create(key).await;
        assert_eq!(status, 201, "{session}");
        session["id"].as_str().unwrap().to_string()
    }

    async fn delete(&self, key: &str, id: &str) {
        let (status, body) = self
            .call(
                key,
                reqwest::Method::DELETE,
                &format!("/v1/sessions/{id}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["deleted"], true, "{body}");
    }

    /// One stored turn (user + assistant message) in session `id`.
    async fn say(&self, key: &str, id: &str, text: &str) {
        let response = client()
            .post(self.gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-session-id", id)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    /// GET /v1/sessions/{id}: the status and the body.
    async fn get(&self, key: &str, id: &str) -> (u16, Value) {
        self.call(
            key,
            reqwest::Method::GET,
            &format!("/v1/sessions/{id}"),
            None,
        )
        .await
    }

    async fn database(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = self.backend.database_url(&self.data_dir);
        sqlx::AnyPool::connect(&url).await.unwrap()
    }

    /// Sessions `owner` holds, counted straight from the database.
    async fn sessions_owned(&self, owner: &str) -> i64 {
        let pool = self.database().await;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE owner = $1")
            .bind(owner)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        row.try_get::<i64, _>("n").unwrap()
    }

    /// The session's row plus its message rows, straight from the database.
    async fn rows_in_database(&self, id: &str) -> i64 {
        let pool = self.database().await;
        let row = sqlx::query("SELECT (SELECT COUNT(*) FROM messages WHERE session_id = $1) + (SELECT COUNT(*) FROM sessions WHERE id = $1) AS n")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        row.try_get::<i64, _>("n").unwrap()
    }

    /// Sets columns of a session's row directly, bypassing gatewayd.
    async fn set_row(&self, id: &str, updated_at: i64, lease: Option<(&str, i64)>) {
        let pool = self.database().await;
        let (token, until) = match lease {
            Some((token, until)) => (Some(token), until),
            None => (None, 0),
        };
        let done = sqlx::query(
            "UPDATE sessions SET updated_at = $1, lease_token = $2, lease_until_ms = $3 WHERE id = $4",
        )
        .bind(updated_at)
        .bind(token)
        .bind(until)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
        assert_eq!(done.rows_affected(), 1);
        pool.close().await;
    }

    async fn purge_idle(&self, idle: Duration) -> u64 {
        self.gw
            .state
            .sessions
            .as_ref()
            .unwrap()
            .purge_idle(idle)
            .await
            .unwrap()
    }
}

fn assert_limit_reached(status: u16, body: &Value) {
    assert_eq!(status, 429, "{body}");
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{body}"));
    let mut fields: Vec<&str> = error.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["code", "message", "param", "type"], "{body}");
    assert_eq!(error["code"], "session_limit_reached", "{body}");
    assert_eq!(error["type"], "rate_limit_error", "{body}");
    assert!(error["param"].is_null(), "{body}");
    assert!(
        error["message"].as_str().unwrap().contains('3'),
        "the message names the limit: {body}"
    );
}

/// (seconds, milliseconds) since the Unix epoch.
fn now() -> (i64, i64) {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (since.as_secs() as i64, since.as_millis() as i64)
}

on_both_backends!(
    quota_refuses_the_key_over_its_limit,
    quota_holds_under_concurrent_creates,
    idle_sessions_are_purged_unless_leased,
);

async fn quota_refuses_the_key_over_its_limit(backend: Backend) {
    let s = setup(backend, "[sessions]\nmax_sessions_per_key = 3\n").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(s.create(KEY_A).await);
    }
    let (status, body) = s.try_create(KEY_A).await;
    assert_limit_reached(status, &body);
    assert_eq!(s.sessions_owned(&s.owner_a).await, 3);

    // The quota is per key: another key still creates.
    s.create(KEY_B).await;

    // Deleting one frees a place, and only one.
    s.delete(KEY_A, &ids[1]).await;
    s.create(KEY_A).await;
    let (status, body) = s.try_create(KEY_A).await;
    assert_limit_reached(status, &body);
    assert_eq!(s.sessions_owned(&s.owner_a).await, 3);
}

async fn quota_holds_under_concurrent_creates(backend: Backend) {
    let s = setup(backend, "[sessions]\nmax_sessions_per_key = 3\n").await;
    let attempts = (0..10).map(|_| s.try_create(KEY_A));
    let results = futures_util::future::join_all(attempts).await;
    let created: Vec<&str> = results
        .iter()
        .filter(|(status, _)| *status == 201)
        .map(|(_, body)| body["id"].as_str().unwrap())
        .collect();
    assert_eq!(created.len(), 3, "{results:?}");
    for (status, body) in results.iter().filter(|(status, _)| *status != 201) {
        assert_limit_reached(*status, body);
    }
    assert_eq!(s.sessions_owned(&s.owner_a).await, 3);
    let (status, list) = s
        .call(KEY_A, reqwest::Method::GET, "/v1/sessions", None)
        .await;
    assert_eq!(status, 200);
    let mut listed: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    let mut created = created;
    listed.sort_unstable();
    created.sort_unstable();
    assert_eq!(listed, created);
}

async fn idle_sessions_are_purged_unless_leased(backend: Backend) {
    const DAY: Duration = Duration::from_secs(86_400);
    let s = setup(backend, "").await;
    let recent = s.create(KEY_A).await;
    let old = s.create(KEY_A).await;
    let leased = s.create(KEY_A).await;
    for id in [&recent, &old, &leased] {
        s.say(KEY_A, id, "hello").await;
        assert_eq!(s.rows_in_database(id).await, 3, "session row + 2 messages");
    }

    // Sessions in use are never purged. (The shared PostgreSQL database may hold idle
    // sessions from earlier runs; this first purge clears them so the count below is ours.)
    let first = s.purge_idle(DAY).await;
    if matches!(backend, Backend::Sqlite) {
        assert_eq!(first, 0);
    }
    for id in [&recent, &old, &leased] {
        assert_eq!(s.rows_in_database(id).await, 3);
    }

    let (now_secs, now_ms) = now();
    let three_days_ago = now_secs - 3 * 86_400;
    s.set_row(&old, three_days_ago, None).await;
    s.set_row(&leased, three_days_ago, Some(("x", now_ms + 60_000)))
        .await;

    assert_eq!(s.purge_idle(DAY).await, 1);
    assert_eq!(
        s.rows_in_database(&old).await,
        0,
        "session and messages gone"
    );
    assert_eq!(s.get(KEY_A, &old).await.0, 404);
    assert_eq!(s.rows_in_database(&recent).await, 3);
    let (status, kept) = s.get(KEY_A, &recent).await;
    assert_eq!(status, 200);
    assert_eq!(kept["messages"].as_array().unwrap().len(), 2);
    assert_eq!(s.rows_in_database(&leased).await, 3, "a live lease is kept");
    assert_eq!(s.get(KEY_A, &leased).await.0, 200);

    // Once the lease has run out, the idle session goes too.
    s.set_row(&leased, three_days_ago, Some(("x", now_ms - 1_000)))
        .await;
    assert_eq!(s.purge_idle(DAY).await, 1);
    assert_eq!(s.rows_in_database(&leased).await, 0);
    assert_eq!(s.get(KEY_A, &leased).await.0, 404);
    assert_eq!(s.rows_in_database(&recent).await, 3);
}
