//! Stored chat messages → Responses items again, for `input_items` and conversation item lists.

use serde_json::{json, Value};

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

/// The text of content parts (Responses or chat shaped), joined.
fn parts_text(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("")
}
