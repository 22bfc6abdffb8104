//! Per-key policy from `[[keys]]`: a model outside the key's `models` is refused with 403 on every protocol and hidden from `/v1/models`; a disabled or expired key gets 401 and is not counted as a failed authentication.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::chat_upstream;
use common::{assert_openai_error, client, config_from_toml, sha256_hex, spawn_gateway, Gateway};
use common::{KEY_A, KEY_B};
use serde_json::{json, Value};

const KEY_OFF: &str = "gwd_Hn4Rt8Vx2Bz6Lq0Wm3Ks7Dp1Fy5Gc9Ja";
const KEY_OLD: &str = "gwd_Pk5Ew9Sj3Ub7Xo1Ya4Ni8Tf2Mh6Cq0Lr";

fn entry(name: &str, key: &str, policy: &str) -> String {
    format!(
        "[[keys]]\nname = \"{name}\"\nsha256 = \"{}\"\n{policy}\n",
        sha256_hex(key)
    )
}

async fn gateway() -> (Gateway, common::upstream::Seen) {
    let (url, seen) = chat_upstream().await;
    let toml = format!(
        "[limits]\nfailed_auth_per_minute = 2\n\n{}{}{}{}\
         [[upstreams]]\nname = \"chat\"\nbase_url = \"{url}\"\n\
         models = [\"gpt-4o\", \"gpt-4o-mini\", \"o3\"]\n",
        entry("alice", KEY_A, "models = [\"gpt-4o*\"]"),
        entry("bob", KEY_B, ""),
        entry("off", KEY_OFF, "disabled = true"),
        entry("old", KEY_OLD, "expires_at = \"2020-01-01T00:00:00Z\""),
    );
    (spawn_gateway(config_from_toml(&toml)).await, seen)
}

async fn post(gw: &Gateway, path: &str, key: &str, body: Value) -> (u16, Value) {
    let mut request = client().post(gw.url(path)).bearer_auth(key);
    if path.starts_with("/v1/messages") {
        request = request.header("anthropic-version", "2023-06-01");
    }
    let response = request.json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn get(gw: &Gateway, path: &str, key: &str) -> (u16, Value) {
    let response = client()
        .get(gw.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disallowed_model_is_refused_on_every_protocol() {
    let (gw, seen) = gateway().await;
    let routes = [
        ("/v1/chat/completions", chat("o3")),
        ("/v1/responses", json!({"model": "o3", "input": "hi"})),
        ("/v1/completions", json!({"model": "o3", "prompt": "hi"})),
        ("/v1/embeddings", json!({"model": "o3", "input": "hi"})),
        (
            "/v1/messages/count_tokens",
            json!({"model": "o3", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "o3", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ];
    for (path, body) in routes {
        let (status, body) = post(&gw, path, KEY_A, body).await;
        assert_eq!(status, 403, "{path}: {body}");
        match path {
            // Anthropic's error shape: `permission_error` is its 403.
            "/v1/messages" | "/v1/messages/count_tokens" => {
                assert_eq!(body["error"]["type"], "permission_error", "{body}");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains("may not use the model 'o3'"), "{body}");
            }
            _ => assert_openai_error(&body, "invalid_request_error", "model_not_allowed"),
        }
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "a refused model reached the upstream"
    );
    let (status, body) = post(&gw, "/v1/chat/completions", KEY_A, chat("gpt-4o-mini")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&gw, "/v1/chat/completions", KEY_B, chat("o3")).await;
    assert_eq!(
        status, 200,
        "a key without `models` may use every model: {body}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_and_found_per_key() {
    let (gw, _) = gateway().await;
    let ids = |body: &Value| -> Vec<String> {
        let mut ids: Vec<String> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let (status, alice) = get(&gw, "/v1/models", KEY_A).await;
    assert_eq!(status, 200, "{alice}");
    assert_eq!(ids(&alice), ["gpt-4o", "gpt-4o-mini"]);
    let (_, bob) = get(&gw, "/v1/models", KEY_B).await;
    assert_eq!(ids(&bob), ["gpt-4o", "gpt-4o-mini", "o3"]);
    let (status, body) = get(&gw, "/v1/models/o3", KEY_A).await;
    assert_eq!(status, 404, "{body}");
    assert_openai_error(&body, "invalid_request_error", "model_not_found");
    let (status, body) = get(&gw, "/v1/models/gpt-4o", KEY_A).await;
    assert_eq!((status, body["id"].as_str()), (200, Some("gpt-4o")));
    let (status, _) = get(&gw, "/v1/models/o3", KEY_B).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_and_expired_keys_get_401_without_spending_the_failed_auth_quota() {
    let (gw, seen) = gateway().await;
    // The quota is 2 failures a minute; these are well past it.
    for _ in 0..4 {
        for (key, says) in [(KEY_OFF, "disabled"), (KEY_OLD, "expired")] {
            let (status, body) = post(&gw, "/v1/chat/completions", key, chat("o3")).await;
            assert_eq!(status, 401, "{body}");
            assert_openai_error(&body, "invalid_request_error", "key_not_usable");
            let text = body.to_string();
            assert!(text.contains(says), "{text}");
            assert!(!text.contains(&key[4..12]), "the key leaked: {text}");
        }
    }
    let (status, _) = get(&gw, "/v1/models", KEY_OLD).await;
    assert_eq!(status, 401);
    assert!(seen.lock().unwrap().is_empty());
    // Not throttled: a valid key from the same address still gets through, and a wrong
    // key is a plain 401 (the first failure of the quota), not a 429.
    let (status, body) = post(&gw, "/v1/chat/completions", KEY_B, chat("o3")).await;
    assert_eq!(status, 200, "{body}");
    let wrong = "gwd_Wq3Ze7Rt1Yu5Io9Pa2Sd6Fg0Hj4Kl8Xc";
    let (status, body) = post(&gw, "/v1/chat/completions", wrong, chat("o3")).await;
    assert_eq!(status, 401, "{body}");
    assert_openai_error(&body, "invalid_request_error", "invalid_api_key");
}
