//! An Anthropic Messages request → the chat-completions request that answers it (pure; refusals name the parameter).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::reply::chat_call_id;
use crate::api::responses::translate::Refusal;
pub use crate::config::ToolPolicy;

/// A translation, or the reason there is none.
type Checked<T> = Result<T, Refusal>;

/// Why a server tool is refused.
const REJECTED: &str = "cannot run on a chat upstream ([responses] unsupported_tools = \"reject\")";

/// How text blocks are joined where chat wants one string.
const JOIN: &str = "\n\n";

/// A translated request: this turn as chat messages and chat fields.
#[derive(Debug, Clone, Default)]
pub struct Translated {
    pub model: String,
    pub stream: bool,
    /// Required in Anthropic's API, and a positive integer.
    pub max_tokens: u64,
    /// The request's system text: `system` (a string, or text blocks joined with "\n\n"),
    /// then every `system`-role message found inside `messages`, merged in order (many
    /// vLLM/llama.cpp chat templates refuse a system message that is not first; Claude
    /// Code puts one last for model names it does not know).
    pub system: Option<String>,
    /// This turn's messages as chat messages (no system), for the upstream and for session storage.
    pub input_messages: Vec<Value>,
    /// Other chat fields: temperature, top_p, top_k, stop, tools, tool_choice,
    /// parallel_tool_calls, user.
    pub chat_fields: Map<String, Value>,
    pub stop_sequences: Vec<String>,
    /// Top-level fields accepted and ignored (thinking, context_management, …), for a response header.
    pub ignored: Vec<String>,
    /// Server tools (any `type` but "custom") removed under `ToolPolicy::Drop`, by type.
    pub dropped_tools: Vec<String>,
}

/// Reads a Messages request body. Unknown top-level fields are accepted and listed in
/// `ignored` (a strict parser breaks Claude Code); untranslatable content is refused.
pub fn translate(body: &[u8], policy: ToolPolicy) -> Result<Translated, Refusal> {
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return refuse("body", "The body must be a JSON object.");
    };
    let Some(Value::String(model)) = request.remove("model").filter(|m| m != "") else {
        return refuse("model", "'model' must be a non-empty string.");
    };
    let max_tokens = request.remove("max_tokens").and_then(|n| n.as_u64());
    let Some(max_tokens) = max_tokens.filter(|n| *n > 0) else {
        return refuse("max_tokens", "'max_tokens' must be a positive integer.");
    };
    let stream = match request.remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return refuse("stream", "'stream' must be a boolean."),
    };
    let mut system = Vec::new();
    if let Some(value) = request.remove("system") {
        push_text(&mut system, text_of(&value, "system")?);
    }
    let messages = match request.remove("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => return refuse("messages", "'messages' must be a non-empty list."),
    };
    let mut input_messages = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        message(i, m, &mut system, &mut input_messages)?;
    }
    let mut out = Translated {
        model,
        stream,
        max_tokens,
        system: (!system.is_empty()).then(|| system.join(JOIN)),
        input_messages,
        ..Default::default()
    };
    let tools = tools(request.remove("tools"), policy, &mut out.dropped_tools)?;
    for (name, value) in request {
        field(&name, value, &tools, &mut out)?;
    }
    if tools.is_empty() {
        // Chat refuses tool_choice and parallel_tool_calls without tools.
        out.chat_fields.remove("tool_choice");
        out.chat_fields.remove("parallel_tool_calls");
    } else {
        out.chat_fields.insert("tools".into(), Value::Array(tools));
    }
    Ok(out)
}

