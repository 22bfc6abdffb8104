//! Reads an upstream's chat-completions reply, streamed or not, once: into neutral deltas and the assembled `Reply`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use super::end::DoneScanner;
use super::sse::{Line, SseLines};
use super::usage::{Shape, Usage};

/// One step of a streamed reply, in the order the upstream sent it (choice 0 only), for
/// callers that re-emit the reply as it grows (e.g. as Responses API events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// More of the answer's text (never empty).
    Text(String),
    /// More of a refusal's text (never empty).
    Refusal(String),
    /// A fragment of tool call `index`: `name` and `arguments` continue what came before
    /// (either may be empty); `id` and `kind` come once, usually first.
    ToolCall {
        index: u64,
        id: Option<String>,
        kind: Option<String>,
        name: String,
        arguments: String,
    },
    /// Why the upstream stopped (`stop`, `length`, `tool_calls`, …).
    Finish(String),
    /// `data: [DONE]`: the stream is complete; nothing after it is read.
    Done,
}

/// The finished (or so far received) reply, the same whether it was streamed or not.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The assistant message in the shape of a non-streamed reply's `choices[0].message`.
    pub message: Value,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// The model the upstream says answered (`model`), if it said.
    pub model: Option<String>,
}

/// Feed it the relayed chat-completion SSE bytes in whatever pieces they arrive; it
/// finds where the stream ends, and (unless only the end is wanted) hands back the
/// deltas they complete and keeps the reply assembled so far.
pub struct ChatDecoder {
    /// Where the stream ends, found in place: the one completeness rule.
    end: DoneScanner,
    /// Lines and the reply so far; absent when only the end matters (byte-faithful chat
    /// that stores nothing reads no JSON).
    content: Option<(SseLines, State)>,
}

impl Default for ChatDecoder {
    fn default() -> Self {
        ChatDecoder {
            end: DoneScanner::new(),
            content: Some(Default::default()),
        }
    }
}

#[derive(Default)]
struct State {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, CallParts>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    model: Option<String>,
    /// The upstream reported an error inside the stream.
    upstream_error: bool,
    /// Only the model, finish reason and usage are kept (no content, no deltas).
    summary_only: bool,
}

#[derive(Default)]
struct CallParts {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

impl ChatDecoder {
    /// A decoder that only finds the end of the stream.
    pub fn ends_only() -> Self {
        ChatDecoder {
            end: DoneScanner::new(),
            content: None,
        }
    }

    /// A decoder that keeps only what a reply says about itself (model, finish reason,
    /// usage): no content is held and no delta is made.
    pub fn summary() -> Self {
        let state = State {
            summary_only: true,
            ..State::default()
        };
        ChatDecoder {
            end: DoneScanner::new(),
            content: Some((SseLines::default(), state)),
        }
    }

    /// Reads one chunk, appending the deltas it completes to `out`. Returns where in
    /// this chunk the `data: [DONE]` line starts (0 if it began in an earlier chunk),
    /// the first time it is complete; nothing after it is read.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Delta>) -> Option<usize> {
        if self.end.seen() {
            return None;
        }
        let done_at = self.end.push(bytes);
        if let Some((lines, state)) = &mut self.content {
            let before_end = &bytes[..done_at.unwrap_or(bytes.len())];
            lines.push(before_end, |line| {
                if let Line::Data(data) = line {
                    state.data(data, out);
                }
            });
            if done_at.is_some() {
                out.push(Delta::Done);
            }
        }
        done_at
    }

    /// Whether the content is read (not only the end).
    pub fn decodes(&self) -> bool {
        self.content.is_some()
    }

    /// `data: [DONE]` was seen: the stream is complete.
    pub fn is_done(&self) -> bool {
        self.end.seen()
    }

    /// The reply cannot be trusted whole: the upstream reported an error inside its
    /// stream, or a line too long to read was skipped. Such a turn is not stored.
    pub fn incomplete(&self) -> bool {
        self.missed()
            || self
                .content
                .as_ref()
                .is_some_and(|(_, state)| state.upstream_error)
    }

    /// A line over the SSE line cap was skipped, so `reply` lacks part of what was sent.
    pub fn missed(&self) -> bool {
        self.content
            .as_ref()
            .is_some_and(|(lines, _)| lines.missed())
    }

    /// The usage the stream reported so far (read without assembling the reply).
    pub fn usage(&self) -> Option<&Usage> {
        self.content
            .as_ref()
            .and_then(|(_, state)| state.usage.as_ref())
    }

