//! Group commit and the history cache: concurrent turns of many sessions are all stored as acknowledged, and a cached history never hides another instance's write.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use common::{client, config_from_toml, mock_upstream, open_store, spawn_gateway_with_store};
use common::{Backend, KEY_A};
use serde_json::{json, Value};

type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// Replies "echo: <last content>"; records the contents of every request's messages.
async fn echo_upstream(seen: Seen) -> String {
    mock_upstream(Router::new().route(
        "/v1/chat/completions",
        post(move |body: Bytes| {
            let seen = seen.clone();
            async move {
                let request: Value = serde_json::from_slice(&body).unwrap();
                let contents: Vec<String> = request["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["content"].as_str().unwrap_or_default().to_string())
                    .collect();
                let text = format!("echo: {}", contents.last().unwrap());
                seen.lock().unwrap().push(contents);
                axum::Json(json!({"choices": [{"index": 0,
                    "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}))
            }
        }),
    ))
    .await
}

/// Unique key names keep tests apart in a shared PostgreSQL database.
fn keys() -> String {
    let run = common::temp_dir("batches");
    let run = run.file_name().unwrap().to_str().unwrap();
    common::named_keys_toml(&format!("a-{run}"), &format!("b-{run}"))
}

fn config(upstream: &str, keys: &str) -> gatewayd::config::Config {
    config_from_toml(&format!(
        "{keys}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{upstream}\"\nmodels = [\"*\"]\n"
    ))
}

async fn create(gw: &common::Gateway) -> String {
    let response = client()
        .post(gw.url("/v1/sessions"))
        .bearer_auth(KEY_A)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn say(gw: &common::Gateway, id: &str, text: &str) -> u16 {
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-session-id", id)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    response.bytes().await.unwrap();
    status
}

/// Message contents of a session as stored, read by a separate process.
fn stored(backend: Backend, url: &str, id: &str) -> Vec<String> {
    let output = match backend {
        Backend::Sqlite => Command::new("python3")
            .args(["-c", "import sqlite3, json, sys\n\
                db = sqlite3.connect(sys.argv[1])\n\
                rows = db.execute('SELECT message FROM messages WHERE session_id = ? ORDER BY seq', (sys.argv[2],))\n\
                print('\\n'.join(json.loads(r[0])['content'] for r in rows))"])
            .arg(url.trim_start_matches("sqlite://"))
            .arg(id)
            .output()
            .unwrap(),
        Backend::Postgres => Command::new("psql")
            .arg(url)
            .arg("-tAc")
            .arg(format!(
                "SELECT message::json->>'content' FROM messages WHERE session_id = '{id}' ORDER BY seq"
            ))
            .output()
            .unwrap(),
    };
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

async fn concurrent_turns_are_all_stored(backend: Backend) {
    let upstream = echo_upstream(Seen::default()).await;
    let config = config(&upstream, &keys());
    let db = backend.database_url(&config.data_dir);
    let store = open_store(&config, matches!(backend, Backend::Postgres)).await;
    let gw = Arc::new(spawn_gateway_with_store(config, store).await);
    let mut ids = Vec::new();
    for _ in 0..24 {
        ids.push(create(&gw).await);
    }
    // Every session runs three turns in order; the sessions run all at once, so their
    // turns share group commits.
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            for turn in 0..3 {
                assert_eq!(say(&gw, &id, &format!("{id}-{turn}")).await, 200);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for id in &ids {
        let expected: Vec<String> = (0..3)
            .flat_map(|t| [format!("{id}-{t}"), format!("echo: {id}-{t}")])
            .collect();
        assert_eq!(stored(backend, &db, id), expected);
    }
}

on_both_backends!(concurrent_turns_are_all_stored);

/// Two gateways on one PostgreSQL: what one instance writes, the other's cached history
/// of the session must not hide (a turn, and an item deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_writes_invalidate_the_cached_history() {
    if std::env::var("GATEWAYD_TEST_POSTGRES_URL").is_err() {
        eprintln!("GATEWAYD_TEST_POSTGRES_URL not set: two-instance test not run");
        return;
    }
    let seen = Seen::default();
    let upstream = echo_upstream(seen.clone()).await;
    let keys = keys();
    let config_a = config(&upstream, &keys);
    let config_b = config(&upstream, &keys);
    let a = spawn_gateway_with_store(config_a.clone(), open_store(&config_a, true).await).await;
    let b = spawn_gateway_with_store(config_b.clone(), open_store(&config_b, true).await).await;
    let id = create(&a).await;
    let last_request = || seen.lock().unwrap().last().unwrap().clone();

    assert_eq!(say(&a, &id, "one").await, 200);
    assert_eq!(say(&a, &id, "two").await, 200); // A now holds the history in its cache
    assert_eq!(say(&b, &id, "three").await, 200);
    assert_eq!(say(&a, &id, "four").await, 200);
    assert_eq!(
        last_request(),
        [
            "one",
            "echo: one",
            "two",
            "echo: two",
            "three",
            "echo: three",
            "four"
        ]
    );

    // B deletes an item (the second message): A's next turn must not send it.
    let conversation = id.replace("sess_", "conv_");
    let deleted = client()
        .delete(b.url(&format!("/v1/conversations/{conversation}/items/msg_1")))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert_eq!(say(&a, &id, "five").await, 200);
    let sent = last_request();
    assert!(!sent.contains(&"echo: one".to_string()), "{sent:?}");
    assert_eq!(sent.len(), 8);
    assert_eq!(sent.last().unwrap(), "five");
}