/// One top-level field other than those read above.
fn field(name: &str, value: Value, tools: &[Value], out: &mut Translated) -> Checked<()> {
    match name {
        _ if value.is_null() => {}
        "temperature" | "top_p" | "top_k" => {
            if !value.is_number() {
                return refuse(name, format!("'{name}' must be a number."));
            }
            out.chat_fields.insert(name.into(), value);
        }
        "stop_sequences" => {
            let Value::Array(items) = value else {
                return refuse(name, "'stop_sequences' must be a list of strings.");
            };
            for (k, item) in items.into_iter().enumerate() {
                let Value::String(stop) = item else {
                    return refuse(format!("{name}[{k}]"), "Stop sequences must be strings.");
                };
                out.stop_sequences.push(stop);
            }
            let stop = json!(out.stop_sequences);
            if !out.stop_sequences.is_empty() {
                out.chat_fields.insert("stop".into(), stop);
            }
        }
        "metadata" => match value.get("user_id") {
            _ if !value.is_object() => return refuse(name, "'metadata' must be an object."),
            None | Some(Value::Null) => {}
            Some(Value::String(user)) => {
                out.chat_fields.insert("user".into(), json!(user));
            }
            Some(_) => return refuse("metadata.user_id", "'metadata.user_id' must be a string."),
        },
        "tool_choice" => tool_choice(&value, tools, out)?,
        _ => out.ignored.push(label(name)),
    }
    Ok(())
}

/// Custom tools in chat's function shape; server tools dropped or refused per `policy`.
fn tools(tools: Option<Value>, policy: ToolPolicy, out: &mut Vec<String>) -> Checked<Vec<Value>> {
    let items = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return refuse("tools", "'tools' must be a list."),
    };
    let mut chat_tools = Vec::with_capacity(items.len());
    for (i, tool) in items.iter().enumerate() {
        if let Some(kind) = tool["type"].as_str().filter(|k| *k != "custom") {
            let kind = label(kind);
            if policy == ToolPolicy::Reject {
                let message = format!("The server tool '{kind}' {REJECTED}.");
                return refuse(format!("tools[{i}]"), message);
            }
            out.push(kind);
            continue;
        }
        let Some(name) = tool["name"].as_str().filter(|n| !n.is_empty()) else {
            return refuse(format!("tools[{i}].name"), "Custom tools need a 'name'.");
        };
        let schema = tool.get("input_schema").filter(|s| s.is_object()).cloned();
        let schema = schema.unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut function = json!({"name": name, "parameters": schema});
        if let Some(description) = tool.get("description").filter(|d| d.is_string()) {
            function["description"] = description.clone();
        }
        chat_tools.push(json!({"type": "function", "function": function}));
    }
    Ok(chat_tools)
}

fn tool_choice(value: &Value, tools: &[Value], out: &mut Translated) -> Checked<()> {
    let choice = match value["type"].as_str() {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = value["name"].as_str().unwrap_or("");
            if !tools.iter().any(|t| t["function"]["name"] == name) {
                let message = format!("'{}' is not a custom tool in 'tools'.", label(name));
                return refuse("tool_choice.name", message);
            }
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return refuse("tool_choice.type", "Must be auto, any, tool or none."),
    };
    let (fields, param) = (
        &mut out.chat_fields,
        "tool_choice.disable_parallel_tool_use",
    );
    match &value["disable_parallel_tool_use"] {
        Value::Null | Value::Bool(false) => {}
        Value::Bool(true) => _ = fields.insert("parallel_tool_calls".into(), json!(false)),
        _ => return refuse(param, "Must be a boolean."),
    }
    fields.insert("tool_choice".into(), choice);
    Ok(())
}

/// One message of `messages`: system text is collected, the rest become chat messages.
fn message(i: usize, m: &Value, system: &mut Vec<String>, out: &mut Vec<Value>) -> Checked<()> {
    let (at, content) = (format!("messages[{i}]"), &m["content"]);
    match m["role"].as_str() {
        Some("system") => push_text(system, text_of(content, &format!("{at}.content"))?),
        Some(role @ ("user" | "assistant")) => turn(role, &format!("{at}.content"), content, out)?,
        _ => return refuse(format!("{at}.role"), "Must be user, assistant or system."),
    }
    Ok(())
}

