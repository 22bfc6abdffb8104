//! A chat completion (or an assembled stream) → the Responses API response object.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::Value;

use super::output::{write_i64, write_items, write_str, OutputItem, TokenUsage};
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
    pub items: Vec<OutputItem>,
    pub finish_reason: Option<String>,
    pub usage: Option<TokenUsage>,
}

/// Status of a finished response, and the reason in `incomplete_details` when it
/// stopped early.
pub fn status(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// The status an item ends with: "incomplete" when the response is.
pub fn item_status(finish_reason: Option<&str>) -> &'static str {
    match status(finish_reason).0 {
        "completed" => "completed",
        _ => "incomplete",
    }
}

/// What the response object says about how the turn went.
pub enum Progress<'a> {
    InProgress,
    /// Finished, for the reason the upstream gave (see [`status`]).
    Finished(Option<&'a str>),
    /// Ended without a complete answer: the `error` object's code and message.
    Failed {
        code: &'a Value,
        message: &'a Value,
    },
}

/// The finished response object, its status from the outcome's finish reason.
pub fn response_object(meta: &ResponseMeta, outcome: &Outcome) -> Vec<u8> {
    let mut out = Vec::new();
    write_response_object(
        &mut out,
        meta,
        &outcome.items,
        outcome.usage.as_ref(),
        &Progress::Finished(outcome.finish_reason.as_deref()),
    );
    out
}

/// Writes the response object as JSON: the echoed request fields (tools, schemas,
/// metadata) are copied from their raw text, never parsed; the fields keep the order
/// clients have always been sent.
pub fn write_response_object(
    out: &mut Vec<u8>,
    meta: &ResponseMeta,
    items: &[OutputItem],
    usage: Option<&TokenUsage>,
    progress: &Progress<'_>,
) {
    let echo =
        |name: &str, default: &'static str| meta.echo.field(name).map_or(default, RawValue::get);
    let raw = |out: &mut Vec<u8>, name: &[u8], value: &str| {
        out.extend_from_slice(name);
        out.extend_from_slice(value.as_bytes());
    };
    out.reserve(768 + items.len() * 256);
    out.extend_from_slice(b"{\"id\":");
    write_str(out, &meta.id);
    out.extend_from_slice(b",\"object\":\"response\",\"created_at\":");
    write_i64(out, meta.created_at);
    out.extend_from_slice(b",\"status\":");
    match progress {
        Progress::InProgress => out.extend_from_slice(
            b"\"in_progress\",\"background\":false,\"error\":null,\"incomplete_details\":null",
        ),
        Progress::Finished(reason) => {
            let (status, reason) = status(*reason);
            write_str(out, status);
            out.extend_from_slice(b",\"background\":false,\"error\":null,\"incomplete_details\":");
            match reason {
                Some(reason) => {
                    out.extend_from_slice(b"{\"reason\":");
                    write_str(out, reason);
                    out.push(b'}');
                }
                None => out.extend_from_slice(b"null"),
            }
        }
        Progress::Failed { code, message } => {
            out.extend_from_slice(b"\"failed\",\"background\":false,\"error\":{\"code\":");
            write_value(out, code);
            out.extend_from_slice(b",\"message\":");
            write_value(out, message);
            out.extend_from_slice(b"},\"incomplete_details\":null");
        }
    }
    let instructions = meta
        .echo
        .instructions
        .as_deref()
        .map_or("null", RawValue::get);
    raw(out, b",\"instructions\":", instructions);
    raw(
        out,
        b",\"max_output_tokens\":",
        echo("max_output_tokens", "null"),
    );
    out.extend_from_slice(b",\"model\":");
    write_str(out, &meta.model);
    out.extend_from_slice(b",\"output\":");
    write_items(out, items);
    raw(
        out,
        b",\"parallel_tool_calls\":",
        echo("parallel_tool_calls", "true"),
    );
    out.extend_from_slice(b",\"previous_response_id\":");
    match &meta.previous_response_id {
        Some(id) => write_str(out, id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"conversation\":");
    match &meta.conversation {
        Some(id) => {
            out.extend_from_slice(b"{\"id\":");
            write_str(out, id);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    raw(
        out,
        b",\"reasoning\":",
        echo("reasoning", r#"{"effort":null,"summary":null}"#),
    );
    let store: &[u8] = if meta.store {
        b",\"store\":true"
    } else {
        b",\"store\":false"
    };
    out.extend_from_slice(store);
    raw(out, b",\"temperature\":", echo("temperature", "1.0"));
    raw(
        out,
        b",\"text\":",
        echo("text", r#"{"format":{"type":"text"}}"#),
    );
    raw(out, b",\"tool_choice\":", echo("tool_choice", r#""auto""#));
    let tools = meta.echo.tools.as_deref().map_or("[]", RawValue::get);
    raw(out, b",\"tools\":", tools);
    raw(out, b",\"top_p\":", echo("top_p", "1.0"));
    out.extend_from_slice(b",\"truncation\":\"disabled\",\"usage\":");
    match usage {
        Some(usage) => usage.write(out),
        None => out.extend_from_slice(b"null"),
    }
    raw(out, b",\"user\":", echo("user", "null"));
    raw(out, b",\"metadata\":", echo("metadata", "{}"));
    out.push(b'}');
}

/// A JSON value as serde_json writes it (`null` should it fail, which it cannot).
fn write_value(out: &mut Vec<u8>, value: &Value) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// The outcome of a reply read whole (a non-streamed chat completion).
pub fn outcome_from_reply(reply: &Reply) -> Outcome {
    let message = &reply.message;
    let finish_reason = reply.finish_reason.clone();
    let status = item_status(finish_reason.as_deref());
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let refusal = message.get("refusal").and_then(Value::as_str);
    let calls = message.get("tool_calls").and_then(Value::as_array);
    let mut items = Vec::with_capacity(1 + calls.map_or(0, Vec::len));
    if text.is_some() || refusal.is_some() {
        items.push(OutputItem::Message {
            id: random_id("msg"),
            status,
            text: text.map(str::to_string),
            refusal: refusal.map(str::to_string),
        });
    }
    for call in calls.into_iter().flatten() {
        let field = |name: &str| call.get(name).and_then(Value::as_str).unwrap_or("");
        let function = call.get("function");
        let function_field = |name: &str| {
            function
                .and_then(|f| f.get(name))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let call_id = match field("id") {
            "" => random_id("call"),
            id => id.to_string(),
        };
        items.push(OutputItem::FunctionCall {
            id: random_id("fc"),
            status: "completed",
            call_id,
            name: function_field("name").to_string(),
            arguments: function_field("arguments").to_string(),
        });
    }
    if items.is_empty() {
        items.push(OutputItem::Message {
            id: random_id("msg"),
            status,
            text: Some(String::new()),
            refusal: None,
        });
    }
    Outcome {
        items,
        finish_reason,
        usage: reply.usage.as_ref().map(TokenUsage::from_chat),
    }
}
