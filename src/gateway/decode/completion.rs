//! Reads a whole (non-streamed) chat completion into a `Reply`: `choices`, `usage` and `model`, the rest skipped unread.

use serde::Deserialize;
use serde_json::Value;

use super::chat::Reply;
use super::usage::{Shape, Usage};

impl Reply {
    /// A finished, non-streamed chat completion; `None` without a `choices[0].message`
    /// object. Only `choices`, `usage` and `model` are built; the rest of the body (id,
    /// object, created, system fingerprint, anything else) is skipped.
    pub fn from_completion(body: &[u8]) -> Option<Reply> {
        let mut completion: Completion = serde_json::from_slice(body).ok()?;
        let choice = completion.choices.get_mut(0)?;
        let finish_reason = choice.get("finish_reason").and_then(Value::as_str);
        let finish_reason = finish_reason.map(str::to_string);
        let message = choice.get_mut("message").filter(|m| m.is_object())?.take();
        Some(Reply {
            message,
            finish_reason,
            usage: completion
                .usage
                .and_then(|u| Usage::from_owned(Shape::Chat, u)),
            model: completion.model.and_then(|m| match m {
                Value::String(model) => Some(model),
                _ => None,
            }),
        })
    }
}

/// What a whole chat completion is read for. A member of an unexpected type reads as
/// absent (`Value`), as when the whole body was read into a `Value`.
#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Value,
    usage: Option<Value>,
    model: Option<Value>,
}
