//! `Translated`: a Responses request as chat fields, the shape every translation step fills in.

use serde_json::{Map, Value};

/// A translated request: the chat fields, this turn's input as chat messages, and what
/// the response object echoes back.
#[derive(Debug, Clone)]
pub struct Translated {
    pub model: String,
    pub stream: bool,
    pub store: bool,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub conversation: Option<String>,
    /// The input items as sent (each normalised to an object with a `type`).
    pub input_items: Vec<Value>,
    /// The same input as chat messages.
    pub input_messages: Vec<Value>,
    /// Chat fields other than `model`, `messages` and `stream`.
    pub chat_fields: Map<String, Value>,
    /// Names of tools removed under `ToolPolicy::Drop`, in request order.
    pub dropped_tools: Vec<String>,
    /// Request fields the response object reports back (tools, tool_choice, text, …).
    pub echo: Map<String, Value>,
}

/// At most 64 characters of a client-supplied name, for refusal messages.
pub(super) fn truncate(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
