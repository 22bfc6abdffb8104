//! /v1/models and /v1/models/{id} against mock upstreams: upstream fields kept, config-order
//! dedupe, concurrent listing with its own timeout, failures reported (502) and not cached.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{client, config_from_toml, mock_upstream, refused_upstream, spawn_gateway, KEY_A};
use serde_json::{json, Value};

fn upstream(name: &str, url: &str, models: &str, extra: &str) -> String {
    format!("[[upstreams]]\nname = \"{name}\"\nbase_url = \"{url}\"\nmodels = {models}\n{extra}\n")
}

async fn gateway(upstreams: &str) -> common::Gateway {
    let toml = format!("{}\n{upstreams}", common::two_keys_toml());
    spawn_gateway(config_from_toml(&toml)).await
}

async fn get_json(gw: &common::Gateway, path: &str) -> (StatusCode, Value) {
    let response = client()
        .get(gw.url(path))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.json().await.unwrap())
}

/// An upstream listing `models` as its /v1/models.
async fn listing(models: Value) -> String {
    mock_upstream(Router::new().route(
        "/v1/models",
        get(move || {
            let models = models.clone();
            async move { axum::Json(json!({"object": "list", "data": models})) }
        }),
    ))
    .await
}

fn ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn retrieve_configured_alias_and_listed_ids_with_slashes() {
    let url = listing(json!([
        {"id": "meta-llama/Llama-3.1-8B", "object": "model", "created": 1_700_000_000,
         "owned_by": "meta", "max_model_len": 131072},
        {"id": "other/model", "object": "model", "created": 1}
    ]))
    .await;
    let gw = gateway(&format!(
        "{}{}",
        upstream(
            "cloud",
            &url,
            r#"["gpt-4o-mini"]"#,
            r#"aliases = { fast = "gpt-4o-mini" }"#
        ),
        upstream("local", &url, r#"["meta-llama/*"]"#, "")
    ))
    .await;

    let (status, model) = get_json(&gw, "/v1/models/gpt-4o-mini").await;
    assert_eq!(status, 200);
    assert_eq!(
        (model["id"].as_str(), model["object"].as_str()),
        (Some("gpt-4o-mini"), Some("model"))
    );
    assert_eq!(model["owned_by"], "cloud");
    assert!(
        model["created"].as_u64().unwrap() > 1_600_000_000,
        "{model}"
    );

    let (status, alias) = get_json(&gw, "/v1/models/fast").await;
    assert_eq!(
        (status, alias["id"].as_str()),
        (StatusCode::OK, Some("fast"))
    );

    let (status, llama) = get_json(&gw, "/v1/models/meta-llama/Llama-3.1-8B").await;
    assert_eq!(status, 200);
    assert_eq!(
        llama,
        json!({"id": "meta-llama/Llama-3.1-8B", "object": "model", "created": 1_700_000_000,
               "owned_by": "meta", "max_model_len": 131072})
    );

    for missing in [
        "/v1/models/gpt-5",
        "/v1/models/meta-llama/Unknown",
        "/v1/models/other/model",
    ] {
        let (status, error) = get_json(&gw, missing).await;
        assert_eq!(status, 404, "{missing}");
        assert_eq!(error["error"]["code"], "model_not_found");
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }

    let (status, list) = get_json(&gw, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(
        ids(&list),
        ["gpt-4o-mini", "fast", "meta-llama/Llama-3.1-8B"]
    );
    assert_eq!(list["data"][2]["max_model_len"], 131072);
}

#[tokio::test]
async fn duplicates_resolve_in_config_order() {
    let url = listing(json!([{"id": "shared", "owned_by": "zeta-org", "created": 5}])).await;
    let gw = gateway(&format!(
        "{}{}",
        upstream("zeta", &url, r#"["shared-exact", "shared*"]"#, ""),
        upstream("alpha", &url, r#"["shared-exact", "*"]"#, "")
    ))
    .await;
    let (_, list) = get_json(&gw, "/v1/models").await;
    assert_eq!(ids(&list), ["shared-exact", "shared"]);
    assert_eq!(list["data"][0]["owned_by"], "zeta");
    assert_eq!(list["data"][1]["owned_by"], "zeta-org");
    assert_eq!(list["data"][1]["created"], 5);
}

/// Two pattern upstreams that each answer only once the other has been asked: queried
/// one after the other, the first would wait forever; queried together, both answer.
#[tokio::test]
async fn pattern_upstreams_are_listed_concurrently() {
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let waiting = |id: &'static str| {
        let barrier = barrier.clone();
        Router::new().route(
            "/v1/models",
            get(move || {
                let barrier = barrier.clone();
                async move {
                    barrier.wait().await;
                    axum::Json(json!({"object": "list", "data": [{"id": id, "created": 1}]}))
                }
            }),
        )
    };
    let a = mock_upstream(waiting("a-model")).await;
    let b = mock_upstream(waiting("b-model")).await;
    let gw = gateway(&format!(
        "{}{}",
        upstream("a", &a, r#"["a-*"]"#, "models_timeout_secs = 30"),
        upstream("b", &b, r#"["b-*"]"#, "models_timeout_secs = 30")
    ))
    .await;
    let (status, list) = get_json(&gw, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&list), ["a-model", "b-model"]);
}

/// A silent upstream is given up after `models_timeout_secs`, not `first_byte_timeout_secs`;
/// what is configured is still served, and with nothing else to serve the answer is 502.
#[tokio::test]
async fn silent_or_down_upstreams_are_reported_not_hidden() {
    let silent = mock_upstream(
        Router::new().route("/v1/models", get(std::future::pending::<axum::Json<Value>>)),
    )
    .await;
    let down = refused_upstream().await;
    let gw = gateway(&format!(
        "{}{}{}",
        upstream(
            "silent",
            &silent,
            r#"["*"]"#,
            "models_timeout_secs = 1\nfirst_byte_timeout_secs = 600"
        ),
        upstream("down", &down, r#"["*"]"#, ""),
        upstream("fixed", &down, r#"["fixed-model"]"#, "")
    ))
    .await;
    let started = std::time::Instant::now();
    let (status, list) = get_json(&gw, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&list), ["fixed-model"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "models_timeout_secs ignored"
    );

    let gw = gateway(&format!(
        "{}{}",
        upstream("silent", &silent, r#"["*"]"#, "models_timeout_secs = 1"),
        upstream("down", &down, r#"["*"]"#, "")
    ))
    .await;
    let (status, error) = get_json(&gw, "/v1/models").await;
    assert_eq!(status, 502);
    assert_eq!(error["error"]["code"], "upstream_error");
    let text = error.to_string();
    assert!(!text.contains("127.0.0.1"), "{text}");
    let (status, _) = get_json(&gw, "/v1/models/some-model").await;
    assert_eq!(
        status, 502,
        "not found would be a guess when no upstream answered"
    );
}

#[tokio::test]
async fn a_failed_listing_is_not_cached() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let url = mock_upstream(Router::new().route(
        "/v1/models",
        get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response()
                } else {
                    axum::Json(json!({"object": "list", "data": [{"id": "late-model"}]}))
                        .into_response()
                }
            }
        }),
    ))
    .await;
    let gw = gateway(&upstream("flaky", &url, r#"["*"]"#, "")).await;
    let (status, _) = get_json(&gw, "/v1/models").await;
    assert_eq!(status, 502);
    let (status, list) = get_json(&gw, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&list), ["late-model"]);
    assert_eq!(list["data"][0]["owned_by"], "flaky");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A catch-all upstream whose list lacks an id it serves (lists are often partial): the
/// gateway asks it for `/models/{id}` before answering 404. An id it does not know is an
/// OpenAI-shaped 404; a lookup that fails is a 502 that does not show the upstream's URL.
#[tokio::test]
async fn a_catch_all_upstream_is_asked_for_an_id_its_list_lacks() {
    let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = asked.clone();
    let url = mock_upstream(
        Router::new()
            .route(
                "/v1/models",
                get(|| async { axum::Json(json!({"object": "list", "data": [{"id": "listed"}]})) }),
            )
            .route(
                "/v1/models/{*id}",
                get(move |axum::extract::Path(id): axum::extract::Path<String>| {
                    seen.lock().unwrap().push(id.clone());
                    async move {
                        match id.as_str() {
                            "gpt-4o-mini" | "org/unlisted" => axum::Json(
                                json!({"id": id, "object": "model", "created": 7, "owned_by": "openai"}),
                            )
                            .into_response(),
                            "broken" => (StatusCode::INTERNAL_SERVER_ERROR, "no").into_response(),
                            _ => (
                                StatusCode::NOT_FOUND,
                                axum::Json(json!({"error": {"message": "no such model"}})),
                            )
                                .into_response(),
                        }
                    }
                }),
            ),
    )
    .await;
    let gw = gateway(&upstream("cloud", &url, r#"["*"]"#, "")).await;

    let (status, model) = get_json(&gw, "/v1/models/gpt-4o-mini").await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["id"], "gpt-4o-mini");
    assert_eq!(model["created"], 7);
    assert_eq!(model["owned_by"], "openai");
    let (status, model) = get_json(&gw, "/v1/models/org/unlisted").await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["id"], "org/unlisted");

    let (status, error) = get_json(&gw, "/v1/models/absent").await;
    assert_eq!(status, 404);
    common::assert_openai_error(&error, "invalid_request_error", "model_not_found");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'absent'"));

    let (status, error) = get_json(&gw, "/v1/models/broken").await;
    assert_eq!(status, 502);
    common::assert_openai_error(&error, "upstream_error", "upstream_error");
    let text = error.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains(&url),
        "{text}"
    );

    // A listed id is answered from the list, without asking.
    let (status, _) = get_json(&gw, "/v1/models/listed").await;
    assert_eq!(status, 200);
    assert_eq!(
        *asked.lock().unwrap(),
        ["gpt-4o-mini", "org/unlisted", "absent", "broken"]
    );
}
