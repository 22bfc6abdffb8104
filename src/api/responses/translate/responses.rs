//! A Responses API request → the chat-completions request that answers it (pure; refusals name the parameter).
//!
//! The body is read one level deep as raw JSON (`raw.rs`): input items and content parts
//! are converted one at a time, and what passes through unchanged (tool schemas,
//! metadata, text) is copied as text. No `serde_json::Value` tree of the request is built,
//! so the working memory is a small multiple of the body whatever its shape.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::output::write_str;
use super::raw::{self, Fields, Members, MAX_DEPTH};
use super::responses_items::{item_members, push_listed_item, Messages};
pub use super::responses_tools::ToolPolicy;
use super::responses_tools::{tool_choice, tools};
pub use super::translated::Translated;
use super::translated::{truncate, Echo};
use super::{random_id, Refusal};

/// Fields accepted and ignored: they do not change the answer a chat upstream gives.
const IGNORED: &[&str] = &[
    "include",
    "prompt_cache_key",
    "prompt_cache_retention",
    "client_metadata",
    "service_tier",
    "stream_options",
    "top_logprobs",
    "max_tool_calls",
];

/// Fields copied into the chat request unchanged.
const PASSED: &[&str] = &["temperature", "top_p", "user", "safety_identifier"];

/// Reads a Responses request body. Unknown fields and untranslatable values are refused.
pub fn translate(body: &[u8], policy: ToolPolicy) -> Result<Translated, Refusal> {
    if !raw::nesting_within(body, MAX_DEPTH) {
        return Err(Refusal::new(
            "body",
            format!("The body nests arrays and objects deeper than {MAX_DEPTH} levels."),
        ));
    }
    let Ok(mut request) = serde_json::from_slice::<Fields<'_>>(body) else {
        return Err(Refusal::new(
            "body",
            "The body must be a JSON object (Responses API request).",
        ));
    };
    let model = match request.remove("model").and_then(raw::text) {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => return Err(Refusal::new("model", "'model' must be a non-empty string.")),
    };
    let mut echo = Echo {
        instructions: take_string(&mut request, "instructions")?.map(raw::owned),
        ..Echo::default()
    };
    let mut out = Translated {
        model,
        stream: take_bool(&mut request, "stream", false)?,
        store: take_bool(&mut request, "store", true)?,
        previous_response_id: take_string(&mut request, "previous_response_id")?
            .and_then(raw::text)
            .map(|id| id.into_owned()),
        conversation: conversation_id(request.remove("conversation"))?,
        input_items: String::from("[]"),
        input_messages: Vec::new(),
        chat_fields: Default::default(),
        dropped_tools: Vec::new(),
        echo: Arc::default(),
    };
    if out.previous_response_id.is_some() && out.conversation.is_some() {
        return Err(Refusal::new(
            "previous_response_id",
            "'previous_response_id' and 'conversation' cannot be used together.",
        ));
    }
    input(request.remove("input"), &mut out)?;
    let tools = tools(request.remove("tools"), policy, &mut out, &mut echo)?;
    for (name, value) in request {
        field(&name, value, &tools.names, &mut out, &mut echo)?;
    }
    match tools.json {
        Some(list) => {
            out.chat_fields.insert("tools", list);
        }
        None => {
            // Chat refuses `parallel_tool_calls` without tools.
            out.chat_fields.remove("parallel_tool_calls");
            let none = out
                .chat_fields
                .get("tool_choice")
                .and_then(|c| raw::text(c))
                .is_some_and(|c| c == "none");
            if !none {
                out.chat_fields.remove("tool_choice");
            }
        }
    }
    out.echo = Arc::new(echo);
    Ok(out)
}

