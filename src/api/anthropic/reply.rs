//! Shapes an upstream's chat answer for an Anthropic client: the message, its stop reason, tool ids and errors (pure).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::api::responses::translate::random_id;
use crate::gateway::decode::Reply;

/// The prefix Anthropic gives tool call ids.
const TOOLU: &str = "toolu_";

/// Anthropic `stop_reason` for a chat finish reason. Chat says `stop` both for the end of
/// a turn and for a matched stop sequence, and does not say which sequence matched, so
/// `stop` is always `end_turn` (and `stop_sequence` is always null).
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A chat tool call's id: the upstream's, or — when it sent none — one made from the
/// message id and the call's position, so the streamed block, the whole reply and the
/// stored session message all carry the same id, and the client's `tool_result` matches.
pub fn call_id(upstream_id: Option<&str>, message_id: &str, position: u64) -> String {
    match upstream_id.filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => format!("call_{}_{position}", message_id.trim_start_matches("msg_")),
    }
}

/// The assistant message with an id on every tool call ([`call_id`]): what a session
/// stores, and what the client's ids are made from.
pub fn with_call_ids(message: &Value, message_id: &str) -> Value {
    let mut message = message.clone();
    let calls = message.get_mut("tool_calls").and_then(Value::as_array_mut);
    for (position, call) in calls.into_iter().flatten().enumerate() {
        let id = call_id(
            call.get("id").and_then(Value::as_str),
            message_id,
            position as u64,
        );
        if let Some(object) = call.as_object_mut() {
            object.insert("id".into(), Value::String(id));
        }
    }
    message
}

/// The `toolu_…` id a client sees for an upstream's chat tool call id.
///
/// The rule, which makes a tool round trip exact: a non-empty upstream id `U` made only
/// of Anthropic's id alphabet (`[A-Za-z0-9_-]`) becomes `"toolu_" + U` (always prefixed,
/// even when `U` already starts with `toolu_`). Any other id (`functions.get_weather:0`,
/// as some servers make them) becomes `"toolu_b64_"` + its unpadded base64url, which uses
/// only that alphabet. [`chat_call_id`] reverses both, so the upstream gets back exactly
/// the id it issued, and a stored chat message matches the client's `tool_result`. An
/// empty or absent id gets a random one: call this once per tool call and keep the result.
pub fn tool_use_id(upstream_id: Option<&str>) -> String {
    match upstream_id.filter(|id| !id.is_empty()) {
        Some(id) if id.chars().all(is_id_char) => format!("{TOOLU}{id}"),
        Some(id) => format!("{TOOLU}{ENCODED}{}", URL_SAFE_NO_PAD.encode(id)),
        None => random_id("toolu"),
    }
}

/// Anthropic's tool id alphabet.
fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Marks an id carried as base64url because it had other characters.
const ENCODED: &str = "b64_";

/// The upstream's chat call id for a `tool_use` id (see [`tool_use_id`]). An id the
/// gateway did not make is kept as it is. (An upstream id that itself reads
/// `b64_<base64url of a string with other characters>` would be decoded: no server is
/// known to make such ids.)
pub fn chat_call_id(tool_use_id: &str) -> std::borrow::Cow<'_, str> {
    let Some(rest) = tool_use_id.strip_prefix(TOOLU).filter(|r| !r.is_empty()) else {
        return tool_use_id.into();
    };
    let decoded = rest
        .strip_prefix(ENCODED)
        .and_then(|encoded| URL_SAFE_NO_PAD.decode(encoded).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|id| !id.is_empty() && !id.chars().all(is_id_char));
    match decoded {
        Some(id) => id.into(),
        None => rest.into(),
    }
}

/// A tool call's `input`: its JSON arguments as an object; `{}` when empty, and `{}` with a
/// warning when they are not a JSON object.
pub fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ => {
            tracing::warn!(
                bytes = arguments.len(),
                "tool call arguments are not a JSON object; sent as {{}}"
            );
            Value::Object(Map::new())
        }
    }
}

/// The `usage` object of a message from a chat reply's usage (zeros when it has none).
pub fn usage(reply: &Reply) -> Value {
    let (input, output) = reply
        .usage
        .as_ref()
        .map_or((0, 0), |u| (u.input_tokens, u.output_tokens));
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

/// The whole non-streamed message for a chat reply. `reply.message` is a chat assistant
/// message: its text (a string, or text parts) and any refusal become one text block,
/// then each tool call a `tool_use` block.
pub fn message(reply: &Reply, id: &str, model: &str) -> Value {
    let message = &reply.message;
    let mut text = content_text(message.get("content"));
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
        text.push_str(refusal);
    }
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let message = with_call_ids(message, id);
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for call in calls.into_iter().flatten() {
        let function = call.get("function");
        let field = |name: &str| {
            function
                .and_then(|f| f.get(name))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        content.push(json!({
            "type": "tool_use",
            "id": tool_use_id(call.get("id").and_then(Value::as_str)),
            "name": field("name"),
            "input": tool_input(field("arguments")),
        }));
    }
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(reply.finish_reason.as_deref()),
        "stop_sequence": null,
        "usage": usage(reply),
    })
}

/// A chat message's `content` as text: a string, or its text parts concatenated.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
