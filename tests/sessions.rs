//! Sessions end to end, on SQLite and (when GATEWAYD_TEST_POSTGRES_URL is set) PostgreSQL.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::sessions::{setup, without_timestamps};
use common::Backend;
use common::{client, KEY_A, KEY_B};
use serde_json::{json, Value};

on_both_backends!(
    create_continue_list_get_delete,
    history_reaches_the_upstream,
    streamed_reply_is_stored_like_a_non_streamed_one,
    other_keys_cannot_see_or_touch_a_session,
    concurrent_continuations_stay_consistent,
    failed_completion_stores_nothing,
    deleted_session_rows_are_gone,
    limits_refuse_whole_turns,
    malformed_ids_and_pagination,
);

async fn create_continue_list_get_delete(backend: Backend) {
    let s = setup(backend, "").await;
    let (status, created) = s
        .call(
            KEY_A,
            reqwest::Method::POST,
            "/v1/sessions",
            Some(json!({"metadata": {"topic": "t"}})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(created["object"], "session");
    assert_eq!(created["metadata"], json!({"topic": "t"}));
    assert!(created["created_at"].as_i64().unwrap() > 1_700_000_000);
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("sess_") && id.len() == 37);

    let response = s.say(KEY_A, id, "m", "one", false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-session-id"], id);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "echo: one");

    let messages = s.messages(KEY_A, id).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "one");
    assert_eq!(messages[1]["content"], "echo: one");
    assert!(messages[1]["created_at"].is_i64());

    let (status, list) = s
        .call(KEY_A, reqwest::Method::GET, "/v1/sessions", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], id);
    assert_eq!(list["has_more"], false);

    let (status, deleted) = s
        .call(
            KEY_A,
            reqwest::Method::DELETE,
            &format!("/v1/sessions/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        deleted,
        json!({"id": id, "object": "session.deleted", "deleted": true})
    );
    let (status, _) = s
        .call(
            KEY_A,
            reqwest::Method::GET,
            &format!("/v1/sessions/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

async fn history_reaches_the_upstream(backend: Backend) {
    let s = setup(backend, "").await;
    let id = s.create(KEY_A, json!({"system": "You are terse."})).await;
    assert_eq!(s.say(KEY_A, &id, "m", "first", false).await.status(), 200);
    assert_eq!(s.say(KEY_A, &id, "m", "second", false).await.status(), 200);
    let received = s.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        received["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "echo: first"},
            {"role": "user", "content": "second"}
        ])
    );
    // Without the header nothing is stored and no history is sent.
    let plain = client()
        .post(s.gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "stateless"}]}))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("x-session-id").is_none());
    assert_eq!(
        s.seen.lock().unwrap().last().unwrap()["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.messages(KEY_A, &id).await.len(), 4);
}

async fn streamed_reply_is_stored_like_a_non_streamed_one(backend: Backend) {
    let s = setup(backend, "").await;
    let streamed = s.create(KEY_A, json!({})).await;
    let plain = s.create(KEY_A, json!({})).await;
    let response = s.say(KEY_A, &streamed, "tooly", "hello there", true).await;
    assert_eq!(response.headers()["x-session-id"], streamed.as_str());
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        s.say(KEY_A, &plain, "tooly", "hello there", false)
            .await
            .status(),
        200
    );
    let a = without_timestamps(&s.messages(KEY_A, &streamed).await);
    let b = without_timestamps(&s.messages(KEY_A, &plain).await);
    assert_eq!(a, b);
    assert_eq!(a[1]["tool_calls"][0]["function"]["arguments"], "{\"q\":1}");
}

async fn other_keys_cannot_see_or_touch_a_session(backend: Backend) {
    let s = setup(backend, "").await;
    let id = s.create(KEY_A, json!({})).await;
    let unknown = "sess_00000000000000000000000000000000";
    let (status, foreign) = s
        .call(
            KEY_B,
            reqwest::Method::GET,
            &format!("/v1/sessions/{id}"),
            None,
        )
        .await;
    let (status_unknown, missing) = s
        .call(
            KEY_B,
            reqwest::Method::GET,
            &format!("/v1/sessions/{unknown}"),
            None,
        )
        .await;
    assert_eq!((status, status_unknown), (404, 404));
    assert_eq!(foreign, missing, "existence must not be revealed");
    let response = s.say(KEY_B, &id, "m", "hijack", false).await;
    assert_eq!(response.status(), 404);
    let (status, _) = s
        .call(
            KEY_B,
            reqwest::Method::DELETE,
            &format!("/v1/sessions/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, list) = s
        .call(KEY_B, reqwest::Method::GET, "/v1/sessions", None)
        .await;
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["id"] != id.as_str()));
    // Alice still has her untouched session.
    assert_eq!(s.messages(KEY_A, &id).await.len(), 0);
    assert!(
        s.seen.lock().unwrap().is_empty(),
        "bob's call reached the upstream"
    );
}