/// `input`: a string (one user message) or a list of items, converted one at a time into
/// chat messages and, for a response that is stored, into the list `input_items` shows.
fn input(value: Option<&RawValue>, out: &mut Translated) -> Result<(), Refusal> {
    let items = match value {
        None => return Ok(()),
        Some(v) if raw::is_null(v) => return Ok(()),
        Some(text) if raw::is_string(text) => {
            // One user message; the item is written as `input_items` lists it.
            out.input_messages = vec![format!(r#"{{"role":"user","content":{}}}"#, text.get())];
            if out.store {
                out.input_items = format!(
                    r#"[{{"content":{},"id":"{}","role":"user","type":"message"}}]"#,
                    text.get(),
                    random_id("msg")
                );
            }
            return Ok(());
        }
        Some(items) if raw::is_array(items) => items,
        Some(_) => {
            return Err(Refusal::new(
                "input",
                "'input' must be a string or a list of items.",
            ))
        }
    };
    let store = out.store;
    let mut messages = Messages::default();
    let mut listed = Vec::with_capacity(if store { items.get().len() + 64 } else { 2 });
    listed.push(b'[');
    raw::for_each(items, |index, item| {
        let members = item_members(index, item)?;
        messages.push(index, &members)?;
        if store {
            if index > 0 {
                listed.push(b',');
            }
            push_listed_item(&members, &mut listed);
        }
        Ok(())
    })?;
    listed.push(b']');
    out.input_messages = messages.finish();
    out.input_items = String::from_utf8(listed).unwrap_or_else(|_| String::from("[]"));
    Ok(())
}

/// One top-level field other than those read above.
fn field(
    name: &str,
    value: &RawValue,
    tools: &[String],
    out: &mut Translated,
    echo: &mut Echo,
) -> Result<(), Refusal> {
    if raw::is_null(value) || IGNORED.contains(&name) {
        return Ok(());
    }
    if let Some(passed) = PASSED.iter().find(|passed| **passed == name) {
        pass(passed, passed, value, out, echo);
        return Ok(());
    }
    match name {
        "max_output_tokens" => {
            pass("max_output_tokens", "max_completion_tokens", value, out, echo)
        }
        "parallel_tool_calls" => {
            if !raw::is_bool(value) {
                return Err(Refusal::new(name, "'parallel_tool_calls' must be a boolean."));
            }
            pass("parallel_tool_calls", "parallel_tool_calls", value, out, echo);
        }
        "metadata" => {
            if !raw::is_object(value) {
                return Err(Refusal::new(name, "'metadata' must be an object."));
            }
            // Kept on the stored response; chat refuses metadata unless it stores too.
            echo.fields.insert("metadata", raw::owned(value));
        }
        "tool_choice" => {
            let choice = tool_choice(value, tools, &out.dropped_tools)?;
            echo.fields.insert("tool_choice", raw::owned(value));
            out.chat_fields.insert("tool_choice", choice);
        }
        "text" => {
            let members = raw::members(value).unwrap_or_default();
            if let Some(format) = non_null(&members, "format") {
                out.chat_fields
                    .insert("response_format", response_format(format)?);
            }
            if let Some(verbosity) = non_null(&members, "verbosity") {
                out.chat_fields.insert("verbosity", raw::owned(verbosity));
            }
            echo.fields.insert("text", raw::owned(value));
        }
        "reasoning" => {
            // `summary` / `generate_summary` are ignored: chat returns no reasoning items.
            let members = raw::members(value).unwrap_or_default();
            if let Some(effort) = non_null(&members, "effort") {
                out.chat_fields
                    .insert("reasoning_effort", raw::owned(effort));
            }
            echo.fields.insert("reasoning", raw::owned(value));
        }
        "background" if value.get() == "false" => {}
        "truncation" if raw::text(value).is_some_and(|t| t == "disabled") => {}
        "background" | "truncation" | "prompt" | "conversation" => {
            return Err(Refusal::new(
                name,
                format!("'{name}' with this value is not supported when translating to a chat-completions upstream."),
            ))
        }
        _ => {
            return Err(Refusal::new(
                name,
                format!("Unrecognized request argument supplied: {}", truncate(name)),
            ))
        }
    }
    Ok(())
}

/// A field the response echoes and the chat request carries (under `chat`), as sent.
fn pass(
    echoed: &'static str,
    chat: &'static str,
    value: &RawValue,
    out: &mut Translated,
    echo: &mut Echo,
) {
    echo.fields.insert(echoed, raw::owned(value));
    out.chat_fields.insert(chat, raw::owned(value));
}

fn non_null<'a>(members: &Members<'a>, name: &str) -> Option<&'a RawValue> {
    members.get(name).copied().filter(|v| !raw::is_null(v))
}

