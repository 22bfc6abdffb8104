//! Reads an upstream's chat-completions reply, streamed or not, once: into neutral deltas and the assembled `Reply`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use super::sse::{Line, SseLines};

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

impl Usage {
    /// A chat completion's `usage` object; `None` when it is not an object.
    fn from_chat(raw: &Value) -> Option<Usage> {
        let n = |pointer: &str| raw.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
        raw.is_object().then(|| Usage {
            input_tokens: n("/prompt_tokens"),
            output_tokens: n("/completion_tokens"),
            cached_input_tokens: n("/prompt_tokens_details/cached_tokens"),
            reasoning_tokens: n("/completion_tokens_details/reasoning_tokens"),
            raw: raw.clone(),
        })
    }
}

/// The finished (or so far received) reply, the same whether it was streamed or not.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The assistant message in the shape of a non-streamed reply's `choices[0].message`.
    pub message: Value,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
}

impl Reply {
    /// A finished, non-streamed chat completion; `None` without a `choices[0].message` object.
    pub fn from_completion(body: &[u8]) -> Option<Reply> {
        let mut completion: Value = serde_json::from_slice(body).ok()?;
        let choice = completion.pointer_mut("/choices/0")?;
        let finish_reason = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string);
        let message = choice.get_mut("message").filter(|m| m.is_object())?.take();
        Some(Reply {
            message,
            finish_reason,
            usage: completion.get("usage").and_then(Usage::from_chat),
        })
    }
}

/// Feed it the relayed chat-completion SSE bytes in whatever pieces they arrive; it
/// hands back the deltas they complete and keeps the reply assembled so far.
#[derive(Default)]
pub struct ChatDecoder {
    lines: SseLines,
    state: State,
}

#[derive(Default)]
struct State {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, CallParts>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    done: bool,
}

#[derive(Default)]
struct CallParts {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

impl ChatDecoder {
    /// Reads one chunk, appending the deltas it completes to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Delta>) {
        let ChatDecoder { lines, state } = self;
        lines.push(bytes, |line| {
            if let Line::Data(data) = line {
                state.data(data, out);
            }
        });
        if let Some(Line::Data(data)) = lines.partial() {
            if is_done(data) {
                state.data(data, out);
            }
        }
    }

    /// `data: [DONE]` was seen: the stream is complete.
    pub fn is_done(&self) -> bool {
        self.state.done
    }

    /// A line over the SSE line cap was skipped, so `reply` lacks part of what was sent.
    pub fn missed(&self) -> bool {
        self.lines.missed()
    }

    /// The reply assembled so far.
    pub fn reply(&self) -> Reply {
        let state = &self.state;
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
        }
    }
}

fn is_done(data: &[u8]) -> bool {
    data.trim_ascii_end() == b"[DONE]"
}

