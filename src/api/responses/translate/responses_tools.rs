//! Responses API tools → chat tools: function tools reshaped, the rest dropped or refused per `[responses] unsupported_tools`. Schemas pass through as raw JSON.

use serde_json::value::RawValue;

use super::raw::{self, Members};
use super::translated::{truncate, Echo, Translated};
use super::Refusal;
pub use crate::config::ToolPolicy;

/// Built-in tools only OpenAI's Responses backend can run.
const BUILT_IN_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "file_search",
    "code_interpreter",
    "computer_use",
    "computer_use_preview",
    "image_generation",
    "mcp",
    "local_shell",
];

/// The function tools in chat's nested shape, and their names.
#[derive(Default)]
pub(super) struct ChatTools {
    /// A JSON list; `None` when no function tool is left.
    pub json: Option<Box<RawValue>>,
    pub names: Vec<String>,
}

/// Function tools in chat's nested shape; built-in and unknown tools dropped or refused.
/// The function tools are echoed as sent.
pub(super) fn tools(
    value: Option<&RawValue>,
    policy: ToolPolicy,
    out: &mut Translated,
    echo: &mut Echo,
) -> Result<ChatTools, Refusal> {
    let list = match value {
        None => return Ok(ChatTools::default()),
        Some(v) if raw::is_null(v) => return Ok(ChatTools::default()),
        Some(v) if raw::is_array(v) => v,
        Some(_) => return Err(Refusal::new("tools", "'tools' must be a list.")),
    };
    let mut chat = String::from("[");
    let mut echoed = String::from("[");
    let mut names = Vec::new();
    raw::for_each(list, |index, tool| {
        let members = raw::members(tool).unwrap_or_default();
        let kind = raw::member_text(&members, "type").unwrap_or_default();
        if kind == "function" {
            let name = members.get("name").copied().filter(|n| raw::is_string(n));
            let Some(name) = name else {
                return Err(Refusal::new(
                    format!("tools[{index}].name"),
                    "Function tools need a 'name'.",
                ));
            };
            if !names.is_empty() {
                chat.push(',');
                echoed.push(',');
            }
            push_chat_function(&mut chat, name, &members);
            // `strict` is accepted and ignored: not every chat upstream enforces schemas.
            echoed.push_str(tool.get());
            names.push(raw::text(name).unwrap_or_default().into_owned());
            return Ok(());
        }
        let label = tool_label(&members, &kind);
        if policy == ToolPolicy::Reject {
            let what = if BUILT_IN_TOOLS.contains(&kind.as_ref()) {
                "built-in"
            } else {
                "unknown"
            };
            return Err(Refusal::new(
                format!("tools[{index}]"),
                format!("The {what} tool '{label}' cannot run on a chat-completions upstream ([responses] unsupported_tools = \"reject\")."),
            ));
        }
        out.dropped_tools.push(label);
        Ok(())
    })?;
    chat.push(']');
    echoed.push(']');
    echo.tools = Some(raw::from_json(echoed));
    Ok(ChatTools {
        json: (!names.is_empty()).then(|| raw::from_json(chat)),
        names,
    })
}

/// `{"type":"function","function":{"name":…,"description":…,"parameters":…}}`, the
/// description and parameters copied as sent.
fn push_chat_function(chat: &mut String, name: &RawValue, tool: &Members<'_>) {
    chat.push_str(r#"{"type":"function","function":{"name":"#);
    chat.push_str(name.get());
    for key in ["description", "parameters"] {
        if let Some(value) = tool.get(key).filter(|v| !raw::is_null(v)) {
            chat.push_str(",\"");
            chat.push_str(key);
            chat.push_str("\":");
            chat.push_str(value.get());
        }
    }
    chat.push_str("}}");
}

/// A tool's name for the drop header and messages: its type, or `namespace:name`.
fn tool_label(tool: &Members<'_>, kind: &str) -> String {
    let kind = if kind.is_empty() { "unknown" } else { kind };
    let label = match raw::member_text(tool, "name") {
        Some(name) if !BUILT_IN_TOOLS.contains(&kind) => format!("{kind}:{name}"),
        _ => kind.to_string(),
    };
    label
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

/// The chat `tool_choice` for a Responses one, given the function tools' names and the
/// labels of the tools dropped.
pub(super) fn tool_choice(
    value: &RawValue,
    names: &[String],
    dropped: &[String],
) -> Result<Box<RawValue>, Refusal> {
    const PARAM: &str = "tool_choice";
    if let Some(mode) = raw::text(value) {
        if ["auto", "none", "required"].contains(&mode.as_ref()) {
            return Ok(raw::owned(value));
        }
    }
    let Some(choice) = raw::members(value) else {
        return Err(Refusal::new(
            PARAM,
            "tool_choice must be auto, none, required or a function.",
        ));
    };
    let kind = raw::member_text(&choice, "type").unwrap_or_default();
    if kind == "function" {
        let name = raw::member_text(&choice, "name").unwrap_or_default();
        if !names.iter().any(|known| *known == name) {
            return Err(Refusal::new(
                PARAM,
                format!(
                    "tool_choice names the function '{}', which is not in 'tools'.",
                    truncate(&name)
                ),
            ));
        }
        let mut chat = String::from(r#"{"type":"function","function":{"name":"#);
        raw::push_string(&mut chat, &name);
        chat.push_str("}}");
        return Ok(raw::from_json(chat));
    }
    if dropped
        .iter()
        .any(|d| *d == kind || d.starts_with(&format!("{kind}:")))
    {
        return Err(Refusal::new(PARAM, format!("tool_choice forces the tool '{}', which a chat-completions upstream cannot run and was dropped.", truncate(&kind))));
    }
    Err(Refusal::new(
        PARAM,
        "This tool_choice cannot be translated for a chat-completions upstream.",
    ))
}
