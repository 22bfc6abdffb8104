//! The Responses and Conversations APIs end to end over a chat-completions mock upstream, on SQLite and PostgreSQL.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use common::sessions::setup;
use common::sse::kinds;
use common::Backend;
use common::{client, config_from_toml};
use common::{KEY_A, KEY_B};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    chains_and_per_key_isolation,
    store_false_is_neither_retrievable_nor_chainable,
    conversations_are_sessions_per_key,
    truncated_stream_fails_and_stores_nothing,
);

async fn chains_and_per_key_isolation(backend: Backend) {
    let s = setup(backend, "").await;
    let (status, first) = s
        .respond(
            KEY_A,
            json!({"model": "m", "input": "one", "instructions": "be terse"}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_") && id.len() == 37);
    assert_eq!(first["output"][0]["content"][0]["text"], "echo: one");
    let (status, second) = s
        .respond(
            KEY_A,
            json!({"model": "m", "input": "two", "previous_response_id": id}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    // The whole context in one read; instructions are not carried over.
    assert_eq!(
        s.last_upstream_body()["messages"],
        json!([
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"}])
    );
    // Branching from the first response again.
    let (status, _) = s
        .respond(
            KEY_A,
            json!({"model": "m", "input": "branch", "previous_response_id": id}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        s.last_upstream_body()["messages"].as_array().unwrap().len(),
        3
    );

    let (status, got) = s
        .call(KEY_A, Method::GET, &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!((status, &got), (200, &first));
    let (status, items) = s
        .call(
            KEY_A,
            Method::GET,
            &format!("/v1/responses/{id}/input_items"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(items["data"][0]["content"], "one");

    // Another key: the same 404 as an id that never existed, for every route.
    let unknown = "resp_0123456789abcdef0123456789abcdef";
    let (_, unknown_body) = s
        .call(
            KEY_B,
            Method::GET,
            &format!("/v1/responses/{unknown}"),
            None,
        )
        .await;
    for (method, path) in [
        (Method::GET, format!("/v1/responses/{id}")),
        (Method::GET, format!("/v1/responses/{id}/input_items")),
        (Method::DELETE, format!("/v1/responses/{id}")),
    ] {
        let (status, body) = s.call(KEY_B, method, &path, None).await;
        assert_eq!((status, &body), (404, &unknown_body), "{path}");
    }
    let calls = s.upstream_calls();
    let (status, body) = s
        .respond(
            KEY_B,
            json!({"model": "m", "input": "x", "previous_response_id": id}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "previous_response_not_found");
    assert_eq!(s.upstream_calls(), calls, "nothing was sent upstream");

    let (status, deleted) = s
        .call(KEY_A, Method::DELETE, &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!((status, deleted["deleted"].clone()), (200, json!(true)));
    let (status, _) = s
        .call(KEY_A, Method::GET, &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(status, 404);
}

async fn store_false_is_neither_retrievable_nor_chainable(backend: Backend) {
    let s = setup(backend, "").await;
    let (status, unstored) = s
        .respond(KEY_A, json!({"model": "m", "input": "one", "store": false}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(unstored["store"], false);
    let id = unstored["id"].as_str().unwrap();
    let (status, _) = s
        .call(KEY_A, Method::GET, &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(status, 404);
    let calls = s.upstream_calls();
    let (status, body) = s
        .respond(
            KEY_A,
            json!({"model": "m", "input": "two", "previous_response_id": id}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "previous_response_not_found");
    assert_eq!(s.upstream_calls(), calls);
}

async fn conversations_are_sessions_per_key(backend: Backend) {
    let s = setup(backend, "").await;
    let (status, conv) = s.call(KEY_A, Method::POST, "/v1/conversations",
        Some(json!({"metadata": {"topic": "t"}, "items": [{"role": "user", "content": "hello"}]}))).await;
    assert_eq!(status, 200, "{conv}");
    let conv_id = conv["id"].as_str().unwrap().to_string();
    assert!(conv_id.starts_with("conv_"));
    for turn in ["two", "three"] {
        let (status, body) = s
            .respond(
                KEY_A,
                json!({"model": "tooly", "input": turn, "conversation": conv_id}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["conversation"]["id"], conv_id);
    }
    let messages = s.last_upstream_body()["messages"].as_array().unwrap().len();
    assert_eq!(messages, 4, "hello, two, reply with call, three");
    let (status, items) = s
        .call(
            KEY_A,
            Method::GET,
            &format!("/v1/conversations/{conv_id}/items?order=asc"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let types: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "message",
            "message",
            "message",
            "function_call",
            "message",
            "message",
            "function_call"
        ]
    );
    // The same record through the sessions API.
    let session = conv_id.replace("conv_", "sess_");
    let (status, stored) = s
        .call(KEY_A, Method::GET, &format!("/v1/sessions/{session}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(stored["messages"].as_array().unwrap().len(), 5);
    assert_eq!(stored["metadata"]["topic"], "t");

    let item = items["data"][0]["id"].as_str().unwrap().to_string();
    let calls = s.upstream_calls();
    for (method, path, body) in [
        (Method::GET, format!("/v1/conversations/{conv_id}"), None),
        (
            Method::POST,
            format!("/v1/conversations/{conv_id}"),
            Some(json!({"metadata": {}})),
        ),
        (
            Method::GET,
            format!("/v1/conversations/{conv_id}/items"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/conversations/{conv_id}/items"),
            Some(json!({"items": [{"role": "user", "content": "x"}]})),
        ),
        (
            Method::GET,
            format!("/v1/conversations/{conv_id}/items/{item}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/conversations/{conv_id}/items/{item}"),
            None,
        ),
        (Method::DELETE, format!("/v1/conversations/{conv_id}"), None),
        (
            Method::POST,
            "/v1/responses".to_string(),
            Some(json!({"model": "m", "input": "x", "conversation": conv_id})),
        ),
    ] {
        let (status, body) = s.call(KEY_B, method.clone(), &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(
            body["error"]["code"], "conversation_not_found",
            "{method} {path}"
        );
    }
    assert_eq!(s.upstream_calls(), calls);

    let (status, _) = s
        .call(
            KEY_A,
            Method::DELETE,
            &format!("/v1/conversations/{conv_id}/items/{item}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .respond(
            KEY_A,
            json!({"model": "m", "input": "four", "conversation": {"id": conv_id}}),
        )
        .await;
    assert_eq!(status, 200, "a deleted item leaves the next seq free");
    let (_, items) = s
        .call(
            KEY_A,
            Method::GET,
            &format!("/v1/conversations/{conv_id}/items?limit=100"),
            None,
        )
        .await;
    assert_eq!(items["data"].as_array().unwrap().len(), 8);
    let (status, deleted) = s
        .call(
            KEY_A,
            Method::DELETE,
            &format!("/v1/conversations/{conv_id}"),
            None,
        )
        .await;
    assert_eq!(
        (status, deleted["object"].clone()),
        (200, json!("conversation.deleted"))
    );
}

async fn truncated_stream_fails_and_stores_nothing(backend: Backend) {
    let s = setup(backend, "").await;
    let (_, conv) = s
        .call(KEY_A, Method::POST, "/v1/conversations", Some(json!({})))
        .await;
    let conv_id = conv["id"].as_str().unwrap();
    let events = s
        .stream(
            KEY_A,
            json!({"model": "cut", "input": "hi", "stream": true, "conversation": conv_id}),
        )
        .await;
    let kinds = kinds(&events);
    assert_eq!(&kinds[..2], ["response.created", "response.in_progress"]);
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["error", "response.failed"],
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"response.completed"));
    assert_eq!(events[events.len() - 2]["code"], "upstream_truncated");
    let failed = &events[events.len() - 1]["response"];
    assert_eq!(failed["status"], "failed");
    let id = failed["id"].as_str().unwrap();
    let (status, _) = s
        .call(KEY_A, Method::GET, &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(status, 404, "a failed response is not stored");
    let (_, items) = s
        .call(
            KEY_A,
            Method::GET,
            &format!("/v1/conversations/{conv_id}/items"),
            None,
        )
        .await;
    assert_eq!(
        items["data"],
        json!([]),
        "nothing was appended to the conversation"
    );
    // The conversation's lease was released: the next turn runs at once.
    let events = s
        .stream(
            KEY_A,
            json!({"model": "m", "input": "again", "stream": true, "conversation": conv_id}),
        )
        .await;
    assert_eq!(events.last().unwrap()["type"], "response.completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untranslatable_requests_get_400_naming_the_param() {
    let s = setup(Backend::Sqlite, "").await;
    for (body, param) in [
        (
            json!({"model": "m", "input": "x", "background": true}),
            "background",
        ),
        (
            json!({"model": "m", "input": [{"type": "computer_call_output", "call_id": "c"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}),
            "tool_choice",
        ),
        (
            json!({"model": "m", "input": "x", "frobnicate": true}),
            "frobnicate",
        ),
    ] {
        let (status, error) = s.respond(KEY_A, body).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["param"], param);
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(error["error"]["message"].as_str().unwrap().len() > 10);
    }
    assert_eq!(s.upstream_calls(), 0);
}

fn mixed_tools() -> Value {
    json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}},
           {"type": "web_search"}, {"type": "namespace", "name": "ns", "tools": []}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_tools_are_dropped_visibly_by_default() {
    let s = setup(Backend::Sqlite, "").await;
    let response = client()
        .post(s.gw.url("/v1/responses"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "m", "input": "x", "tools": mixed_tools()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-gatewayd-dropped-tools"],
        "web_search, namespace:ns"
    );
    let tools = s.last_upstream_body()["tools"].clone();
    assert_eq!(
        tools,
        json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_tools_can_be_rejected() {
    let s = setup(
        Backend::Sqlite,
        "[responses]\nunsupported_tools = \"reject\"\n",
    )
    .await;
    let (status, error) = s
        .respond(
            KEY_A,
            json!({"model": "m", "input": "x", "tools": mixed_tools()}),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "tools[1]");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("web_search"));
    assert_eq!(s.upstream_calls(), 0);
}

/// The shape coding CLIs send: no server state, the whole history every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coding_cli_request_is_answered_as_a_completed_stream() {
    let s = setup(Backend::Sqlite, "").await;
    let body = json!({
        "model": "tooly", "instructions": "You are a coding agent.", "store": false, "stream": true,
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sandbox: read-only"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "shell", "arguments": "{\"cmd\":\"ls\"}"},
            {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "a.rs\nb.rs"},
            {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "Two files."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "now read a.rs"}]}
        ],
        "tools": [{"type": "function", "name": "shell", "strict": false, "parameters": {"type": "object"}},
                  {"type": "web_search"}],
        "tool_choice": "auto", "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "session-123",
        "text": {"verbosity": "low"}
    });
    let events = s.stream(KEY_A, body).await;
    let kinds = kinds(&events);
    assert_eq!(kinds.last(), Some(&"response.completed"), "{kinds:?}");
    assert!(kinds.contains(&"response.output_text.delta"));
    assert!(kinds.contains(&"response.function_call_arguments.done"));
    for event in &events {
        if event.get("item_id").is_some() || event.get("item").is_some() {
            assert!(event["output_index"].is_u64(), "{event}");
        }
    }
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["store"], false);
    assert_eq!(done["output"][1]["type"], "function_call");
    assert_eq!(done["output"][1]["arguments"], "{\"q\":1}");
    assert_eq!(done["usage"]["total_tokens"], 6);

    let upstream = s.last_upstream_body();
    assert_eq!(upstream["stream"], true);
    assert_eq!(upstream["reasoning_effort"], "medium");
    assert_eq!(upstream["tools"].as_array().unwrap().len(), 1);
    assert_eq!(
        upstream["messages"],
        json!([
            {"role": "system", "content": "You are a coding agent."},
            {"role": "system", "content": "sandbox: read-only"},
            {"role": "user", "content": [{"type": "text", "text": "list files"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "shell", "arguments": "{\"cmd\":\"ls\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a.rs\nb.rs"},
            {"role": "assistant", "content": "Two files."},
            {"role": "user", "content": [{"type": "text", "text": "now read a.rs"}]},
        ])
    );
    for absent in [
        "include",
        "prompt_cache_key",
        "reasoning",
        "store",
        "input",
        "instructions",
    ] {
        assert!(
            upstream.get(absent).is_none(),
            "{absent} must not reach a chat upstream"
        );
    }
}

/// The built-in echo model answers Responses calls through the same translation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_answers_responses() {
    let config = config_from_toml(&common::two_keys_toml());
    let gw = common::spawn_gateway(config).await;
    let response: Value = client()
        .post(gw.url("/v1/responses"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "echo", "input": "ping pong"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["output"][0]["content"][0]["text"], "ping pong");
}

/// `[responses] retention_days`: responses older than the window are purged, newer ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_responses_are_purged() {
    let s = setup(Backend::Sqlite, "").await;
    let (_, fresh) = s
        .respond(KEY_A, json!({"model": "m", "input": "new"}))
        .await;
    let store = s.gw.state.sessions.clone().unwrap();
    let old = gatewayd::sessions::ResponseRecord {
        id: "resp_00000000000000000000000000000001".into(),
        created_at: 1_000,
        context: "[]".into(),
        input_items: "[]".into(),
        response: "{}".into(),
        ..Default::default()
    };
    store
        .commit("someone", None, &[], Some(&old))
        .await
        .unwrap();
    let purged = store
        .purge_responses(std::time::Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(store.response("someone", &old.id).await.is_err());
    let id = fresh["id"].as_str().unwrap();
    let (status, _) = s
        .call(KEY_A, Method::GET, &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(status, 200);
}

/// `store: false` keeps no response, but a conversation still keeps each turn's reply, whole
/// or streamed, tool calls included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstored_turn_still_joins_its_conversation() {
    let s = setup(Backend::Sqlite, "").await;
    let (status, conv) = s
        .call(KEY_A, Method::POST, "/v1/conversations", Some(json!({})))
        .await;
    assert_eq!(status, 200, "{conv}");
    let conv_id = conv["id"].as_str().unwrap().to_string();
    let (status, body) = s
        .respond(
            KEY_A,
            json!({"model": "m", "input": "one", "store": false, "conversation": conv_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let events = s
        .stream(
            KEY_A,
            json!({"model": "tooly", "input": "two", "store": false, "stream": true,
                "conversation": conv_id}),
        )
        .await;
    assert_eq!(kinds(&events).last(), Some(&"response.completed"));
    let (status, body) = s
        .respond(
            KEY_A,
            json!({"model": "m", "input": "three", "store": false, "conversation": conv_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.last_upstream_body()["messages"],
        json!([
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "echo: one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "echo: two", "tool_calls": [{"id": "call_9",
                "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]},
            {"role": "user", "content": "three"},
        ])
    );
}