    /// The reply assembled so far.
    pub fn reply(&self) -> Reply {
        let empty = State::default();
        let state = self.content.as_ref().map_or(&empty, |(_, state)| state);
        let mut message = Map::new();
        let role = state.role.as_deref().unwrap_or("assistant");
        message.insert("role".into(), json!(role));
        message.insert("content".into(), json!(state.content));
        if let Some(refusal) = &state.refusal {
            message.insert("refusal".into(), json!(refusal));
        }
        if !state.tool_calls.is_empty() {
            let calls = state.tool_calls.values().map(|call| {
                json!({
                    "id": call.id,
                    "type": call.kind.as_deref().unwrap_or("function"),
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            });
            message.insert("tool_calls".into(), Value::Array(calls.collect()));
        }
        Reply {
            message: Value::Object(message),
            finish_reason: state.finish_reason.clone(),
            usage: state.usage.clone(),
            model: state.model.clone(),
        }
    }
}

impl State {
    fn data(&mut self, data: &[u8], out: &mut Vec<Delta>) {
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else {
            return;
        };
        if chunk.error.is_some() {
            self.upstream_error = true;
        }
        if self.model.is_none() {
            self.model = chunk
                .model
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
        }
        if let Some(usage) = chunk
            .usage
            .as_ref()
            .and_then(|u| Usage::from_shape(Shape::Chat, u))
        {
            self.usage = Some(usage);
        }
        let choices = chunk.choices.into_iter().flatten();
        let Some(choice) = choices.into_iter().find(|c| c.index.unwrap_or(0) == 0) else {
            return;
        };
        if let Some(delta) = choice.delta.filter(|_| !self.summary_only) {
            self.delta(delta, out);
        }
        if let Some(reason) = choice.finish_reason {
            if !self.summary_only {
                out.push(Delta::Finish(reason.clone()));
            }
            self.finish_reason = Some(reason);
        }
    }

    fn delta(&mut self, delta: ChoiceDelta, out: &mut Vec<Delta>) {
        if let Some(role) = delta.role {
            self.role = Some(role);
        }
        if let Some(text) = delta.content {
            self.content.get_or_insert_with(String::new).push_str(&text);
            if !text.is_empty() {
                out.push(Delta::Text(text));
            }
        }
        if let Some(text) = delta.refusal {
            self.refusal.get_or_insert_with(String::new).push_str(&text);
            if !text.is_empty() {
                out.push(Delta::Refusal(text));
            }
        }
        for call in delta.tool_calls.into_iter().flatten() {
            let index = call.index.unwrap_or(0);
            let function = call.function.unwrap_or_default();
            let name = function.name.unwrap_or_default();
            let arguments = function.arguments.unwrap_or_default();
            let parts = self.tool_calls.entry(index).or_default();
            if call.id.is_some() {
                parts.id.clone_from(&call.id);
            }
            if call.kind.is_some() {
                parts.kind.clone_from(&call.kind);
            }
            parts.name.push_str(&name);
            parts.arguments.push_str(&arguments);
            out.push(Delta::ToolCall {
                index,
                id: call.id,
                kind: call.kind,
                name,
                arguments,
            });
        }
    }
}

// One streamed chunk, typed so each data line is parsed once without building a `Value`
// tree. Scalars of an unexpected type read as absent instead of losing the whole chunk.

#[derive(Deserialize)]
struct Chunk<'a> {
    /// Borrowed and read only until one is found: no allocation per chunk.
    #[serde(default, borrow)]
    model: Option<&'a serde_json::value::RawValue>,
    choices: Option<Vec<Choice>>,
    usage: Option<Value>,
    /// An error the upstream reported inside its stream (vLLM sends one, then `[DONE]`).
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default, deserialize_with = "number")]
    index: Option<u64>,
    delta: Option<ChoiceDelta>,
    #[serde(default, deserialize_with = "string")]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceDelta {
    #[serde(default, deserialize_with = "string")]
    role: Option<String>,
    #[serde(default, deserialize_with = "string")]
    content: Option<String>,
    #[serde(default, deserialize_with = "string")]
    refusal: Option<String>,
    tool_calls: Option<Vec<CallDelta>>,
}

#[derive(Deserialize)]
struct CallDelta {
    #[serde(default, deserialize_with = "number")]
    index: Option<u64>,
    #[serde(default, deserialize_with = "string")]
    id: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "string")]
    kind: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize, Default)]
struct FunctionDelta {
    #[serde(default, deserialize_with = "string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "string")]
    arguments: Option<String>,
}

fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Value::deserialize(d)?.as_u64())
}

#[cfg(test)]
#[path = "chat_tests.rs"]
mod tests;
