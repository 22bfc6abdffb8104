//! The bytes clients get from the Responses translation, pinned: events, response objects and stored messages compared whole with recorded output (ids normalised).

use serde_json::{json, Value};

use super::output::chat_messages;
use super::responses::{translate, ToolPolicy};
use super::responses_reply::{outcome_from_reply, response_object, ResponseMeta};
use super::responses_stream::StreamTranslator;
use crate::gateway::decode::{ChatDecoder, Reply};

/// A turn's metadata from a request body, created at 1.
fn meta(body: Value) -> ResponseMeta {
    let t = translate(body.to_string().as_bytes(), ToolPolicy::Drop).unwrap();
    ResponseMeta::new(&t, 1)
}

fn plain() -> ResponseMeta {
    meta(json!({"model": "gpt-4o-mini", "input": "hi", "store": false}))
}

/// A request that echoes every field the response object reports.
fn echoing() -> ResponseMeta {
    meta(
        json!({"model": "m\"odel", "input": "hi", "instructions": "be \"brief\"\n",
        "max_output_tokens": 50, "temperature": 0.20, "top_p": 0.9, "user": "u1",
        "metadata": {"k": "v"}, "parallel_tool_calls": false, "tool_choice": "required",
        "text": {"format": {"type": "json_object"}}, "reasoning": {"effort": "low"},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "conversation": {"id": "conv_1"}}),
    )
}

fn continuing() -> ResponseMeta {
    meta(json!({"model": "m", "input": "hi", "previous_response_id": "resp_prev"}))
}

/// Ids made by the gateway (`prefix_` + 32 hex digits) → `prefix_N`, numbered by first
/// appearance, so recorded output compares whole while ids still have to match.
fn normalised(text: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for prefix in ["resp_", "msg_", "fc_", "call_"] {
            let Some(tail) = rest.strip_prefix(prefix) else {
                continue;
            };
            let hex = tail.get(..32).unwrap_or("");
            let boundary = !tail[hex.len()..].starts_with(|c: char| c.is_ascii_alphanumeric());
            if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && boundary {
                let id = &rest[..prefix.len() + 32];
                let n = match seen.iter().position(|s| s == id) {
                    Some(n) => n,
                    None => {
                        seen.push(id.to_string());
                        seen.len() - 1
                    }
                };
                out.push_str(prefix);
                out.push_str(&n.to_string());
                rest = &rest[prefix.len() + 32..];
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        out.extend(chars.next());
        rest = chars.as_str();
    }
    out
}

/// A streamed turn as the client gets it, and what it stores.
fn streamed(meta: ResponseMeta, upstream: &str) -> (String, Vec<String>) {
    let mut translator = StreamTranslator::new(meta);
    let mut decoder = ChatDecoder::default();
    let mut out = Vec::new();
    for piece in upstream.as_bytes().chunks(7) {
        let mut deltas = Vec::new();
        decoder.push(piece, &mut deltas);
        out.extend(translator.push(&deltas));
    }
    let closing = translator.finish(&decoder.reply());
    out.extend(closing);
    let object = response_object(translator.meta(), translator.outcome());
    let stored = chat_messages(&translator.outcome().items);
    out.extend(translator.terminal(&object));
    (String::from_utf8(out).unwrap(), stored)
}

/// A streamed turn that fails after `upstream`.
fn failed(meta: ResponseMeta, upstream: &str, error: Value) -> String {
    let mut translator = StreamTranslator::new(meta);
    let mut decoder = ChatDecoder::default();
    let mut deltas = Vec::new();
    decoder.push(upstream.as_bytes(), &mut deltas);
    let mut out = translator.push(&deltas);
    out.extend(translator.failure(&error));
    String::from_utf8(out).unwrap()
}

/// A whole turn: the response object and what it stores.
fn whole(meta: ResponseMeta, completion: Value) -> (String, Vec<String>) {
    let body = serde_json::to_vec(&completion).unwrap();
    let reply = Reply::from_completion(&body).unwrap();
    let outcome = outcome_from_reply(&reply);
    let object = response_object(&meta, &outcome);
    let stored = chat_messages(&outcome.items);
    (String::from_utf8(object).unwrap(), stored)
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let chunk = json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {chunk}\n\n")
}

/// The recorded scenarios, each as the text it is pinned to.
fn scenarios() -> Vec<(&'static str, String)> {
    let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"prompt_tokens_details\":{\"cached_tokens\":2},\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n";
    let text_and_call = [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Hel"}), None),
        chunk(json!({"content": "lo \"q\"\n\u{e9}\u{1}</s>"}), None),
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": "{\"a"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\":1}"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 1, "function": {"name": "g\u{2028}", "arguments": ""}}]}), None),
        chunk(json!({"tool_calls": [{"index": 1, "function": {"name": "h", "arguments": "{}"}}]}), Some("tool_calls")),
        usage.to_string(),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let refusal_cut = [
        chunk(json!({"content": "partial"}), None),
        chunk(json!({"refusal": "I can't"}), None),
        chunk(json!({}), Some("length")),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let calls_only = [
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}),
            Some("content_filter"),
        ),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let call_then_refusal = [
        chunk(json!({"tool_calls": [{"index": 3, "id": "call_x", "function": {"name": "f", "arguments": "1"}}]}), None),
        chunk(json!({"refusal": "no "}), None),
        chunk(json!({"content": "after"}), None),
        chunk(json!({"refusal": "really"}), Some("stop")),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let mut out = Vec::new();
    let (events, stored) = streamed(plain(), &call_then_refusal);
    out.push(("stream call then refusal: events", events));
    out.push(("stream call then refusal: stored", stored.join("\n")));
    let (events, stored) = streamed(plain(), &text_and_call);
    out.push(("stream text and calls: events", events));
    out.push(("stream text and calls: stored", stored.join("\n")));
    let (events, stored) = streamed(echoing(), &refusal_cut);
    out.push(("stream refusal, cut: events", events));
    out.push(("stream refusal, cut: stored", stored.join("\n")));
    let (events, stored) = streamed(continuing(), &calls_only);
    out.push(("stream calls only: events", events));
    out.push(("stream calls only: stored", stored.join("\n")));
    let (events, stored) = streamed(plain(), "data: [DONE]\n\n");
    out.push(("stream empty: events", events));
    out.push(("stream empty: stored", stored.join("\n")));
    let error = json!({"error": {"message": "cut \"short\"", "type": "server_error",
        "code": "upstream_truncated", "param": null}});
    out.push((
        "stream failed: events",
        failed(echoing(), &chunk(json!({"content": "x"}), None), error),
    ));
    let error = json!({"error": {"message": "gone", "type": "server_error"}});
    out.push(("stream failed at once: events", failed(plain(), "", error)));

    let (object, stored) = whole(
        plain(),
        json!({"choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "Hi \"there\"\n\u{1}", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
            {"type": "function", "function": {"name": "g\u{e9}", "arguments": ""}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 1}}}),
    );
    out.push(("whole text and calls: object", object));
    out.push(("whole text and calls: stored", stored.join("\n")));
    let (object, stored) = whole(
        echoing(),
        json!({"choices": [{"finish_reason": "content_filter",
        "message": {"content": null, "refusal": "no"}}]}),
    );
    out.push(("whole refusal: object", object));
    out.push(("whole refusal: stored", stored.join("\n")));
    let (object, stored) = whole(
        continuing(),
        json!({"choices": [{"finish_reason": "length",
        "message": {"role": "assistant", "content": ""}}], "usage": {"prompt_tokens": 5}}),
    );
    out.push(("whole empty: object", object));
    out.push(("whole empty: stored", stored.join("\n")));
    out.into_iter()
        .map(|(name, text)| (name, normalised(&text)))
        .collect()
}

