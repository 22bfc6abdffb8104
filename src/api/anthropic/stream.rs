//! The Messages API's streamed answer: the decoded chat stream re-emitted as Anthropic SSE events (`MessageEvents`).
//!
//! The events are `message_start` (with the first chunk), then for each content block
//! `content_block_start`, its `content_block_delta`s and `content_block_stop`, then
//! `message_delta` and `message_stop` once the turn is settled; a stream that breaks ends
//! with an `error` event instead.
//!
//! Decisions:
//! - Text and refusal text share one text block; a tool call closes it, and text after a
//!   tool call opens a new text block.
//! - Each chat tool-call index gets its own `tool_use` block. Its `content_block_start` is
//!   held until its first non-empty arguments fragment (or until the block closes), so a
//!   name (or id) sent in pieces is complete in it. Name fragments after that cannot be
//!   sent and are dropped from the stream (the stored reply keeps the full name).
//! - Chat upstreams send each call's fragments contiguously; a fragment for a call whose
//!   block is already closed cannot be reopened and is dropped from the stream (logged),
//!   never sent as a second block with the same id. The stored reply is unaffected.
//! - Without upstream usage, `output_tokens` is the number of delta events sent (chat
//!   upstreams send about one token per chunk).

use bytes::Bytes;
use serde_json::{json, Value};

use super::reply::{call_id, stop_reason, tool_use_id, with_call_ids};
use crate::gateway::decode::{Delta, Reply};
use crate::gateway::{Encoder, Record};
use crate::wire::error::ApiError;

/// Anthropic's streams send a `ping` after at most this much silence.
pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The keep-alive event the relay sends after a silence.
pub fn ping() -> Bytes {
    Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")
}

/// The content block being streamed now, with its `index`.
enum Open {
    Text {
        index: u64,
    },
    Tool {
        index: u64,
        /// The chat tool-call index it streams.
        call: u64,
        id: Option<String>,
        name: String,
        /// `content_block_start` was sent.
        started: bool,
    },
}

/// Anthropic Messages events from the decoded chat stream; `message_stop` is sent only
/// after the turn is stored.
pub struct MessageEvents {
    id: String,
    model: String,
    input_tokens: u64,
    started: bool,
    /// Blocks opened so far: the next block's `index`.
    blocks: u64,
    open: Option<Open>,
    /// Chat tool-call indexes whose blocks are closed.
    closed_calls: Vec<u64>,
    finish_reason: Option<String>,
    /// `content_block_delta` events sent (the usage estimate without upstream usage).
    deltas_sent: u64,
    /// The closing events and the `message_delta` usage, once the reply is complete.
    closing: Option<(Vec<u8>, Value)>,
    /// `done` or `failed` ran: nothing more is sent.
    ended: bool,
}

impl MessageEvents {
    /// `id` is the message id ("msg_…"), `model` the client's model name, `input_tokens`
    /// an estimate sent in message_start (the upstream reports usage only at the end).
    pub fn new(id: String, model: String, input_tokens: u64) -> Self {
        MessageEvents {
            id,
            model,
            input_tokens,
            started: false,
            blocks: 0,
            open: None,
            closed_calls: Vec::new(),
            finish_reason: None,
            deltas_sent: 0,
            closing: None,
            ended: false,
        }
    }

    /// `message_start`, once.
    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        });
        event(out, "message_start", json!({ "message": message }));
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let index = match self.open {
            Some(Open::Text { index }) => index,
            _ => {
                self.close(out);
                let index = self.next_index();
                self.open = Some(Open::Text { index });
                let block = json!({"type": "text", "text": ""});
                event(
                    out,
                    "content_block_start",
                    json!({"index": index, "content_block": block}),
                );
                index
            }
        };
        self.delta(out, index, json!({"type": "text_delta", "text": text}));
    }

    fn tool_call(
        &mut self,
        call: u64,
        id: Option<&str>,
        name: &str,
        arguments: &str,
        out: &mut Vec<u8>,
    ) {
        let is_open = matches!(self.open, Some(Open::Tool { call: c, .. }) if c == call);
        if !is_open {
            if self.closed_calls.contains(&call) {
                tracing::debug!(
                    call,
                    "tool call fragment after its block closed; not streamed"
                );
                return;
            }
            self.close(out);
            let index = self.next_index();
            self.open = Some(Open::Tool {
                index,
                call,
                id: None,
                name: String::new(),
                started: false,
            });
        }
        let Some(Open::Tool {
            index,
            call: open_call,
            id: open_id,
            name: open_name,
            started,
        }) = &mut self.open
        else {
            return;
        };
        let index = *index;
        if !*started {
            if open_id.is_none() {
                *open_id = id.filter(|id| !id.is_empty()).map(str::to_string);
            }
            open_name.push_str(name);
            if arguments.is_empty() {
                return;
            }
            *started = true;
            let block = tool_block(open_id.as_deref(), &self.id, *open_call, open_name);
            event(
                out,
                "content_block_start",
                json!({"index": index, "content_block": block}),
            );
        }
        if !arguments.is_empty() {
            let delta = json!({"type": "input_json_delta", "partial_json": arguments});
            self.delta(out, index, delta);
        }
    }

    fn delta(&mut self, out: &mut Vec<u8>, index: u64, delta: Value) {
        self.deltas_sent += 1;
        event(
            out,
            "content_block_delta",
            json!({"index": index, "delta": delta}),
        );
    }

    fn next_index(&mut self) -> u64 {
        let index = self.blocks;
        self.blocks += 1;
        index
    }

    /// Closes the open block (sending a held tool block's start first).
    fn close(&mut self, out: &mut Vec<u8>) {
        let index = match self.open.take() {
            None => return,
            Some(Open::Text { index }) => index,
            Some(Open::Tool {
                index,
                call,
                id,
                name,
                started,
            }) => {
                self.closed_calls.push(call);
                if !started {
                    let block = tool_block(id.as_deref(), &self.id, call, &name);
                    event(
                        out,
                        "content_block_start",
                        json!({"index": index, "content_block": block}),
                    );
                }
                index
            }
        };
        event(out, "content_block_stop", json!({ "index": index }));
    }

    /// The closing events and the final usage, built once: from the reply when it is
    /// known, else from what was streamed.
    fn finish(&mut self, reply: Option<&Reply>) {
        if self.closing.is_some() {
            return;
        }
        let mut out = Vec::new();
        self.start(&mut out);
        self.close(&mut out);
        if self.blocks == 0 {
            let index = self.next_index();
            let block = json!({"type": "text", "text": ""});
            event(
                &mut out,
                "content_block_start",
                json!({"index": index, "content_block": block}),
            );
            event(&mut out, "content_block_stop", json!({ "index": index }));
        }
        if self.finish_reason.is_none() {
            self.finish_reason = reply.and_then(|reply| reply.finish_reason.clone());
        }
        let usage = match reply.and_then(|reply| reply.usage.as_ref()) {
            Some(usage) => json!({
                "input_tokens": usage.input_tokens.saturating_sub(usage.cached_input_tokens),
                "cache_read_input_tokens": usage.cached_input_tokens,
                "output_tokens": usage.output_tokens,
            }),
            None => json!({ "output_tokens": self.deltas_sent }),
        };
        self.closing = Some((out, usage));
    }
}

