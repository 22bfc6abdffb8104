//! `Translated`: a Responses request as chat fields, the shape every translation step fills in.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::value::RawValue;

/// A translated request: the chat fields, this turn's input as chat messages, and what
/// the response object echoes back. Values that pass through are kept as raw JSON text,
/// copied once from the body, never as `Value` trees.
#[derive(Debug, Clone)]
pub struct Translated {
    pub model: String,
    pub stream: bool,
    pub store: bool,
    pub previous_response_id: Option<String>,
    pub conversation: Option<String>,
    /// The input items as `input_items` lists them: one JSON array, each item an object
    /// with a `type` (messages without one get `"message"`) and an `id`. Written only
    /// for a response that is stored (`[]` otherwise).
    pub input_items: String,
    /// The same input as chat messages (JSON text each).
    pub input_messages: Vec<String>,
    /// Chat fields other than `model`, `messages` and `stream`, as raw JSON.
    pub chat_fields: BTreeMap<&'static str, Box<RawValue>>,
    /// Names of tools removed under `ToolPolicy::Drop`, in request order.
    pub dropped_tools: Vec<String>,
    /// What the response object reports back; shared, never copied, by the response
    /// objects and events of the turn.
    pub echo: Arc<Echo>,
}

/// Request fields the response object reports back, as the client sent them (raw JSON).
#[derive(Debug, Clone, Default)]
pub struct Echo {
    /// `instructions`: a JSON string; also the chat request's system message.
    pub instructions: Option<Box<RawValue>>,
    /// Only the function tools: the others never reach the upstream.
    pub tools: Option<Box<RawValue>>,
    pub fields: BTreeMap<&'static str, Box<RawValue>>,
}

impl Echo {
    pub fn field(&self, name: &str) -> Option<&RawValue> {
        self.fields.get(name).map(AsRef::as_ref)
    }
}

/// At most 64 characters of a client-supplied name, for refusal messages.
pub(super) fn truncate(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
