//! Responses API tools → chat tools: function tools reshaped, the rest dropped or refused per `[responses] unsupported_tools`.

use serde_json::{json, Value};

use super::translated::{truncate, Translated};
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

/// Function tools in chat's nested shape; built-in and unknown tools dropped or refused.
pub(super) fn tools(
    value: Option<Value>,
    policy: ToolPolicy,
    out: &mut Translated,
) -> Result<Vec<Value>, Refusal> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(Refusal::new("tools", "'tools' must be a list.")),
    };
    out.echo.insert("tools".into(), Value::Array(Vec::new()));
    let mut chat_tools = Vec::with_capacity(items.len());
    for (index, tool) in items.into_iter().enumerate() {
        let kind = tool
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if kind == "function" {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                return Err(Refusal::new(
                    format!("tools[{index}].name"),
                    "Function tools need a 'name'.",
                ));
            };
            let mut function = json!({"name": name});
            for key in ["description", "parameters"] {
                if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                    function[key] = v.clone();
                }
            }
            // `strict` is accepted and ignored: not every chat upstream enforces schemas.
            chat_tools.push(json!({"type": "function", "function": function}));
            if let Some(Value::Array(echoed)) = out.echo.get_mut("tools") {
                echoed.push(tool);
            }
            continue;
        }
        let label = tool_label(&tool, &kind);
        if policy == ToolPolicy::Reject {
            let what = if BUILT_IN_TOOLS.contains(&kind.as_str()) {
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
    }
    Ok(chat_tools)
}

/// A tool's name for the drop header and messages: its type, or `namespace:name`.
fn tool_label(tool: &Value, kind: &str) -> String {
    let kind = if kind.is_empty() { "unknown" } else { kind };
    let label = match tool.get("name").and_then(Value::as_str) {
        Some(name) if !BUILT_IN_TOOLS.contains(&kind) => format!("{kind}:{name}"),
        _ => kind.to_string(),
    };
    label
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

pub(super) fn tool_choice(
    value: &Value,
    tools: &[Value],
    dropped: &[String],
) -> Result<Value, Refusal> {
    const PARAM: &str = "tool_choice";
    match value {
        Value::String(mode) if ["auto", "none", "required"].contains(&mode.as_str()) => {
            Ok(value.clone())
        }
        Value::Object(choice) => {
            let kind = choice.get("type").and_then(Value::as_str).unwrap_or("");
            if kind == "function" {
                let name = choice.get("name").and_then(Value::as_str).unwrap_or("");
                let known = tools
                    .iter()
                    .any(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name));
                if !known {
                    return Err(Refusal::new(
                        PARAM,
                        format!(
                            "tool_choice names the function '{}', which is not in 'tools'.",
                            truncate(name)
                        ),
                    ));
                }
                return Ok(json!({"type": "function", "function": {"name": name}}));
            }
            if dropped
                .iter()
                .any(|d| d == kind || d.starts_with(&format!("{kind}:")))
            {
                return Err(Refusal::new(PARAM, format!("tool_choice forces the tool '{}', which a chat-completions upstream cannot run and was dropped.", truncate(kind))));
            }
            Err(Refusal::new(
                PARAM,
                "This tool_choice cannot be translated for a chat-completions upstream.",
            ))
        }
        _ => Err(Refusal::new(
            PARAM,
            "tool_choice must be auto, none, required or a function.",
        )),
    }
}
