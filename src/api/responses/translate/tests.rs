//! Unit tests of the Responses ⇄ chat translations on request shapes SDKs and coding CLIs send.

use serde_json::{json, Value};

use super::responses::{chat_body, translate, ToolPolicy};
use super::responses_items::items_to_messages;
use super::responses_reply::{outcome_from_reply, response_object, Outcome, ResponseMeta};
use super::responses_stream::StreamTranslator;
use crate::gateway::decode::{ChatDecoder, Reply};

fn tr(body: Value) -> super::responses::Translated {
    translate(body.to_string().as_bytes(), ToolPolicy::Drop).unwrap()
}

fn refused(body: Value, policy: ToolPolicy) -> String {
    translate(body.to_string().as_bytes(), policy)
        .unwrap_err()
        .param
}

fn chat(t: &super::responses::Translated, context: &[String]) -> Value {
    let mut t = t.clone();
    let input = std::mem::take(&mut t.input_messages);
    serde_json::from_slice(&chat_body(&mut t, context, &input)).unwrap()
}

/// Chat messages for a list of items, as values.
fn messages(items: Value) -> Result<Vec<Value>, super::Refusal> {
    let items = serde_json::value::to_raw_value(&items).unwrap();
    Ok(items_to_messages(&items)?
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect())
}

fn object(meta: &ResponseMeta, outcome: &Outcome) -> Value {
    serde_json::from_slice(&response_object(meta, outcome)).unwrap()
}

#[test]
fn string_input_and_instructions() {
    let t = tr(
        json!({"model": "m", "input": "hi", "instructions": "be brief",
        "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u1",
        "safety_identifier": "s1", "metadata": {"a": "b"}}),
    );
    let body = chat(&t, &[r#"{"role":"user","content":"earlier"}"#.to_string()]);
    assert_eq!(
        body["messages"],
        json!([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "earlier"},
        {"role": "user", "content": "hi"}])
    );
    assert_eq!(body["max_completion_tokens"], 50);
    assert_eq!(
        (body["temperature"].clone(), body["top_p"].clone()),
        (json!(0.2), json!(0.9))
    );
    assert_eq!(
        (body["user"].clone(), body["safety_identifier"].clone()),
        (json!("u1"), json!("s1"))
    );
    assert!(
        body.get("metadata").is_none(),
        "metadata stays on the response"
    );
    assert_eq!(body["stream"], false);
    assert!(t.store);
}

#[test]
fn items_roles_parts_and_calls() {
    let messages = messages(json!([
        json!({"role": "developer", "content": "dev rules"}),
        json!({"type": "message", "role": "system", "content": [{"type": "input_text", "text": "sys"}]}),
        json!({"role": "user", "content": [{"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]}),
        json!({"type": "message", "role": "assistant", "id": "msg_1",
            "content": [{"type": "output_text", "text": "calling", "annotations": []}]}),
        json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}"}),
        json!({"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "g", "arguments": "{\"a\":1}"}),
        json!({"type": "function_call_output", "call_id": "call_1", "output": "one"}),
        json!({"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "two"}]}),
        json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"}),
        json!({"type": "function_call", "call_id": "call_3", "name": "h", "arguments": "{}"}),
    ])).unwrap();
    assert_eq!(
        messages,
        vec![
            json!({"role": "system", "content": "dev rules"}),
            json!({"role": "system", "content": "sys"}),
            json!({"role": "user", "content": [{"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]}),
            json!({"role": "assistant", "content": "calling", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{\"a\":1}"}}]}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "one"}),
            json!({"role": "tool", "tool_call_id": "call_2", "content": "two"}),
            json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_3", "type": "function", "function": {"name": "h", "arguments": "{}"}}]}),
        ]
    );
}

#[test]
fn tools_choice_format_reasoning() {
    let t = tr(json!({"model": "m", "input": "x",
        "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true},
                  {"type": "web_search"}, {"type": "namespace", "name": "ns"}],
        "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": false,
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}},
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "service_tier": "auto",
        "truncation": "disabled", "background": false, "client_metadata": {"x": "y"}}));
    let body = chat(&t, &[]);
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function":
        {"name": "f", "description": "d", "parameters": {"type": "object"}}}])
    );
    assert_eq!(t.dropped_tools, vec!["web_search", "namespace:ns"]);
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(body["parallel_tool_calls"], false);
    assert_eq!(
        body["response_format"],
        json!({"type": "json_schema",
        "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": true}})
    );
    assert_eq!(body["reasoning_effort"], "low");
    for ignored in [
        "include",
        "prompt_cache_key",
        "service_tier",
        "truncation",
        "reasoning",
        "text",
    ] {
        assert!(body.get(ignored).is_none(), "{ignored}");
    }
}

