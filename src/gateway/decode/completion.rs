//! Reads a whole (non-streamed) chat completion into a `Reply`: `choices[0]`, `usage` and `model`, the rest skipped unread.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::chat::Reply;
use super::usage::{Shape, Usage};

impl Reply {
    /// A finished, non-streamed chat completion; `None` without a `choices[0].message` object.
    /// Only `choices[0]`, `usage` and `model` are built; the rest of the body is skipped.
    pub fn from_completion(body: &[u8]) -> Option<Reply> {
        let completion: Completion = serde_json::from_slice(body).ok()?;
        let choice = completion.choices?.0?;
        let message = choice.message.filter(Value::is_object)?;
        Some(Reply {
            message,
            finish_reason: choice.finish_reason.and_then(into_string),
            usage: completion
                .usage
                .and_then(|u| Usage::from_owned(Shape::Chat, u)),
            model: completion.model.and_then(into_string),
        })
    }
}

/// What a whole chat completion is read for. A member of an unexpected type reads as
/// absent (`Value`), as it did when the whole body was read into a `Value`.
#[derive(Deserialize)]
struct Completion {
    #[serde(default, deserialize_with = "first_choice")]
    choices: Option<FirstChoice>,
    usage: Option<Value>,
    model: Option<Value>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: Option<Value>,
    finish_reason: Option<Value>,
}

/// `choices[0]`, when `choices` is an array; the other choices are skipped unread.
struct FirstChoice(Option<CompletionChoice>);

fn first_choice<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FirstChoice>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Option<FirstChoice>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("anything")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<CompletionChoice>()?;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Some(FirstChoice(first)))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Visit)
}

fn into_string(value: Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text),
        _ => None,
    }
}
