//! Group commit and the history cache: concurrent turns of many sessions are all stored as acknowledged, and a cached history never hides another instance's write.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::Arc;

use common::sessions::{create, stored_contents};
use common::upstream::{chat_upstream, contents_of};
use common::{client, config_from_toml, open_store, spawn_gateway_with_store};
use common::{Backend, KEY_A};
use serde_json::json;

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

/// One plain turn of session `id`, its body read: the status.
async fn say(gw: &common::Gateway, id: &str, text: &str) -> u16 {
    let response = common::sessions::say(gw, KEY_A, id, "m", text, false).await;
    let status = response.status().as_u16();
    response.bytes().await.unwrap();
    status
}

async fn concurrent_turns_are_all_stored(backend: Backend) {
    let (upstream, _) = chat_upstream().await;
    let config = config(&upstream, &keys());
    let db = backend.database_url(&config.data_dir);
    let store = open_store(&config, matches!(backend, Backend::Postgres)).await;
    let gw = Arc::new(spawn_gateway_with_store(config, store).await);
    let mut ids = Vec::new();
    for _ in 0..24 {
        ids.push(create(&gw, KEY_A, json!({})).await);
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
        assert_eq!(stored_contents(backend, &db, id), expected);
    }
}

on_both_backends!(
    concurrent_turns_are_all_stored,
    the_cache_follows_the_instance_s_own_changes
);

/// Two gateways on one PostgreSQL: what one instance writes, the other's cached history
/// of the session must not hide (a turn, and an item deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_writes_invalidate_the_cached_history() {
    if std::env::var("GATEWAYD_TEST_POSTGRES_URL").is_err() {
        eprintln!("GATEWAYD_TEST_POSTGRES_URL not set: two-instance test not run");
        return;
    }
    let (upstream, seen) = chat_upstream().await;
    let keys = keys();
    let config_a = config(&upstream, &keys);
    let config_b = config(&upstream, &keys);
    let a = spawn_gateway_with_store(config_a.clone(), open_store(&config_a, true).await).await;
    let b = spawn_gateway_with_store(config_b.clone(), open_store(&config_b, true).await).await;
    let id = create(&a, KEY_A, json!({})).await;
    let last_request = || contents_of(seen.lock().unwrap().last().unwrap());

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

/// One instance's own changes, on both backends: on SQLite a continuation takes its
/// session's version from the history cache, so every change made through the instance
/// must reach the cache. An item deleted, the session deleted, and turns of another key.
async fn the_cache_follows_the_instance_s_own_changes(backend: Backend) {
    let (upstream, seen) = chat_upstream().await;
    let config = config(&upstream, &keys());
    let store = open_store(&config, matches!(backend, Backend::Postgres)).await;
    let gw = spawn_gateway_with_store(config, store).await;
    let id = create(&gw, KEY_A, json!({})).await;
    let last_request = || contents_of(seen.lock().unwrap().last().unwrap());
    assert_eq!(say(&gw, &id, "one").await, 200);
    assert_eq!(say(&gw, &id, "two").await, 200); // cached at this version now
    let conversation = id.replace("sess_", "conv_");
    let deleted = client()
        .delete(gw.url(&format!("/v1/conversations/{conversation}/items/msg_1")))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert_eq!(say(&gw, &id, "three").await, 200);
    assert_eq!(
        last_request(),
        ["one", "two", "echo: two", "three"],
        "the deleted item is not sent"
    );
    // Another key never continues it, cached or not.
    let foreign = common::sessions::say(&gw, common::KEY_B, &id, "m", "x", false).await;
    assert_eq!(foreign.status().as_u16(), 404);
    let gone = client()
        .delete(gw.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert!(gone.status().is_success(), "{}", gone.status());
    let calls = seen.lock().unwrap().len();
    assert_eq!(say(&gw, &id, "four").await, 404);
    assert_eq!(seen.lock().unwrap().len(), calls, "nothing went upstream");
}