#[test]
fn refusals_name_the_parameter() {
    let base = |extra: Value| {
        let mut body = json!({"model": "m", "input": "x"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    assert_eq!(
        refused(base(json!({"background": true})), ToolPolicy::Drop),
        "background"
    );
    assert_eq!(
        refused(
            base(json!({"input": [{"type": "computer_call_output"}]})),
            ToolPolicy::Drop
        ),
        "input[0].type"
    );
    assert_eq!(
        refused(
            base(json!({"tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}})),
            ToolPolicy::Drop
        ),
        "tool_choice"
    );
    assert_eq!(
        refused(
            base(json!({"tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]})),
            ToolPolicy::Reject
        ),
        "tools[1]"
    );
    assert_eq!(
        refused(base(json!({"frobnicate": 1})), ToolPolicy::Drop),
        "frobnicate"
    );
    assert_eq!(
        refused(base(json!({"truncation": "auto"})), ToolPolicy::Drop),
        "truncation"
    );
    assert_eq!(refused(json!({"input": "x"}), ToolPolicy::Drop), "model");
    assert_eq!(
        refused(
            base(json!({"conversation": "c", "previous_response_id": "r"})),
            ToolPolicy::Drop
        ),
        "previous_response_id"
    );
    assert_eq!(
        refused(
            base(json!({"input": [{"role": "tool", "content": "x"}]})),
            ToolPolicy::Drop
        ),
        "input[0].role"
    );
    assert!(translate(b"\xff[", ToolPolicy::Drop).is_err());
}

fn meta() -> ResponseMeta {
    ResponseMeta::new(&tr(json!({"model": "m", "input": "x"})), 1)
}

#[test]
fn completion_to_response() {
    let outcome =
        outcome_from_completion(&json!({"choices": [{"index": 0, "finish_reason": "length",
        "message": {"role": "assistant", "content": "Hel", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 1}}}))
        .unwrap();
    let meta = meta();
    assert!(meta.id.starts_with("resp_") && meta.id.len() == 37);
    let response = object(&meta, &outcome);
    assert_eq!(response["status"], "incomplete");
    assert_eq!(
        response["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(
        response["output"][0]["content"][0],
        json!({"type": "output_text", "text": "Hel", "annotations": [], "logprobs": []})
    );
    assert!(response["output"][0]["id"]
        .as_str()
        .unwrap()
        .starts_with("msg_"));
    assert_eq!(response["output"][1]["call_id"], "call_9");
    assert!(response["output"][1]["id"]
        .as_str()
        .unwrap()
        .starts_with("fc_"));
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 3, "input_tokens_details": {"cached_tokens": 1},
        "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5})
    );
    let filtered = outcome_from_completion(&json!({"choices": [{"finish_reason": "content_filter",
        "message": {"content": null}}]}))
    .unwrap();
    assert_eq!(
        object(&meta, &filtered)["incomplete_details"]["reason"],
        "content_filter"
    );
    assert!(outcome_from_completion(&json!({"choices": []})).is_none());
}

fn events(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut lines = e.lines();
            let name = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_string();
            let data: Value =
                serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap())
                    .unwrap();
            assert_eq!(data["type"], name);
            data
        })
        .collect()
}

#[test]
fn stream_events_in_order_across_any_split() {
    let upstream = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n",
        "data: [DONE]\n\n");
    for size in [1, 5, upstream.len()] {
        let mut translator = StreamTranslator::new(meta());
        let mut decoder = ChatDecoder::default();
        let mut out = Vec::new();
        for piece in upstream.as_bytes().chunks(size) {
            out.extend(feed(&mut translator, &mut decoder, piece));
        }
        let closing = translator.finish(&decoder.reply());
        out.extend(closing);
        let response = response_object(translator.meta(), translator.outcome());
        out.extend(translator.terminal(&response));
        let events = events(&out);
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ],
            "split {size}"
        );
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], n as u64);
            // Every item-level event says which output item it belongs to.
            if event.get("response").is_none() {
                assert!(event.get("output_index").is_some(), "{event}");
            }
        }
        let done = &events[14]["response"];
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["usage"]["total_tokens"], 3);
        assert_eq!(events[4]["item_id"], done["output"][0]["id"]);
    }
}

#[test]
fn stream_failure_ends_with_error_and_failed() {
    let mut translator = StreamTranslator::new(meta());
    let mut decoder = ChatDecoder::default();
    let chunk = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
    let mut out = feed(&mut translator, &mut decoder, chunk);
    out.extend(
        translator.failure(&json!({"error": {"message": "cut", "code": "upstream_truncated"}})),
    );
    let events = events(&out);
    let last = events.len() - 1;
    assert_eq!(events[last - 1]["type"], "error");
    assert_eq!(events[last - 1]["code"], "upstream_truncated");
    assert_eq!(events[last]["type"], "response.failed");
    assert_eq!(events[last]["response"]["status"], "failed");
    assert_eq!(
        events[last]["response"]["error"]["code"],
        "upstream_truncated"
    );
}

/// The pipeline's order: the chunk is decoded once, and the translator gets its deltas.
fn feed(translator: &mut StreamTranslator, decoder: &mut ChatDecoder, bytes: &[u8]) -> Vec<u8> {
    let mut deltas = Vec::new();
    decoder.push(bytes, &mut deltas);
    translator.push(&deltas)
}

/// A finished completion, read the way the pipeline reads one.
fn outcome_from_completion(completion: &Value) -> Option<Outcome> {
    let body = serde_json::to_vec(completion).ok()?;
    Reply::from_completion(&body).map(|reply| outcome_from_reply(&reply))
}
