//! Reads token usage the way each upstream API reports it: a whole body's `usage`, and a native stream's usage events and output text.
//!
//! Chat completions (and completions, embeddings): `usage.prompt_tokens`,
//! `completion_tokens`, `prompt_tokens_details.cached_tokens`,
//! `completion_tokens_details.reasoning_tokens`. Responses: `usage.input_tokens`,
//! `output_tokens`, `input_tokens_details.cached_tokens`,
//! `output_tokens_details.reasoning_tokens`, in the body or the `response.completed`
//! (`.incomplete`, `.failed`) event. Anthropic Messages: `usage.input_tokens` plus the
//! cache reads and writes (cache reads are the cached part), `usage.output_tokens`; in a
//! stream `message_start` carries the input and `message_delta` the output so far.

use serde::Deserialize;
use serde_json::Value;

use super::sse::{Line, SseLines};

/// Token counts of a reply, named by what they bill rather than by the upstream's field names.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Part of `input_tokens` served from the upstream's prompt cache.
    pub cached_input_tokens: u64,
    /// Part of `output_tokens` spent on hidden reasoning.
    pub reasoning_tokens: u64,
    /// The upstream's `usage` object as sent, for whoever needs more than the counts.
    pub raw: Value,
}

/// Which API's usage shape a reply has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Responses,
    Anthropic,
}

impl Usage {
    /// A `usage` object of the given shape, taken as it is; `None` when it is not an object.
    pub fn from_owned(shape: Shape, raw: Value) -> Option<Usage> {
        raw.is_object().then(|| Usage::counted(shape, raw))
    }

    /// A `usage` object of the given shape; `None` when it is not an object.
    pub fn from_shape(shape: Shape, raw: &Value) -> Option<Usage> {
        if !raw.is_object() {
            return None;
        }
        Some(Usage::counted(shape, raw.clone()))
    }

    /// The counts of an object `raw` of the given shape, which it keeps.
    fn counted(shape: Shape, raw: Value) -> Usage {
        // A walk by keys, not `Value::pointer`, which splits and unescapes its path (and
        // allocates) on every call.
        let n = |path: &[&str]| {
            path.iter()
                .try_fold(&raw, |value, key| value.get(key))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let (input, output, cached, reasoning) = match shape {
            Shape::Chat => (
                n(&["prompt_tokens"]),
                n(&["completion_tokens"]),
                n(&["prompt_tokens_details", "cached_tokens"]),
                n(&["completion_tokens_details", "reasoning_tokens"]),
            ),
            Shape::Responses => (
                n(&["input_tokens"]),
                n(&["output_tokens"]),
                n(&["input_tokens_details", "cached_tokens"]),
                n(&["output_tokens_details", "reasoning_tokens"]),
            ),
            Shape::Anthropic => (
                n(&["input_tokens"])
                    + n(&["cache_read_input_tokens"])
                    + n(&["cache_creation_input_tokens"]),
                n(&["output_tokens"]),
                n(&["cache_read_input_tokens"]),
                0,
            ),
        };
        Usage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: cached,
            reasoning_tokens: reasoning,
            raw,
        }
    }

    /// The usage a whole (non-streamed) answer reports in its top-level `usage`.
    pub fn from_body(shape: Shape, body: &[u8]) -> Option<Usage> {
        #[derive(Deserialize)]
        struct Body {
            usage: Option<Value>,
        }
        let body: Body = serde_json::from_slice(body).ok()?;
        // The parsed object is kept as the raw usage: no copy.
        let usage = body.usage.filter(Value::is_object)?;
        Some(Usage::counted(shape, usage))
    }
}

/// Reads a native (Responses or Anthropic) stream for its usage and the text of its
/// output, in chunks of any size. The bytes themselves pass on untouched.
pub struct NativeUsage {
    shape: Shape,
    lines: SseLines,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type", default, deserialize_with = "string")]
    kind: Option<String>,
    /// Responses: the response object of `response.completed` and its siblings.
    response: Option<Holder>,
    /// Anthropic: the message of `message_start`.
    message: Option<Holder>,
    /// Anthropic: `message_delta`'s usage.
    usage: Option<Value>,
    /// Responses: a text delta (a string); Anthropic: a content block delta (an object).
    delta: Option<Value>,
}

#[derive(Deserialize)]
struct Holder {
    usage: Option<Value>,
}

fn string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

