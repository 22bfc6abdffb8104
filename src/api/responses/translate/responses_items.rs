//! Responses input items → chat messages, read from the raw JSON one item and one part at a time: no `Value` tree of the input is ever built.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::random_id;
use super::raw::{self, Members};
use super::translated::truncate;
use super::Refusal;

/// Chat messages (JSON text each) for a JSON list of Responses input items, in order.
pub fn items_to_messages(items: &RawValue) -> Result<Vec<String>, Refusal> {
    let mut messages = Messages::default();
    raw::for_each(items, |index, item| {
        messages.push(index, &item_members(index, item)?)
    })?;
    Ok(messages.finish())
}

/// An input item's members; refused unless it is an object.
pub fn item_members(index: usize, item: &RawValue) -> Result<Members<'_>, Refusal> {
    raw::members(item).ok_or_else(|| {
        Refusal::new(
            format!("input[{index}]"),
            "Each input item must be an object.",
        )
    })
}

/// Chat messages built from items in order. `function_call` items join the assistant
/// message before them (chat carries calls on the assistant message), so the last
/// assistant message stays open; `reasoning` items have no chat equivalent and carry
/// nothing a chat upstream can use, so they are skipped.
#[derive(Default)]
pub struct Messages {
    done: Vec<String>,
    /// The last assistant message without its closing brace, and whether its
    /// `tool_calls` list is open.
    open: Option<(String, bool)>,
}

