//! One rule for a session's limits, whichever route continues it: chat with `X-Session-Id`
//! and the Responses API with `conversation` (the same session) count alike.
//!
//! `[sessions] max_messages` counts the messages the session stores once the turn is in:
//! its stored history, this turn's input messages and the one reply. The system prompt is
//! stored apart and is not one of them. `max_bytes` counts the text the session stores —
//! its system prompt included, as the commit counts it — plus this turn's input. Both
//! routes refuse a turn over a limit with the same 413, before anything reaches the
//! upstream, and store nothing of it.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::sessions::{setup, without_timestamps, Setup};
use common::{assert_openai_error, client, Backend, KEY_A};
use serde_json::{json, Value};

const MAX_MESSAGES: usize = 6;
const MAX_BYTES: usize = 4096;

/// A chat turn of session `id` with these user messages: the status and the body.
async fn chat_turn(s: &Setup, id: &str, texts: &[&str]) -> (u16, Value) {
    let messages: Vec<Value> = texts
        .iter()
        .map(|t| json!({"role": "user", "content": t}))
        .collect();
    let response = client()
        .post(s.gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-session-id", id)
        .json(&json!({"model": "m", "messages": messages}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A Responses turn of the conversation that is session `id`, with these user messages.
async fn responses_turn(s: &Setup, id: &str, texts: &[&str]) -> (u16, Value) {
    let input: Vec<Value> = texts
        .iter()
        .map(|t| json!({"role": "user", "content": t}))
        .collect();
    let conversation = id.replace("sess_", "conv_");
    s.respond(
        KEY_A,
        json!({"model": "m", "conversation": conversation, "input": input}),
    )
    .await
}

/// Two sessions with this system prompt and the same two stored turns ("one", "two"):
/// one to be continued by chat, one by the Responses API.
async fn twin_sessions(s: &Setup, system: &str) -> (String, String) {
    let by_chat = s.create(KEY_A, json!({"system": system})).await;
    let by_responses = s.create(KEY_A, json!({"system": system})).await;
    for id in [&by_chat, &by_responses] {
        for text in ["one", "two"] {
            assert_eq!(s.say(KEY_A, id, "m", text, false).await.status(), 200);
        }
    }
    let stored = without_timestamps(&s.messages(KEY_A, &by_chat).await);
    assert_eq!(stored.len(), 4);
    assert_eq!(
        stored,
        without_timestamps(&s.messages(KEY_A, &by_responses).await),
        "the two sessions start from the same history"
    );
    (by_chat, by_responses)
}

/// Both routes refuse the turn with the same 413 before calling the upstream, and both
/// sessions keep exactly what they had.
async fn assert_both_refused(
    s: &Setup,
    (by_chat, by_responses): (&str, &str),
    chat: (u16, Value),
    responses: (u16, Value),
    what: &str,
) {
    let kept = without_timestamps(&s.messages(KEY_A, by_chat).await);
    assert_eq!(chat.0, 413, "chat, {what}: {}", chat.1);
    assert_eq!(responses.0, 413, "Responses, {what}: {}", responses.1);
    assert_openai_error(&chat.1, "invalid_request_error", "payload_too_large");
    assert_eq!(
        chat.1, responses.1,
        "{what}: the same refusal on both routes"
    );
    let message = chat.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{MAX_MESSAGES} messages"))
            && message.contains(&format!("{MAX_BYTES} bytes")),
        "the message names the limits: {message}"
    );
    assert_eq!(
        without_timestamps(&s.messages(KEY_A, by_responses).await),
        kept,
        "{what}: nothing of a refused turn is stored"
    );
    assert_eq!(kept.len(), 4, "{what}: nothing of a refused turn is stored");
}

/// Both routes answer the turn, send the upstream the same messages (system prompt,
/// history, the new message) and store the same six messages.
async fn assert_both_answered(
    s: &Setup,
    (by_chat, by_responses): (&str, &str),
    text: &str,
    system: &str,
) {
    let (status, body) = chat_turn(s, by_chat, &[text]).await;
    assert_eq!(status, 200, "chat: {body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("echo: {text}")
    );
    let sent_by_chat = s.last_upstream_body()["messages"].clone();

    let (status, body) = responses_turn(s, by_responses, &[text]).await;
    assert_eq!(
        status, 200,
        "Responses with `conversation` refused a turn that chat with X-Session-Id answers \
         on the same history: 4 stored + 1 input + 1 reply = {MAX_MESSAGES} messages, \
         within max_messages = {MAX_MESSAGES} (the system prompt is not a stored message): {body}"
    );
    assert_eq!(
        body["output"][0]["content"][0]["text"],
        format!("echo: {text}")
    );
    assert_eq!(
        body["conversation"]["id"],
        by_responses.replace("sess_", "conv_")
    );
    let sent_by_responses = s.last_upstream_body()["messages"].clone();

    let expected = json!([
        {"role": "system", "content": system},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "echo: two"},
        {"role": "user", "content": text},
    ]);
    assert_eq!(sent_by_chat, expected);
    assert_eq!(sent_by_responses, expected);

    let stored = without_timestamps(&s.messages(KEY_A, by_chat).await);
    assert_eq!(stored.len(), MAX_MESSAGES);
    let contents: Vec<&str> = stored
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "one",
            "echo: one",
            "two",
            "echo: two",
            text,
            &format!("echo: {text}")
        ]
    );
    let stored_by_responses = without_timestamps(&s.messages(KEY_A, by_responses).await);
    let contents_by_responses: Vec<&str> = stored_by_responses
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents_by_responses, contents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_sessions_and_conversations_share_one_limit_rule() {
    let s = setup(
        Backend::Sqlite,
        &format!("[sessions]\nmax_messages = {MAX_MESSAGES}\nmax_bytes = {MAX_BYTES}\n"),
    )
    .await;

    // max_messages. Each route is tried on the same state: first one message over the
    // limit (4 stored + 2 input + 1 reply = 7), refused; then exactly at it (4 + 1 + 1 = 6).
    let system = "You are terse.";
    let (by_chat, by_responses) = twin_sessions(&s, system).await;
    let pair = (by_chat.as_str(), by_responses.as_str());
    let calls = s.upstream_calls();
    let chat = chat_turn(&s, &by_chat, &["three", "four"]).await;
    let responses = responses_turn(&s, &by_responses, &["three", "four"]).await;
    assert_both_refused(&s, pair, chat, responses, "one message over max_messages").await;
    assert_eq!(
        s.upstream_calls(),
        calls,
        "a refused turn reaches no upstream"
    );
    assert_both_answered(&s, pair, "three", system).await;

    // max_bytes: the system prompt (3500 of the 4096 bytes) counts, on both routes. A turn
    // whose own message alone passes the limit is refused; so is a 600-byte one, which
    // would fit beside the small stored history but not beside the system prompt as well;
    // a 100-byte one is answered on both.
    let system = "s".repeat(3500);
    let (by_chat, by_responses) = twin_sessions(&s, &system).await;
    let pair = (by_chat.as_str(), by_responses.as_str());
    let calls = s.upstream_calls();
    let huge = "h".repeat(MAX_BYTES);
    let chat = chat_turn(&s, &by_chat, &[&huge]).await;
    let responses = responses_turn(&s, &by_responses, &[&huge]).await;
    assert_both_refused(&s, pair, chat, responses, "a message over max_bytes").await;
    let beside = "m".repeat(600);
    let chat = chat_turn(&s, &by_chat, &[&beside]).await;
    let responses = responses_turn(&s, &by_responses, &[&beside]).await;
    assert_both_refused(
        &s,
        pair,
        chat,
        responses,
        "600 bytes beside the system prompt",
    )
    .await;
    assert_eq!(
        s.upstream_calls(),
        calls,
        "a refused turn reaches no upstream"
    );
    assert_both_answered(&s, pair, &"m".repeat(100), &system).await;
}