impl NativeUsage {
    pub fn new(shape: Shape) -> Self {
        NativeUsage {
            shape,
            lines: SseLines::default(),
            usage: None,
        }
    }

    /// Reads one chunk, handing `output` each piece of output text it completes.
    pub fn push(&mut self, bytes: &[u8], mut output: impl FnMut(&str)) {
        let NativeUsage {
            shape,
            lines,
            usage,
        } = self;
        lines.push(bytes, |line| {
            let Line::Data(data) = line else {
                return;
            };
            let Ok(event) = serde_json::from_slice::<Event>(data) else {
                return;
            };
            read_event(*shape, event, usage, &mut output);
        });
    }

    /// The usage the stream reported, if it did.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }
}

fn read_event(
    shape: Shape,
    event: Event,
    usage: &mut Option<Usage>,
    output: &mut impl FnMut(&str),
) {
    let kind = event.kind.as_deref().unwrap_or_default();
    match (shape, kind) {
        (Shape::Responses, "response.completed" | "response.incomplete" | "response.failed") => {
            let raw = event.response.and_then(|r| r.usage);
            if let Some(found) = raw.as_ref().and_then(|u| Usage::from_shape(shape, u)) {
                *usage = Some(found);
            }
        }
        (Shape::Responses, _) if kind.ends_with(".delta") => {
            if let Some(Value::String(text)) = &event.delta {
                output(text);
            }
        }
        (Shape::Anthropic, "message_start") => {
            let raw = event.message.and_then(|m| m.usage);
            *usage = raw.as_ref().and_then(|u| Usage::from_shape(shape, u));
        }
        (Shape::Anthropic, "message_delta") => {
            let Some(raw) = event.usage.filter(Value::is_object) else {
                return;
            };
            let so_far = usage.get_or_insert_with(|| Usage {
                input_tokens: 0,
                output_tokens: 0,
                cached_input_tokens: 0,
                reasoning_tokens: 0,
                raw: Value::Null,
            });
            // `output_tokens` is the running total; input may be restated.
            if let Some(n) = raw.get("output_tokens").and_then(Value::as_u64) {
                so_far.output_tokens = n;
            }
            if raw.get("input_tokens").and_then(Value::as_u64).is_some() {
                if let Some(input) = Usage::from_shape(shape, &raw) {
                    so_far.input_tokens = input.input_tokens;
                    so_far.cached_input_tokens = input.cached_input_tokens;
                }
            }
            so_far.raw = raw;
        }
        (Shape::Anthropic, "content_block_delta") => {
            let delta = event.delta.unwrap_or_default();
            for field in ["text", "partial_json", "thinking"] {
                if let Some(text) = delta.get(field).and_then(Value::as_str) {
                    output(text);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{NativeUsage, Shape, Usage};

    #[test]
    fn reads_each_api_shape() {
        let body = br#"{"usage":{"input_tokens":7,"output_tokens":5,"input_tokens_details":{"cached_tokens":2},"output_tokens_details":{"reasoning_tokens":1}}}"#;
        let u = Usage::from_body(Shape::Responses, body).unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cached_input_tokens,
                u.reasoning_tokens
            ),
            (7, 5, 2, 1)
        );
        let body = br#"{"usage":{"input_tokens":7,"cache_read_input_tokens":3,"output_tokens":5}}"#;
        let u = Usage::from_body(Shape::Anthropic, body).unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_input_tokens),
            (10, 5, 3)
        );
        assert!(Usage::from_body(Shape::Chat, b"{}").is_none());
    }

    #[test]
    fn reads_native_streams_in_pieces() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"cache_read_input_tokens\":1,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\n";
        let mut reader = NativeUsage::new(Shape::Anthropic);
        let mut text = String::new();
        for piece in stream.as_bytes().chunks(7) {
            reader.push(piece, |t| text.push_str(t));
        }
        let u = reader.usage().unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_input_tokens),
            (10, 4, 1)
        );
        assert_eq!(text, "hi");

        let stream = "data: {\"type\":\"response.output_text.delta\",\"delta\":\"a\"}\n\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}}\n\n";
        let mut reader = NativeUsage::new(Shape::Responses);
        let mut text = String::new();
        reader.push(stream.as_bytes(), |t| text.push_str(t));
        assert_eq!(reader.usage().unwrap().output_tokens, 2);
        assert_eq!(text, "a");
    }
}
