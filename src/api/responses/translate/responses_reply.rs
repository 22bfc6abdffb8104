//! A chat completion (or an assembled stream) → the Responses API response object.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{json, Value};

use super::random_id;
use super::responses::Translated;
use super::translated::Echo;
use crate::gateway::decode::Reply;

/// What the response object reports about its request; fixed before the upstream call.
/// The echoed request fields are shared, never copied, between the turn's objects.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub id: String,
    pub created_at: i64,
    pub model: String,
    pub previous_response_id: Option<String>,
    pub conversation: Option<String>,
    pub store: bool,
    pub echo: Arc<Echo>,
}

impl ResponseMeta {
    pub fn new(t: &Translated, created_at: i64) -> Self {
        ResponseMeta {
            id: random_id("resp"),
            created_at,
            model: t.model.clone(),
            previous_response_id: t.previous_response_id.clone(),
            conversation: t.conversation.clone(),
            store: t.store,
            echo: t.echo.clone(),
        }
    }
}

/// The finished turn: output items, why the upstream stopped, and its usage.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub items: Vec<Value>,
    pub finish_reason: Option<String>,
    pub usage: Option<Value>,
}

/// Status of a finished response, and `incomplete_details` when it stopped early.
pub fn status(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// The response object, written once as JSON text: the echoed request fields (tools,
/// schemas, metadata) are copied from their raw text, never parsed.
#[derive(Serialize)]
struct ResponseObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: i64,
    status: &'a str,
    background: bool,
    error: &'a Value,
    incomplete_details: &'a Value,
    instructions: Option<&'a RawValue>,
    max_output_tokens: &'a RawValue,
    model: &'a str,
    output: &'a [Value],
    parallel_tool_calls: &'a RawValue,
    previous_response_id: Option<&'a str>,
    conversation: Option<Value>,
    reasoning: &'a RawValue,
    store: bool,
    temperature: &'a RawValue,
    text: &'a RawValue,
    tool_choice: &'a RawValue,
    tools: &'a RawValue,
    top_p: &'a RawValue,
    truncation: &'static str,
    usage: Option<Value>,
    user: &'a RawValue,
    metadata: &'a RawValue,
}

/// A constant's raw JSON (`null` should it not parse).
fn constant(json: &'static str) -> &'static RawValue {
    serde_json::from_str(json).unwrap_or(RawValue::NULL)
}

/// The response object. `status` is "in_progress", "completed", "incomplete" or "failed".
pub fn response_object(
    meta: &ResponseMeta,
    outcome: &Outcome,
    status_override: Option<(&str, Value)>,
) -> Box<RawValue> {
    let (status, details) = match status_override {
        Some((s, details)) => (s.to_string(), details),
        None => {
            let (s, d) = status(outcome.finish_reason.as_deref());
            (s.to_string(), d)
        }
    };
    let echo = |name: &str, default: &'static str| {
        meta.echo.field(name).unwrap_or_else(|| constant(default))
    };
    let (error, incomplete) = match status.as_str() {
        "failed" => (details, Value::Null),
        "incomplete" => (Value::Null, details),
        _ => (Value::Null, Value::Null),
    };
    let object = ResponseObject {
        id: &meta.id,
        object: "response",
        created_at: meta.created_at,
        status: &status,
        background: false,
        error: &error,
        incomplete_details: &incomplete,
        instructions: meta.echo.instructions.as_deref(),
        max_output_tokens: echo("max_output_tokens", "null"),
        model: &meta.model,
        output: &outcome.items,
        parallel_tool_calls: echo("parallel_tool_calls", "true"),
        previous_response_id: meta.previous_response_id.as_deref(),
        conversation: meta.conversation.as_ref().map(|id| json!({"id": id})),
        reasoning: echo("reasoning", r#"{"effort":null,"summary":null}"#),
        store: meta.store,
        temperature: echo("temperature", "1.0"),
        text: echo("text", r#"{"format":{"type":"text"}}"#),
        tool_choice: echo("tool_choice", r#""auto""#),
        tools: meta.echo.tools.as_deref().unwrap_or_else(|| constant("[]")),
        top_p: echo("top_p", "1.0"),
        truncation: "disabled",
        usage: outcome.usage.as_ref().map(usage),
        user: echo("user", "null"),
        metadata: echo("metadata", "{}"),
    };
    // Serialising borrowed JSON and plain values cannot fail.
    to_raw_value(&object).unwrap_or_default()
}

/// Chat usage → Responses usage, with the `*_details` objects the SDKs read.
pub fn usage(chat: &Value) -> Value {
    let n = |pointer: &str| chat.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let (input, output) = (n("/prompt_tokens"), n("/completion_tokens"));
    let total = chat
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(input + output);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": n("/prompt_tokens_details/cached_tokens")},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n("/completion_tokens_details/reasoning_tokens")},
        "total_tokens": total,
    })
}

/// An output message item with one text (or refusal) part.
pub fn message_item(id: &str, status: &str, text: Option<&str>, refusal: Option<&str>) -> Value {
    let mut content = Vec::new();
    if let Some(text) = text {
        content.push(output_text_part(text));
    }
    if let Some(refusal) = refusal {
        content.push(json!({"type": "refusal", "refusal": refusal}));
    }
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

pub fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub fn function_call_item(
    id: &str,
    status: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id,
           "name": name, "arguments": arguments})
}

/// The outcome of a reply read whole (a non-streamed chat completion).
pub fn outcome_from_reply(reply: &Reply) -> Outcome {
    let message = &reply.message;
    let finish_reason = reply.finish_reason.clone();
    let item_status = if status(finish_reason.as_deref()).0 == "completed" {
        "completed"
    } else {
        "incomplete"
    };
    let mut items = Vec::new();
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let refusal = message.get("refusal").and_then(Value::as_str);
    if text.is_some() || refusal.is_some() {
        items.push(message_item(&random_id("msg"), item_status, text, refusal));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |p: &str| call.pointer(p).and_then(Value::as_str).unwrap_or("");
        let call_id = match field("/id") {
            "" => random_id("call"),
            id => id.to_string(),
        };
        items.push(function_call_item(
            &random_id("fc"),
            "completed",
            &call_id,
            field("/function/name"),
            field("/function/arguments"),
        ));
    }
    if items.is_empty() {
        items.push(message_item(&random_id("msg"), item_status, Some(""), None));
    }
    Outcome {
        items,
        finish_reason,
        usage: reply.usage.as_ref().map(|u| u.raw.clone()),
    }
}