async fn concurrent_continuations_stay_consistent(backend: Backend) {
    let s = Arc::new(setup(backend, "").await);
    let id = s.create(KEY_A, json!({})).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (s, id) = (s.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            s.say(KEY_A, &id, "m", &format!("turn-{i}"), i % 2 == 0)
                .await
                .text()
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let messages = s.messages(KEY_A, &id).await;
    assert_eq!(messages.len(), 16);
    for pair in messages.chunks(2) {
        assert_eq!(pair[0]["role"], "user");
        assert_eq!(pair[1]["role"], "assistant");
        assert_eq!(
            pair[1]["content"],
            format!("echo: {}", pair[0]["content"].as_str().unwrap())
        );
    }
    // Serialised: each turn's upstream call saw every earlier turn.
    let seen = s.seen.lock().unwrap();
    let mut lengths: Vec<usize> = seen
        .iter()
        .map(|r| r["messages"].as_array().unwrap().len())
        .collect();
    lengths.sort();
    assert_eq!(lengths, vec![1, 3, 5, 7, 9, 11, 13, 15]);
}

async fn failed_completion_stores_nothing(backend: Backend) {
    let s = setup(backend, "").await;
    let id = s.create(KEY_A, json!({})).await;
    assert_eq!(
        s.say(KEY_A, &id, "flaky", "lost", false).await.status(),
        502
    );
    assert_eq!(s.say(KEY_A, &id, "flaky", "lost", true).await.status(), 502);
    assert!(s.messages(KEY_A, &id).await.is_empty());
    // An aborted stream stores nothing either: the client leaves before the end.
    let response = s.say(KEY_A, &id, "hangy", "abandoned", true).await;
    let mut body = response.bytes_stream();
    let first = futures_util::StreamExt::next(&mut body)
        .await
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s.messages(KEY_A, &id).await.is_empty());
}

async fn deleted_session_rows_are_gone(backend: Backend) {
    let s = setup(backend, "").await;
    let id = s.create(KEY_A, json!({"system": "sys"})).await;
    assert_eq!(s.say(KEY_A, &id, "m", "x", false).await.status(), 200);
    assert_eq!(s.rows_in_database(&id).await, 3);
    let (status, _) = s
        .call(
            KEY_A,
            reqwest::Method::DELETE,
            &format!("/v1/sessions/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.rows_in_database(&id).await, 0);
}

async fn limits_refuse_whole_turns(backend: Backend) {
    let s = setup(backend, "[sessions]\nmax_messages = 3\nmax_bytes = 4096\n").await;
    let id = s.create(KEY_A, json!({})).await;
    assert_eq!(s.say(KEY_A, &id, "m", "a", false).await.status(), 200);
    let response = s.say(KEY_A, &id, "m", "b", false).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("limit"));
    assert_eq!(
        s.messages(KEY_A, &id).await.len(),
        2,
        "nothing half-written"
    );
    let other = s.create(KEY_A, json!({})).await;
    let big = "x".repeat(5000);
    assert_eq!(s.say(KEY_A, &other, "m", &big, false).await.status(), 413);
    assert!(s.messages(KEY_A, &other).await.is_empty());
}

async fn malformed_ids_and_pagination(backend: Backend) {
    let s = setup(backend, "").await;
    for bad in ["nope", "sess_123", "sess_ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ"] {
        let (status, body) = s
            .call(
                KEY_A,
                reqwest::Method::GET,
                &format!("/v1/sessions/{bad}"),
                None,
            )
            .await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"]["message"].is_string());
        assert_eq!(s.say(KEY_A, bad, "m", "x", false).await.status(), 400);
    }
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(s.create(KEY_B, json!({})).await);
    }
    let (_, page1) = s
        .call(KEY_B, reqwest::Method::GET, "/v1/sessions?limit=2", None)
        .await;
    assert_eq!(page1["has_more"], true);
    let page1_ids: Vec<&str> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        page1_ids,
        vec![ids[4].as_str(), ids[3].as_str()],
        "newest first"
    );
    let (_, page2) = s
        .call(
            KEY_B,
            reqwest::Method::GET,
            &format!("/v1/sessions?limit=10&after={}", ids[3]),
            None,
        )
        .await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 3);
    assert_eq!(page2["has_more"], false);
    let (status, _) = s
        .call(KEY_B, reqwest::Method::GET, "/v1/sessions?limit=0", None)
        .await;
    assert_eq!(status, 400);
}