/// A user or assistant message's content (at `at`). Each user `tool_result` becomes a tool
/// message first; the rest is one message whose content is a plain string when it is only
/// text (simplest for local chat templates). Assistant `tool_use` blocks become tool calls.
fn turn(role: &str, at: &str, content: &Value, out: &mut Vec<Value>) -> Checked<()> {
    let blocks = match content {
        Value::String(text) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err(content_refusal(at)),
    };
    let (mut parts, mut calls) = (Vec::new(), Vec::new());
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}[{j}]");
        match (role, block["type"].as_str()) {
            (_, Some("thinking" | "redacted_thinking")) => {}
            ("user", Some("tool_result")) => out.push(tool_result(&at, block, &mut parts)?),
            ("user", _) | (_, Some("text")) => parts.push(part(&at, block)?),
            (_, Some("tool_use")) => {
                let (Some(id), Some(name)) = (block["id"].as_str(), block["name"].as_str()) else {
                    return refuse(at, "A tool_use block needs an 'id' and a 'name'.");
                };
                let arguments = match &block["input"] {
                    Value::Null => "{}".to_string(),
                    input => input.to_string(),
                };
                let f = json!({"name": name, "arguments": arguments});
                let call = json!({"id": chat_call_id(id), "type": "function", "function": f});
                calls.push(call);
            }
            (_, other) => return Err(block_refusal(&at, other)),
        }
    }
    let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
    let all_text = (texts.len() == parts.len()).then(|| json!(texts.join(JOIN)));
    let content = all_text.unwrap_or(Value::Array(parts));
    // A user message that held only tool results needs nothing after them.
    let skip = role == "user" && content == "";
    let mut message = json!({"role": role, "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !skip {
        out.push(message);
    }
    Ok(())
}

/// A `tool_result` block → a tool message ("Error: " first when `is_error`); its images
/// go to the user message after it, as a chat tool message carries text only.
fn tool_result(at: &str, block: &Value, parts: &mut Vec<Value>) -> Checked<Value> {
    let Some(id) = block["tool_use_id"].as_str() else {
        return refuse(format!("{at}.tool_use_id"), "Must be a string.");
    };
    let mut texts = Vec::new();
    match &block["content"] {
        Value::Null => {}
        Value::String(text) => texts.push(text.clone()),
        Value::Array(inner) => {
            for (k, item) in inner.iter().enumerate() {
                match part(&format!("{at}.content[{k}]"), item)? {
                    Value::Object(p) if p.get("type") == Some(&json!("text")) => {
                        texts.extend(p.get("text").and_then(Value::as_str).map(String::from));
                    }
                    image => parts.push(image),
                }
            }
        }
        _ => return Err(content_refusal(&format!("{at}.content"))),
    }
    let mut text = texts.join(JOIN);
    if block["is_error"] == true {
        text.insert_str(0, "Error: ");
    }
    Ok(json!({"role": "tool", "tool_call_id": chat_call_id(id), "content": text}))
}

/// A user content block other than a tool result: a chat text or image_url part.
fn part(at: &str, block: &Value) -> Checked<Value> {
    let source = |key: &str| block["source"][key].as_str();
    match block["type"].as_str() {
        Some("text") => Ok(json!({"type": "text", "text": block_text(at, block)?})),
        Some("image") => {
            let url = match source("type") {
                Some("url") => source("url").map(String::from),
                Some("base64") => (source("media_type").zip(source("data")))
                    .map(|(media, data)| format!("data:{media};base64,{data}")),
                _ => None,
            };
            let Some(url) = url else {
                let message = "An image source must be base64 (media_type, data) or a url.";
                return refuse(format!("{at}.source"), message);
            };
            Ok(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        Some("document") => match (source("type"), source("data")) {
            (Some("text"), Some(data)) => Ok(json!({"type": "text", "text": data})),
            _ => refuse(format!("{at}.source"), "A document source must be text."),
        },
        other => Err(block_refusal(at, other)),
    }
}

/// `system` or a system message's content: a string, or text blocks joined.
fn text_of(value: &Value, at: &str) -> Checked<String> {
    let blocks = match value {
        Value::Null => return Ok(String::new()),
        Value::String(text) => return Ok(text.clone()),
        Value::Array(blocks) => blocks,
        _ => return Err(content_refusal(at)),
    };
    let mut texts = Vec::with_capacity(blocks.len());
    for (k, block) in blocks.iter().enumerate() {
        let at = format!("{at}[{k}]");
        match block["type"].as_str() {
            Some("text") => texts.push(block_text(&at, block)?),
            other => return Err(block_refusal(&at, other)),
        }
    }
    Ok(texts.join(JOIN))
}

/// A text block's `text`.
fn block_text<'a>(at: &str, block: &'a Value) -> Checked<&'a str> {
    match block["text"].as_str() {
        Some(text) => Ok(text),
        None => refuse(format!("{at}.text"), "A text block needs a string 'text'."),
    }
}