impl Messages {
    pub fn push(&mut self, index: usize, item: &Members<'_>) -> Result<(), Refusal> {
        let param = || format!("input[{index}]");
        match raw::member_text(item, "type").as_deref() {
            None | Some("message") => {
                let (role, mut message) = message(item, &param())?;
                self.close();
                if role == "assistant" {
                    self.open = Some((message, false));
                } else {
                    message.push('}');
                    self.done.push(message);
                }
            }
            Some("function_call") => {
                let call = function_call(item, &param())?;
                let (message, has_calls) = self.open.get_or_insert_with(|| {
                    (r#"{"role":"assistant","content":null"#.to_string(), false)
                });
                message.push_str(if *has_calls {
                    ","
                } else {
                    r#","tool_calls":["#
                });
                message.push_str(&call);
                *has_calls = true;
            }
            Some("function_call_output") => {
                let call_id = string_member(item, "call_id", &param())?;
                let mut message = String::from(r#"{"role":"tool","tool_call_id":"#);
                message.push_str(call_id.get());
                message.push_str(r#","content":"#);
                match item.get("output") {
                    Some(output) if raw::is_string(output) => message.push_str(output.get()),
                    Some(output) if raw::is_array(output) => {
                        raw::push_string(&mut message, &parts_text(output))
                    }
                    _ => {
                        return Err(Refusal::new(
                            format!("{}.output", param()),
                            "function_call_output needs an 'output' string.",
                        ))
                    }
                }
                message.push('}');
                self.close();
                self.done.push(message);
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
        Ok(())
    }

    fn close(&mut self) {
        if let Some((mut message, has_calls)) = self.open.take() {
            if has_calls {
                message.push(']');
            }
            message.push('}');
            self.done.push(message);
        }
    }

    pub fn finish(mut self) -> Vec<String> {
        self.close();
        self.done
    }
}

/// A message's role and its chat JSON without the closing brace.
fn message(item: &Members<'_>, param: &str) -> Result<(&'static str, String), Refusal> {
    let role = match raw::member_text(item, "role").as_deref() {
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
    let content = item.get("content").copied();
    let mut out = String::with_capacity(40 + content.map_or(0, |c| c.get().len()));
    out.push_str(r#"{"role":""#);
    out.push_str(role);
    out.push_str(r#"","content":"#);
    match content {
        Some(text) if raw::is_string(text) => out.push_str(text.get()),
        Some(parts) if raw::is_array(parts) => content_parts(parts, role, param, &mut out)?,
        _ => {
            return Err(Refusal::new(
                format!("{param}.content"),
                "A message's content must be a string or a list of content parts.",
            ))
        }
    }
    Ok((role, out))
}

/// A content part, checked: text (a JSON string) or an image.
enum Part<'a> {
    Text(Option<&'a RawValue>),
    Image {
        url: &'a RawValue,
        detail: Option<&'a RawValue>,
    },
}

/// The fields of a content part this translation reads (others are skipped unread).
#[derive(Deserialize, Default)]
struct PartFields<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow, default)]
    image_url: Option<&'a RawValue>,
    #[serde(borrow, default)]
    detail: Option<&'a RawValue>,
}

fn part<'a>(part: &'a RawValue, param: &str) -> Result<Part<'a>, Refusal> {
    let fields: PartFields<'a> = match raw::is_object(part) {
        true => serde_json::from_str(part.get()).map_err(|_| {
            Refusal::new(
                format!("{param}.content"),
                "A content part must name each field once.",
            )
        })?,
        false => PartFields::default(),
    };
    let string = |value: Option<&'a RawValue>| value.filter(|v| raw::is_string(v));
    let kind = fields.kind.and_then(raw::text).unwrap_or_default();
    match kind.as_ref() {
        "input_text" | "output_text" | "text" | "summary_text" => match string(fields.text) {
            Some(text) => Ok(Part::Text(Some(text))),
            None => Err(Refusal::new(
                format!("{param}.content"),
                "A text part needs a 'text' string.",
            )),
        },
        "refusal" => Ok(Part::Text(string(fields.refusal))),
        "input_image" => match string(fields.image_url) {
            Some(url) => Ok(Part::Image {
                url,
                detail: string(fields.detail),
            }),
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

/// Content parts as chat content: assistant and system text is plain text on every chat
/// upstream, so all-text parts join into one string; user parts stay a list.
fn content_parts(
    parts: &RawValue,
    role: &str,
    param: &str,
    out: &mut String,
) -> Result<(), Refusal> {
    if role != "user" {
        let mut text = String::new();
        let mut has_image = false;
        raw::for_each(parts, |_, raw_part| {
            match part(raw_part, param)? {
                Part::Text(Some(piece)) => text.push_str(&raw::text(piece).unwrap_or_default()),
                Part::Text(None) => {}
                Part::Image { .. } => has_image = true,
            }
            Ok(())
        })?;
        if !has_image {
            raw::push_string(out, &text);
            return Ok(());
        }
        if role == "assistant" {
            return Err(Refusal::new(
                format!("{param}.content"),
                "Assistant messages may only carry text.",
            ));
        }
    }
    out.push('[');
    raw::for_each(parts, |index, raw_part| {
        if index > 0 {
            out.push(',');
        }
        match part(raw_part, param)? {
            Part::Text(text) => {
                out.push_str(r#"{"type":"text","text":"#);
                out.push_str(text.map_or(r#""""#, RawValue::get));
                out.push('}');
            }
            Part::Image { url, detail } => {
                out.push_str(r#"{"type":"image_url","image_url":{"url":"#);
                out.push_str(url.get());
                if let Some(detail) = detail {
                    out.push_str(r#","detail":"#);
                    out.push_str(detail.get());
                }
                out.push_str("}}");
            }
        }
        Ok(())
    })?;
    out.push(']');
    Ok(())
}

/// A chat tool call for a `function_call` item.
fn function_call(item: &Members<'_>, param: &str) -> Result<String, Refusal> {
    let call_id = string_member(item, "call_id", param)?;
    let name = string_member(item, "name", param)?;
    let arguments = item
        .get("arguments")
        .copied()
        .filter(|a| raw::is_string(a))
        .map_or(r#""{}""#, RawValue::get);
    Ok(format!(
        r#"{{"id":{},"type":"function","function":{{"name":{},"arguments":{arguments}}}}}"#,
        call_id.get(),
        name.get()
    ))
}

/// A member that must be a JSON string, as raw JSON.
fn string_member<'a>(item: &Members<'a>, name: &str, param: &str) -> Result<&'a RawValue, Refusal> {
    item.get(name)
        .copied()
        .filter(|v| raw::is_string(v))
        .ok_or_else(|| Refusal::new(format!("{param}.{name}"), format!("'{name}' is required.")))
}

/// The text of a list of content parts, joined (parts without a `text` string add nothing).
fn parts_text(parts: &RawValue) -> String {
    let mut text = String::new();
    let _ = raw::for_each(parts, |_, part| {
        if let Some(piece) = raw::members(part).and_then(|m| raw::member_text(&m, "text")) {
            text.push_str(&piece);
        }
        Ok(())
    });
    text
}

/// Appends an input item as `input_items` lists it: a message without `type` gets
/// `"type":"message"`, and an item without a string `id` gets a new one.
pub fn push_listed_item(item: &Members<'_>, out: &mut Vec<u8>) {
    let mut listed: BTreeMap<&str, &RawValue> = item
        .iter()
        .map(|(name, value)| (name.as_str(), *value))
        .collect();
    let message = raw::from_json(r#""message""#.to_string());
    if !item.contains_key("type") && item.contains_key("role") {
        listed.insert("type", &message);
    }
    let id;
    if !item.get("id").is_some_and(|id| raw::is_string(id)) {
        let prefix = match listed.get("type").and_then(|t| raw::text(t)).as_deref() {
            Some("function_call") => "fc",
            Some("function_call_output") => "fco",
            Some("reasoning") => "rs",
            _ => "msg",
        };
        id = raw::from_json(format!("\"{}\"", random_id(prefix)));
        listed.insert("id", &id);
    }
    // Writing to a Vec cannot fail, and every value is JSON already.
    let _ = serde_json::to_writer(out, &listed);
}