/// `text.format` → chat's `response_format`; a JSON schema is copied as sent.
fn response_format(format: &RawValue) -> Result<Box<RawValue>, Refusal> {
    let members = raw::members(format).unwrap_or_default();
    let chat = match raw::member_text(&members, "type").as_deref() {
        Some("text") => r#"{"type":"text"}"#.to_string(),
        Some("json_object") => r#"{"type":"json_object"}"#.to_string(),
        Some("json_schema") => {
            let mut chat = String::from(r#"{"type":"json_schema","json_schema":{"#);
            let mut first = true;
            for key in ["name", "schema", "strict", "description"] {
                if let Some(value) = non_null(&members, key) {
                    if !first {
                        chat.push(',');
                    }
                    first = false;
                    chat.push('"');
                    chat.push_str(key);
                    chat.push_str("\":");
                    chat.push_str(value.get());
                }
            }
            chat.push_str("}}");
            chat
        }
        _ => {
            return Err(Refusal::new(
                "text.format",
                "text.format.type must be text, json_object or json_schema.",
            ))
        }
    };
    Ok(raw::from_json(chat))
}

fn conversation_id(value: Option<&RawValue>) -> Result<Option<String>, Refusal> {
    let refusal = || {
        Refusal::new(
            "conversation",
            "'conversation' must be an id or {\"id\": …}.",
        )
    };
    match value {
        None => Ok(None),
        Some(v) if raw::is_null(v) => Ok(None),
        Some(id) if raw::is_string(id) => Ok(raw::text(id).map(|id| id.into_owned())),
        Some(object) => {
            let members = raw::members(object).ok_or_else(refusal)?;
            let id = raw::member_text(&members, "id").ok_or_else(refusal)?;
            Ok(Some(id.into_owned()))
        }
    }
}

fn take_bool(request: &mut Fields<'_>, name: &'static str, default: bool) -> Result<bool, Refusal> {
    match request.remove(name).map(RawValue::get) {
        None | Some("null") => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(Refusal::new(name, format!("'{name}' must be a boolean."))),
    }
}

/// A field that must be a string (or null): its raw JSON.
fn take_string<'a>(
    request: &mut Fields<'a>,
    name: &'static str,
) -> Result<Option<&'a RawValue>, Refusal> {
    match request.remove(name) {
        None => Ok(None),
        Some(v) if raw::is_null(v) => Ok(None),
        Some(s) if raw::is_string(s) => Ok(Some(s)),
        Some(_) => Err(Refusal::new(name, format!("'{name}' must be a string."))),
    }
}

/// The chat request body: `instructions`, the stored context (raw JSON messages), this
/// turn's input (its chat messages), then the translated fields, written once into one
/// buffer, streamed when the client streams. The request is built once: the fields move into it (a tool schema is not held
/// twice through the turn).
pub fn chat_body(t: &mut Translated, context: &[String], input: &[String]) -> Vec<u8> {
    let instructions = t.echo.instructions.as_deref();
    let messages: usize = context.iter().chain(input).map(String::len).sum();
    let fields: usize = t.chat_fields.values().map(|v| v.get().len() + 32).sum();
    let mut body = Vec::with_capacity(
        messages
            + fields
            + instructions.map_or(0, |i| i.get().len() + 32)
            + t.model.len()
            + context.len()
            + input.len()
            + 128,
    );
    body.extend_from_slice(b"{\"messages\":[");
    let mut first = true;
    let mut message = |body: &mut Vec<u8>, json: &[u8]| {
        if !first {
            body.push(b',');
        }
        first = false;
        body.extend_from_slice(json);
    };
    if let Some(instructions) = instructions {
        message(&mut body, br#"{"role":"system","content":"#);
        body.extend_from_slice(instructions.get().as_bytes());
        body.push(b'}');
    }
    for json in context.iter().chain(input) {
        message(&mut body, json.as_bytes());
    }
    body.extend_from_slice(b"]");
    for (name, value) in std::mem::take(&mut t.chat_fields) {
        body.extend_from_slice(b",\"");
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\":");
        body.extend_from_slice(value.get().as_bytes());
    }
    body.extend_from_slice(b",\"model\":");
    write_str(&mut body, &t.model);
    body.extend_from_slice(match t.stream {
        true => b",\"stream\":true",
        false => b",\"stream\":false",
    });
    if t.stream {
        body.extend_from_slice(br#","stream_options":{"include_usage":true}"#);
    }
    body.push(b'}');
    body
}