impl State {
    fn data(&mut self, data: &[u8], out: &mut Vec<Delta>) {
        if self.done {
            return;
        }
        if is_done(data) {
            self.done = true;
            out.push(Delta::Done);
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else {
            return;
        };
        if let Some(usage) = chunk.usage.as_ref().and_then(Usage::from_chat) {
            self.usage = Some(usage);
        }
        let choices = chunk.choices.into_iter().flatten();
        let Some(choice) = choices.into_iter().find(|c| c.index.unwrap_or(0) == 0) else {
            return;
        };
        if let Some(delta) = choice.delta {
            self.delta(delta, out);
        }
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason.clone());
            out.push(Delta::Finish(reason));
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
struct Chunk {
    choices: Option<Vec<Choice>>,
    usage: Option<Value>,
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
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"weather\",\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Oslo\\\"}\"}}]}}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n",
        "data: [DONE]\n\n",
    );

    fn decode(stream: &[u8], size: usize) -> (ChatDecoder, Vec<Delta>) {
        let mut decoder = ChatDecoder::default();
        let mut out = Vec::new();
        for piece in stream.chunks(size) {
            decoder.push(piece, &mut out);
        }
        (decoder, out)
    }

    fn call(index: u64, id: Option<&str>, name: &str, arguments: &str) -> Delta {
        Delta::ToolCall {
            index,
            id: id.map(Into::into),
            kind: id.map(|_| "function".into()),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn the_same_reply_and_deltas_under_any_split() {
        for size in [1, 7, 64, STREAM.len()] {
            let (decoder, deltas) = decode(STREAM.as_bytes(), size);
            assert!(decoder.is_done());
            let reply = decoder.reply();
            assert_eq!(
                reply.message,
                json!({"role": "assistant", "content": "Hello", "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}),
                "split {size}"
            );
            assert_eq!(reply.usage.map(|u| u.raw), Some(json!({"total_tokens": 3})));
            assert_eq!(
                deltas,
                [
                    Delta::Text("Hel".into()),
                    Delta::Text("lo".into()),
                    call(0, Some("call_1"), "get_", ""),
                    call(0, None, "weather", "{\"city\":"),
                    call(0, None, "", "\"Oslo\"}"),
                    Delta::Done,
                ],
                "split {size}"
            );
        }
    }

    #[test]
    fn parallel_tool_calls_are_ordered_by_index_and_other_choices_ignored() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
        );
        let (decoder, deltas) = decode(stream.as_bytes(), 5);
        assert!(!decoder.is_done());
        let reply = decoder.reply();
        assert_eq!(
            reply.message,
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]})
        );
        assert_eq!(reply.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(deltas.last(), Some(&Delta::Finish("tool_calls".into())));
    }

    #[test]
    fn garbage_is_ignored_without_panic() {
        let stream = concat!(
            "data: {not json\n\ndata: \u{1}\n\nevent: x\ndata: 17\n\ndata: null\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":[1],\"refusal\":\"no\"},\"index\":\"0\",\"finish_reason\":7}]}\n\n",
            "data: {\"choices\":{},\"usage\":[]}\n\n",
        );
        let mut bytes = stream.as_bytes().to_vec();
        bytes.extend_from_slice(b"data: \xff\xfe\n\n");
        let (decoder, deltas) = decode(&bytes, 3);
        assert_eq!(deltas, [Delta::Refusal("no".into())]);
        let reply = decoder.reply();
        assert_eq!(
            reply.message,
            json!({"role": "assistant", "content": null, "refusal": "no"})
        );
        assert_eq!((reply.finish_reason, reply.usage), (None, None));
    }

    #[test]
    fn done_is_found_whole_split_tight_or_unterminated() {
        for stream in [
            &b"data: {}\n\ndata: [DONE]\n\n"[..],
            b"data:[DONE]\r\n\r\n",
            b"data: [DONE]",
            b"data: [DONE]\n\ndata: [DONE]\n\n",
            b"data: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\n",
        ] {
            for size in [1, 4, stream.len()] {
                let (decoder, deltas) = decode(stream, size);
                assert!(decoder.is_done());
                assert_eq!(deltas, [Delta::Done], "{stream:?} split {size}");
            }
        }
        for stream in [
            &b"data: {\"choices\":[{\"delta\":{\"content\":\"data: [DONE]\"}}]}\n\n"[..],
            b"xdata: [DONE]\n\n",
            b"data: [DONE",
            b": data: [DONE]\n\n",
        ] {
            assert!(!decode(stream, 3).0.is_done(), "{stream:?}");
        }
    }

    #[test]
    fn a_finished_body_reads_like_the_same_stream() {
        let usage = r#"{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}"#;
        let body = format!(
            r#"{{"id":"c","choices":[{{"index":0,"finish_reason":"tool_calls","message":{{"role":"assistant","content":"Hello","tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Oslo\"}}"}}}}]}}}}],"usage":{usage}}}"#
        );
        let stream = STREAM.replace(
            r#""choices":[],"usage":{"total_tokens":3}"#,
            &format!(r#""choices":[{{"index":0,"delta":{{}},"finish_reason":"tool_calls"}}],"usage":{usage}"#),
        );
        let reply = Reply::from_completion(body.as_bytes()).unwrap();
        assert_eq!(reply, decode(stream.as_bytes(), 7).0.reply());
        assert_eq!(reply.finish_reason.as_deref(), Some("tool_calls"));
        let u = reply.usage.unwrap();
        let counts = (
            u.input_tokens,
            u.output_tokens,
            u.cached_input_tokens,
            u.reasoning_tokens,
        );
        assert_eq!(
            (counts, u.raw["total_tokens"].as_u64()),
            ((10, 5, 4, 2), Some(15))
        );
        for body in [
            &b"[]"[..],
            b"{}",
            br#"{"choices":[{"message":null}]}"#,
            b"\xff",
        ] {
            assert!(Reply::from_completion(body).is_none());
        }
    }
}
