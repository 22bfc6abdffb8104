//! Responses items ⇄ chat messages: input items become chat messages, stored chat messages become items again.

use serde_json::{json, Map, Value};

use super::Refusal;

/// Chat messages for a list of Responses input items, in order. `function_call` items
/// join the assistant message before them (chat carries calls on the assistant message);
/// `reasoning` items have no chat equivalent and carry nothing a chat upstream can use,
/// so they are skipped.
pub fn items_to_messages(items: &[Value]) -> Result<Vec<Value>, Refusal> {
    let mut messages: Vec<Value> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let param = || format!("input[{index}]");
        let Some(object) = item.as_object() else {
            return Err(Refusal::new(param(), "Each input item must be an object."));
        };
        let kind = object.get("type").and_then(Value::as_str);
        match kind {
            None | Some("message") => messages.push(message(object, &param())?),
            Some("function_call") => {
                let call = function_call(object, &param())?;
                match messages.last_mut() {
                    Some(last) if takes_calls(last) => {
                        if let Some(calls) = last
                            .as_object_mut()
                            .map(|m| m.entry("tool_calls").or_insert_with(|| json!([])))
                            .and_then(Value::as_array_mut)
                        {
                            calls.push(call);
                        }
                    }
                    _ => messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            Some("function_call_output") => {
                let call_id = string_field(object, "call_id", &param())?;
                let output = match object.get("output") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Array(parts)) => parts_text(parts),
                    _ => {
                        return Err(Refusal::new(
                            format!("{}.output", param()),
                            "function_call_output needs an 'output' string.",
                        ))
                    }
                };
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            Some("reasoning") => {}
            Some(other) => {
                return Err(Refusal::new(
                    format!("{}.type", param()),
                    format!(
                        "Input items of type '{}' cannot be sent to a chat-completions upstream.",
                        truncate(other)
                    ),
                ))
            }
        }
    }
    Ok(messages)
}

/// An assistant message with no tool results after it yet can carry more calls.
fn takes_calls(message: &Value) -> bool {
    message.get("role").and_then(Value::as_str) == Some("assistant")
}

fn message(object: &Map<String, Value>, param: &str) -> Result<Value, Refusal> {
    let role = match object.get("role").and_then(Value::as_str) {
        Some("developer") | Some("system") => "system",
        Some("user") => "user",
        Some("assistant") => "assistant",
        _ => {
            return Err(Refusal::new(
                format!("{param}.role"),
                "A message's role must be one of user, assistant, system or developer.",
            ))
        }
    };
    let content = match object.get("content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) => {
            let converted = parts
                .iter()
                .map(|part| content_part(part, param))
                .collect::<Result<Vec<_>, _>>()?;
            let all_text = converted
                .iter()
                .all(|p| p.get("type").and_then(Value::as_str) == Some("text"));
            if role != "user" && all_text {
                // Assistant and system content is plain text on every chat upstream.
                Value::String(parts_text(&converted))
            } else if role == "assistant" {
                return Err(Refusal::new(
                    format!("{param}.content"),
                    "Assistant messages may only carry text.",
                ));
            } else {
                Value::Array(converted)
            }
        }
        _ => {
            return Err(Refusal::new(
                format!("{param}.content"),
                "A message's content must be a string or a list of content parts.",
            ))
        }
    };
    Ok(json!({"role": role, "content": content}))
}

fn content_part(part: &Value, param: &str) -> Result<Value, Refusal> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    let text = || part.get("text").and_then(Value::as_str);
    match kind {
        "input_text" | "output_text" | "text" | "summary_text" => match text() {
            Some(text) => Ok(json!({"type": "text", "text": text})),
            None => Err(Refusal::new(
                format!("{param}.content"),
                "A text part needs a 'text' string.",
            )),
        },
        "refusal" => Ok(json!({"type": "text",
            "text": part.get("refusal").and_then(Value::as_str).unwrap_or("")})),
        "input_image" => match part.get("image_url").and_then(Value::as_str) {
            Some(url) => {
                let mut image = json!({"url": url});
                if let Some(detail) = part.get("detail").and_then(Value::as_str) {
                    image["detail"] = json!(detail);
                }
                Ok(json!({"type": "image_url", "image_url": image}))
            }
            None => Err(Refusal::new(
                format!("{param}.content"),
                "input_image needs an 'image_url' (file_id needs a file store this gateway does not have).",
            )),
        },
        other => Err(Refusal::new(
            format!("{param}.content"),
            format!(
                "Content parts of type '{}' cannot be sent to a chat-completions upstream.",
                truncate(other)
            ),
        )),
    }
}

fn function_call(object: &Map<String, Value>, param: &str) -> Result<Value, Refusal> {
    let call_id = string_field(object, "call_id", param)?;
    let name = string_field(object, "name", param)?;
    let arguments = object
        .get("arguments")
        .and_then(Value::as_str)
        .unwrap_or("{}");
    Ok(json!({"id": call_id, "type": "function",
              "function": {"name": name, "arguments": arguments}}))
}

fn string_field(object: &Map<String, Value>, name: &str, param: &str) -> Result<String, Refusal> {
    object
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Refusal::new(format!("{param}.{name}"), format!("'{name}' is required.")))
}

/// The text of content parts (Responses or chat shaped), joined.
pub fn parts_text(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("")
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// The Responses items a stored chat message stands for, with ids derived from `base`
/// (stable for a stored row: `msg_<base>`, `fc_<base>_<n>`, `fco_<base>`).
pub fn message_to_items(message: &Value, base: &str) -> Vec<Value> {
    let role = message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("user");
    let mut items = Vec::new();
    if role == "tool" {
        items.push(json!({
            "id": format!("fco_{base}"), "type": "function_call_output", "status": "completed",
            "call_id": message.get("tool_call_id").cloned().unwrap_or(Value::Null),
            "output": text_of(message.get("content")),
        }));
        return items;
    }
    let content = message.get("content");
    let has_content = match content {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(parts)) => !parts.is_empty(),
        _ => false,
    };
    if has_content || message.get("tool_calls").is_none() {
        let part_type = if role == "assistant" {
            "output_text"
        } else {
            "input_text"
        };
        let parts: Vec<Value> = match content {
            Some(Value::Array(parts)) => parts.iter().map(|p| chat_part(p, part_type)).collect(),
            other => vec![text_part(part_type, &text_of(other))],
        };
        items.push(
            json!({"id": format!("msg_{base}"), "type": "message", "status": "completed",
                          "role": role, "content": parts}),
        );
    }
    for (n, call) in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let function = call.get("function");
        items.push(json!({
            "id": format!("fc_{base}_{n}"), "type": "function_call", "status": "completed",
            "call_id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": function.and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null),
            "arguments": function.and_then(|f| f.get("arguments")).cloned().unwrap_or(json!("")),
        }));
    }
    items
}

fn text_part(kind: &str, text: &str) -> Value {
    if kind == "output_text" {
        json!({"type": kind, "text": text, "annotations": [], "logprobs": []})
    } else {
        json!({"type": kind, "text": text})
    }
}

fn chat_part(part: &Value, text_kind: &str) -> Value {
    match part.get("type").and_then(Value::as_str) {
        Some("image_url") => {
            json!({"type": "input_image", "detail": part.pointer("/image_url/detail").cloned().unwrap_or(json!("auto")),
            "image_url": part.pointer("/image_url/url").cloned().unwrap_or(Value::Null)})
        }
        _ => text_part(
            text_kind,
            part.get("text").and_then(Value::as_str).unwrap_or(""),
        ),
    }
}

fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts_text(parts),
        _ => String::new(),
    }
}
