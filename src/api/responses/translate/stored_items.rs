//! Stored chat messages → Responses items again, for conversation item lists: read and written as raw JSON text, one part at a time.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::raw::{self, Members};

/// The Responses items a stored chat message (JSON text) stands for, with ids derived
/// from `base` (stable for a stored row: `msg_<base>`, `fc_<base>_<n>`, `fco_<base>`).
/// Values are copied from the message as stored.
pub fn message_to_items(message: &str, base: &str) -> Vec<Box<RawValue>> {
    let message: Members<'_> = serde_json::from_str(message).unwrap_or_default();
    let role = raw::member_text(&message, "role").unwrap_or(Cow::Borrowed("user"));
    let content = message.get("content").copied();
    let mut items = Vec::new();
    if role == "tool" {
        let mut item = format!(
            r#"{{"id":"fco_{base}","type":"function_call_output","status":"completed","call_id":{},"output":"#,
            message.get("tool_call_id").map_or("null", |id| id.get())
        );
        raw::push_string(&mut item, &text_of(content));
        item.push('}');
        items.push(raw::from_json(item));
        return items;
    }
    let has_content = content.is_some_and(|c| match c.get().as_bytes().first() {
        Some(b'"') => c.get() != "\"\"",
        Some(b'[') => !is_empty_list(c),
        _ => false,
    });
    if has_content || !message.contains_key("tool_calls") {
        let part_type = if role == "assistant" {
            "output_text"
        } else {
            "input_text"
        };
        let mut item =
            format!(r#"{{"id":"msg_{base}","type":"message","status":"completed","role":"#);
        raw::push_string(&mut item, &role);
        item.push_str(r#","content":["#);
        match content.filter(|c| raw::is_array(c)) {
            Some(parts) => {
                let _ = raw::for_each(parts, |index, part| {
                    if index > 0 {
                        item.push(',');
                    }
                    push_chat_part(&mut item, part, part_type);
                    Ok(())
                });
            }
            None => push_text_part(&mut item, part_type, &text_of(content)),
        }
        item.push_str("]}");
        items.push(raw::from_json(item));
    }
    if let Some(calls) = message.get("tool_calls").filter(|c| raw::is_array(c)) {
        let _ = raw::for_each(calls, |n, call| {
            let call = raw::members(call).unwrap_or_default();
            let function = call
                .get("function")
                .and_then(|f| raw::members(f))
                .unwrap_or_default();
            let field = |members: &Members<'_>, name: &str, default: &'static str| {
                members.get(name).map_or(default, |v| v.get()).to_string()
            };
            items.push(raw::from_json(format!(
                r#"{{"id":"fc_{base}_{n}","type":"function_call","status":"completed","call_id":{},"name":{},"arguments":{}}}"#,
                field(&call, "id", "null"),
                field(&function, "name", "null"),
                field(&function, "arguments", r#""""#),
            )));
            Ok(())
        });
    }
    items
}

/// `[ ]` and other empty lists, however spaced.
fn is_empty_list(value: &RawValue) -> bool {
    raw::is_array(value) && value.get()[1..].trim_start().starts_with(']')
}

fn push_text_part(out: &mut String, kind: &str, text: &str) {
    out.push_str(r#"{"type":""#);
    out.push_str(kind);
    out.push_str(r#"","text":"#);
    raw::push_string(out, text);
    if kind == "output_text" {
        out.push_str(r#","annotations":[],"logprobs":[]"#);
    }
    out.push('}');
}

/// A chat content part as a Responses one: an image, or text of `text_kind`.
fn push_chat_part(out: &mut String, part: &RawValue, text_kind: &str) {
    let part = raw::members(part).unwrap_or_default();
    if raw::member_text(&part, "type").as_deref() == Some("image_url") {
        let image = part
            .get("image_url")
            .and_then(|i| raw::members(i))
            .unwrap_or_default();
        out.push_str(&format!(
            r#"{{"type":"input_image","detail":{},"image_url":{}}}"#,
            image.get("detail").map_or(r#""auto""#, |d| d.get()),
            image.get("url").map_or("null", |u| u.get()),
        ));
        return;
    }
    let text = raw::member_text(&part, "text").unwrap_or_default();
    push_text_part(out, text_kind, &text);
}

/// The text of a message's content: a string, or its parts' texts joined.
fn text_of(content: Option<&RawValue>) -> String {
    match content {
        Some(text) if raw::is_string(text) => raw::text(text).unwrap_or_default().into_owned(),
        Some(parts) if raw::is_array(parts) => {
            let mut text = String::new();
            let _ = raw::for_each(parts, |_, part| {
                if let Some(piece) = raw::members(part).and_then(|p| raw::member_text(&p, "text")) {
                    text.push_str(&piece);
                }
                Ok(())
            });
            text
        }
        _ => String::new(),
    }
}