/// `testdata/shapes.txt` was written by the `Value`-based encoders these replaced: every
/// scenario's bytes must stay exactly as they were (field order, escapes, numbering).
#[test]
fn output_is_byte_for_byte_as_recorded() {
    let recorded = include_str!("testdata/shapes.txt");
    let mut sections = recorded.split("=== ").filter(|s| !s.is_empty());
    for (name, text) in scenarios() {
        let section = sections
            .next()
            .unwrap_or_else(|| panic!("{name}: not recorded"));
        let (recorded_name, recorded_text) = section.split_once('\n').unwrap();
        assert_eq!(recorded_name, name);
        let recorded_text = recorded_text.strip_suffix('\n').unwrap();
        if text != recorded_text {
            for (n, (got, want)) in text.lines().zip(recorded_text.lines()).enumerate() {
                assert_eq!(got, want, "{name}: line {n} differs");
            }
            assert_eq!(text, recorded_text, "{name}");
        }
    }
    assert!(
        sections.next().is_none(),
        "a recorded scenario is no longer run"
    );
}

#[test]
fn ids_are_normalised_by_first_appearance() {
    let id = |n: u8| format!("{:032x}", u128::from(n) * 0x1111);
    let text = format!(
        "msg_{a} fc_{b} msg_{a} call_{c}x resp_{short}",
        a = id(1),
        b = id(2),
        c = id(3),
        short = "12ab"
    );
    assert_eq!(
        normalised(&text),
        format!("msg_0 fc_1 msg_0 call_{}x resp_12ab", id(3))
    );
}
