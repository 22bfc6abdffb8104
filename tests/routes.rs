//! The route table behind the `unsupported_route` 404 (`api::unsupported::SERVED_ROUTES`)
//! matches the router both ways: every pattern in it is served, every route the source
//! registers is in it, and the 404 names what is really served.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{client, config_from_toml, spawn_gateway, KEY_A};
use gatewayd::api::unsupported::SERVED_ROUTES;
use serde_json::Value;

/// The pattern of every `.route("…", …)` under `dir`, read from the source.
fn registered_routes(dir: &Path, into: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            // The admin API is an app of its own on the admin listener, never served by
            // the client app this table describes (tests/admin_api.rs covers it).
            if !path.ends_with("admin") {
                registered_routes(&path, into);
            }
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        for (at, _) in source.match_indices(".route(") {
            let rest = source[at + ".route(".len()..].trim_start();
            let pattern = rest
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(pattern, _)| pattern)
                .unwrap_or_else(|| panic!("a route in {} is not a literal", path.display()));
            into.push(pattern.to_string());
        }
    }
}

#[test]
fn every_registered_route_is_in_the_served_table() {
    let mut registered = Vec::new();
    registered_routes(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api"),
        &mut registered,
    );
    assert!(registered.len() >= 15, "{registered:?}");
    for pattern in &registered {
        assert!(
            SERVED_ROUTES.iter().any(|(_, served)| served == pattern),
            "{pattern} is served but missing from SERVED_ROUTES (api/unsupported.rs)"
        );
    }
}

#[tokio::test]
async fn every_route_in_the_served_table_is_served() {
    let gw = spawn_gateway(config_from_toml(&common::two_keys_toml())).await;
    for (_, pattern) in SERVED_ROUTES {
        let path = pattern
            .replace("{*id}", "some/model")
            .replace("{id}", "x")
            .replace("{item_id}", "y");
        let response = client()
            .get(gw.url(&path))
            .bearer_auth(KEY_A)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            code != "unknown_route" && code != "unsupported_route",
            "{pattern} is listed as served but no route serves it: {status} {body}"
        );
    }
}

#[tokio::test]
async fn the_unsupported_route_404_names_what_is_served() {
    let gw = spawn_gateway(config_from_toml(&common::two_keys_toml())).await;
    let response = client()
        .post(gw.url("/v1/assistants"))
        .bearer_auth(KEY_A)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    common::assert_openai_error(&body, "invalid_request_error", "unsupported_route");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "gatewayd serves chat completions, completions, embeddings, models, Responses, \
             Conversations, Anthropic Messages, sessions, health and metrics; see docs/api.md."
        ),
        "{message}"
    );
}