fn push_text(texts: &mut Vec<String>, text: String) {
    if !text.is_empty() {
        texts.push(text);
    }
}

fn refuse<T>(param: impl Into<String>, message: impl Into<String>) -> Checked<T> {
    Err(Refusal::new(param, message))
}

fn content_refusal(at: &str) -> Refusal {
    Refusal::new(at, "Content must be a string or a list of content blocks.")
}

fn block_refusal(at: &str, kind: Option<&str>) -> Refusal {
    let message = match kind {
        Some(kind) => format!("The block type '{}' is not supported here.", label(kind)),
        None => "Each content block needs a string 'type'.".to_string(),
    };
    Refusal::new(format!("{at}.type"), message)
}

/// A client-supplied name made safe for a header or a message: printable ASCII, at most 64 characters.
fn label(name: &str) -> String {
    let safe = name.chars().filter(char::is_ascii_graphic);
    safe.take(64).collect()
}

/// What the chat body needs of a stored message: its role, and a system message's content.
#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// The chat body: one system message (the stored context's, then the request's), the
/// context's other messages (spliced in as stored), this turn's input, the chat fields,
/// `model`, `stream`, `max_tokens` (clamped to a non-zero `max_tokens_cap`) and, when
/// streaming, `stream_options.include_usage`.
pub fn chat_body(t: &Translated, context: &[String], max_tokens_cap: Option<u64>) -> Vec<u8> {
    let mut system = Vec::new();
    let mut messages: Vec<String> = Vec::with_capacity(context.len() + t.input_messages.len() + 1);
    for stored in context {
        match serde_json::from_str::<Stored>(stored) {
            Ok(m) if m.role.as_deref() == Some("system") => {
                let content = m.content.and_then(|c| serde_json::from_str(c.get()).ok());
                // Chat text parts read as Anthropic text blocks; other parts are left out.
                let text = text_of(&content.unwrap_or_default(), "").unwrap_or_default();
                push_text(&mut system, text);
            }
            Ok(_) => messages.push(stored.clone()),
            Err(_) => tracing::warn!("a stored context message is not a JSON object; left out"),
        }
    }
    system.extend(t.system.iter().cloned());
    if !system.is_empty() {
        let leading = json!({"role": "system", "content": system.join(JOIN)});
        messages.insert(0, leading.to_string());
    }
    messages.extend(t.input_messages.iter().map(Value::to_string));
    let mut fields = t.chat_fields.clone();
    fields.insert("model".into(), json!(t.model));
    fields.insert("stream".into(), json!(t.stream));
    let cap = max_tokens_cap.filter(|c| *c > 0).unwrap_or(u64::MAX);
    fields.insert("max_tokens".into(), json!(t.max_tokens.min(cap)));
    if t.stream {
        fields.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let rest = Value::Object(fields).to_string();
    // `rest` is a JSON object: drop its opening brace and keep the closing one.
    let rest = rest.get(1..).unwrap_or("}");
    format!("{{\"messages\":[{}],{rest}", messages.join(",")).into_bytes()
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
