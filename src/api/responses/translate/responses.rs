//! A Responses API request → the chat-completions request that answers it (pure; refusals name the parameter).

use serde_json::{json, Map, Value};

use super::responses_items::items_to_messages;
pub use super::responses_tools::ToolPolicy;
use super::responses_tools::{tool_choice, tools};
use super::translated::truncate;
pub use super::translated::Translated;
use super::Refusal;

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
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return Err(Refusal::new(
            "body",
            "The body must be a JSON object (Responses API request).",
        ));
    };
    let model = match request.remove("model") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return Err(Refusal::new("model", "'model' must be a non-empty string.")),
    };
    let mut out = Translated {
        model,
        stream: take_bool(&mut request, "stream", false)?,
        store: take_bool(&mut request, "store", true)?,
        instructions: take_string(&mut request, "instructions")?,
        previous_response_id: take_string(&mut request, "previous_response_id")?,
        conversation: conversation_id(request.remove("conversation"))?,
        input_items: Vec::new(),
        input_messages: Vec::new(),
        chat_fields: Map::new(),
        dropped_tools: Vec::new(),
        echo: Map::new(),
    };
    if out.previous_response_id.is_some() && out.conversation.is_some() {
        return Err(Refusal::new(
            "previous_response_id",
            "'previous_response_id' and 'conversation' cannot be used together.",
        ));
    }
    out.input_items = match request.remove("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => {
            vec![json!({"type": "message", "role": "user", "content": text})]
        }
        Some(Value::Array(items)) => items.into_iter().map(normalise_item).collect(),
        Some(_) => {
            return Err(Refusal::new(
                "input",
                "'input' must be a string or a list of items.",
            ))
        }
    };
    out.input_messages = items_to_messages(&out.input_items)?;
    let tools = tools(request.remove("tools"), policy, &mut out)?;
    let (field_names, mut request) = (request.keys().cloned().collect::<Vec<_>>(), request);
    for name in field_names {
        let value = request.remove(&name).unwrap_or(Value::Null);
        field(&name, value, &tools, &mut out)?;
    }
    if !tools.is_empty() {
        out.chat_fields.insert("tools".into(), Value::Array(tools));
    } else {
        // Chat refuses `parallel_tool_calls` without tools.
        out.chat_fields.remove("parallel_tool_calls");
        if out.chat_fields.get("tool_choice").and_then(Value::as_str) != Some("none") {
            out.chat_fields.remove("tool_choice");
        }
    }
    Ok(out)
}

/// One top-level field other than those read above.
fn field(name: &str, value: Value, tools: &[Value], out: &mut Translated) -> Result<(), Refusal> {
    if value.is_null() || IGNORED.contains(&name) {
        return Ok(());
    }
    match name {
        _ if PASSED.contains(&name) => {
            out.echo.insert(name.into(), value.clone());
            out.chat_fields.insert(name.into(), value);
        }
        "max_output_tokens" => {
            out.echo.insert(name.into(), value.clone());
            out.chat_fields.insert("max_completion_tokens".into(), value);
        }
        "parallel_tool_calls" => {
            if !value.is_boolean() {
                return Err(Refusal::new(name, "'parallel_tool_calls' must be a boolean."));
            }
            out.echo.insert(name.into(), value.clone());
            out.chat_fields.insert(name.into(), value);
        }
        "metadata" => {
            if !value.is_object() {
                return Err(Refusal::new(name, "'metadata' must be an object."));
            }
            // Kept on the stored response; chat refuses metadata unless it stores too.
            out.echo.insert(name.into(), value);
        }
        "tool_choice" => {
            let choice = tool_choice(&value, tools, &out.dropped_tools)?;
            out.echo.insert(name.into(), value);
            out.chat_fields.insert(name.into(), choice);
        }
        "text" => {
            if let Some(format) = value.get("format").filter(|f| !f.is_null()) {
                out.chat_fields
                    .insert("response_format".into(), response_format(format)?);
            }
            if let Some(verbosity) = value.get("verbosity").filter(|v| !v.is_null()) {
                out.chat_fields.insert("verbosity".into(), verbosity.clone());
            }
            out.echo.insert(name.into(), value);
        }
        "reasoning" => {
            // `summary` / `generate_summary` are ignored: chat returns no reasoning items.
            if let Some(effort) = value.get("effort").filter(|e| !e.is_null()) {
                out.chat_fields
                    .insert("reasoning_effort".into(), effort.clone());
            }
            out.echo.insert(name.into(), value);
        }
        "background" if value == json!(false) => {}
        "truncation" if value == json!("disabled") => {}
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

fn response_format(format: &Value) -> Result<Value, Refusal> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({"type": "text"})),
        Some("json_object") => Ok(json!({"type": "json_object"})),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            Ok(json!({"type": "json_schema", "json_schema": schema}))
        }
        _ => Err(Refusal::new(
            "text.format",
            "text.format.type must be text, json_object or json_schema.",
        )),
    }
}

/// Message items without `type` (as the Agents SDK sends them) are messages.
fn normalise_item(item: Value) -> Value {
    match item {
        Value::Object(mut object) => {
            if !object.contains_key("type") && object.contains_key("role") {
                object.insert("type".into(), json!("message"));
            }
            Value::Object(object)
        }
        other => other,
    }
}

fn conversation_id(value: Option<Value>) -> Result<Option<String>, Refusal> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => Ok(Some(id)),
        Some(Value::Object(object)) => match object.get("id") {
            Some(Value::String(id)) => Ok(Some(id.clone())),
            _ => Err(Refusal::new(
                "conversation",
                "'conversation' must be an id or {\"id\": …}.",
            )),
        },
        Some(_) => Err(Refusal::new(
            "conversation",
            "'conversation' must be an id or {\"id\": …}.",
        )),
    }
}

fn take_bool(
    request: &mut Map<String, Value>,
    name: &'static str,
    default: bool,
) -> Result<bool, Refusal> {
    match request.remove(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(Refusal::new(name, format!("'{name}' must be a boolean."))),
    }
}

fn take_string(
    request: &mut Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, Refusal> {
    match request.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Refusal::new(name, format!("'{name}' must be a string."))),
    }
}

/// The chat request body: `instructions`, the stored context (raw JSON messages), this
/// turn's input, then the translated fields. The context is spliced in as stored text.
pub fn chat_body(t: &Translated, upstream_stream: bool, context: &[String]) -> Vec<u8> {
    let mut messages: Vec<String> = Vec::with_capacity(context.len() + t.input_messages.len() + 1);
    if let Some(instructions) = &t.instructions {
        messages.push(json!({"role": "system", "content": instructions}).to_string());
    }
    messages.extend(context.iter().cloned());
    messages.extend(t.input_messages.iter().map(Value::to_string));
    let mut fields = t.chat_fields.clone();
    fields.insert("model".into(), Value::String(t.model.clone()));
    fields.insert("stream".into(), Value::Bool(upstream_stream));
    if upstream_stream {
        fields.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let rest = Value::Object(fields).to_string();
    let mut body =
        Vec::with_capacity(rest.len() + messages.iter().map(String::len).sum::<usize>() + 16);
    body.extend_from_slice(b"{\"messages\":[");
    body.extend_from_slice(messages.join(",").as_bytes());
    body.extend_from_slice(b"],");
    // `rest` is a JSON object: drop its opening brace and keep the closing one.
    body.extend_from_slice(rest.get(1..).unwrap_or("}").as_bytes());
    body
}