/// A `tool_use` block as `content_block_start` carries it: chat call `call` of message
/// `message_id` (its id made as the whole reply's and the stored message's are).
fn tool_block(id: Option<&str>, message_id: &str, call: u64, name: &str) -> Value {
    let id = call_id(id, message_id, call);
    json!({"type": "tool_use", "id": tool_use_id(Some(&id)), "name": name, "input": {}})
}

/// Appends one SSE event whose `event:` line is the data's `type`.
fn event(out: &mut Vec<u8>, kind: &str, mut data: Value) {
    if let Some(object) = data.as_object_mut() {
        object.insert("type".into(), Value::String(kind.into()));
    }
    out.extend_from_slice(format!("event: {kind}\ndata: {data}\n\n").as_bytes());
}

/// The Anthropic `error` event for a gateway error.
pub fn error_event(out: &mut Vec<u8>, error: &ApiError) {
    let kind = crate::wire::anthropic::error_type(error.status_code().as_u16());
    let body = error.body();
    let message = match body.pointer("/error/message").and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => error.to_string(),
    };
    event(
        out,
        "error",
        json!({"error": {"type": kind, "message": message}}),
    );
}

impl Encoder for MessageEvents {
    fn keep_alive(&self) -> Option<Bytes> {
        Some(ping())
    }

    fn keep_alive_within(&self) -> Option<std::time::Duration> {
        Some(PING_EVERY)
    }

    fn chunk(&mut self, _raw: &Bytes, deltas: &[Delta]) -> Option<Bytes> {
        let mut out = Vec::new();
        if self.ended || self.closing.is_some() {
            return Some(Bytes::new());
        }
        self.start(&mut out);
        for delta in deltas {
            match delta {
                Delta::Text(text) | Delta::Refusal(text) => self.text(text, &mut out),
                Delta::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                    ..
                } => self.tool_call(*index, id.as_deref(), name, arguments, &mut out),
                Delta::Finish(reason) => self.finish_reason = Some(reason.clone()),
                Delta::Done => {}
            }
        }
        Some(Bytes::from(out))
    }

    fn record(&mut self, reply: &Reply) -> Result<Record, ApiError> {
        self.finish(Some(reply));
        Ok(Record {
            output: vec![with_call_ids(&reply.message, &self.id).to_string()],
            response: None,
        })
    }

    fn done(&mut self, settled: Result<(), &ApiError>) -> Option<Bytes> {
        if self.ended {
            return Some(Bytes::new());
        }
        self.ended = true;
        self.finish(None);
        let (mut out, usage) = self.closing.take().unwrap_or_default();
        match settled {
            Ok(()) => {
                let stop = stop_reason(self.finish_reason.as_deref());
                let delta = json!({"stop_reason": stop, "stop_sequence": null});
                event(
                    &mut out,
                    "message_delta",
                    json!({"delta": delta, "usage": usage}),
                );
                event(&mut out, "message_stop", json!({}));
            }
            Err(error) => error_event(&mut out, error),
        }
        Some(Bytes::from(out))
    }

    fn failed(&mut self, error: &ApiError) -> Option<Bytes> {
        if self.ended {
            return Some(Bytes::new());
        }
        self.ended = true;
        let mut out = Vec::new();
        error_event(&mut out, error);
        Some(Bytes::from(out))
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
