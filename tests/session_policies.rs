//! Session policies: the per-key session quota (also under concurrent creates) and idle-session retention, on SQLite and PostgreSQL.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::sessions::{setup, Setup};
use common::{assert_openai_error, Backend, KEY_A, KEY_B};
use serde_json::{json, Value};
use sqlx::Row;

/// DELETE /v1/sessions/{id}, which must succeed.
async fn delete(s: &Setup, key: &str, id: &str) {
    let (status, body) = s
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

/// GET /v1/sessions/{id}: the status and the body.
async fn get(s: &Setup, key: &str, id: &str) -> (u16, Value) {
    s.call(
        key,
        reqwest::Method::GET,
        &format!("/v1/sessions/{id}"),
        None,
    )
    .await
}

/// Sessions `owner` holds, counted straight from the database.
async fn sessions_owned(s: &Setup, owner: &str) -> i64 {
    let pool = s.database().await;
    let row = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE owner = $1")
        .bind(owner)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    row.try_get::<i64, _>("n").unwrap()
}

/// Sets columns of a session's row directly, bypassing gatewayd.
async fn set_row(s: &Setup, id: &str, updated_at: i64, lease: Option<(&str, i64)>) {
    let pool = s.database().await;
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

async fn purge_idle(s: &Setup, idle: Duration) -> u64 {
    s.gw.state
        .sessions
        .as_ref()
        .unwrap()
        .purge_idle(idle)
        .await
        .unwrap()
}

fn assert_limit_reached(status: u16, body: &Value) {
    assert_eq!(status, 429, "{body}");
    assert_openai_error(body, "rate_limit_error", "session_limit_reached");
    assert!(
        body["error"]["message"].as_str().unwrap().contains('3'),
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
        ids.push(s.create(KEY_A, json!({})).await);
    }
    let (status, body) = s.try_create(KEY_A, json!({})).await;
    assert_limit_reached(status, &body);
    assert_eq!(sessions_owned(&s, &s.owner_a).await, 3);

    // The quota is per key: another key still creates.
    s.create(KEY_B, json!({})).await;

    // Deleting one frees a place, and only one.
    delete(&s, KEY_A, &ids[1]).await;
    s.create(KEY_A, json!({})).await;
    let (status, body) = s.try_create(KEY_A, json!({})).await;
    assert_limit_reached(status, &body);
    assert_eq!(sessions_owned(&s, &s.owner_a).await, 3);
}

async fn quota_holds_under_concurrent_creates(backend: Backend) {
    let s = setup(backend, "[sessions]\nmax_sessions_per_key = 3\n").await;
    let attempts = (0..10).map(|_| s.try_create(KEY_A, json!({})));
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
    assert_eq!(sessions_owned(&s, &s.owner_a).await, 3);
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
    let recent = s.create(KEY_A, json!({})).await;
    let old = s.create(KEY_A, json!({})).await;
    let leased = s.create(KEY_A, json!({})).await;
    for id in [&recent, &old, &leased] {
        assert_eq!(s.say(KEY_A, id, "m", "hello", false).await.status(), 200);
        assert_eq!(s.rows_in_database(id).await, 3, "session row + 2 messages");
    }

    // Sessions in use are never purged. (The shared PostgreSQL database may hold idle
    // sessions from earlier runs; this first purge clears them so the count below is ours.)
    let first = purge_idle(&s, DAY).await;
    if matches!(backend, Backend::Sqlite) {
        assert_eq!(first, 0);
    }
    for id in [&recent, &old, &leased] {
        assert_eq!(s.rows_in_database(id).await, 3);
    }

    let (now_secs, now_ms) = now();
    let three_days_ago = now_secs - 3 * 86_400;
    set_row(&s, &old, three_days_ago, None).await;
    set_row(&s, &leased, three_days_ago, Some(("x", now_ms + 60_000))).await;

    assert_eq!(purge_idle(&s, DAY).await, 1);
    assert_eq!(
        s.rows_in_database(&old).await,
        0,
        "session and messages gone"
    );
    assert_eq!(get(&s, KEY_A, &old).await.0, 404);
    assert_eq!(s.rows_in_database(&recent).await, 3);
    let (status, kept) = get(&s, KEY_A, &recent).await;
    assert_eq!(status, 200);
    assert_eq!(kept["messages"].as_array().unwrap().len(), 2);
    assert_eq!(s.rows_in_database(&leased).await, 3, "a live lease is kept");
    assert_eq!(get(&s, KEY_A, &leased).await.0, 200);

    // Once the lease has run out, the idle session goes too.
    set_row(&s, &leased, three_days_ago, Some(("x", now_ms - 1_000))).await;
    assert_eq!(purge_idle(&s, DAY).await, 1);
    assert_eq!(s.rows_in_database(&leased).await, 0);
    assert_eq!(get(&s, KEY_A, &leased).await.0, 404);
    assert_eq!(s.rows_in_database(&recent).await, 3);
}
