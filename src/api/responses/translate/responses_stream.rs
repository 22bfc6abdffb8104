//! A chat-completions stream, decoded into deltas → the Responses API's semantic events, incrementally, with sequence numbers.
//!
//! Each event is written straight into the output as JSON text, its keys in the order
//! clients have always been sent (sorted, as the `Value` maps that once built them were).

use serde_json::Value;

use super::output::{
    write_function_call, write_message, write_str, write_text_part, write_u64, OutputItem,
    TokenUsage,
};
use super::random_id;
use super::responses_reply::{
    item_status, status, write_response_object, Outcome, Progress, ResponseMeta,
};
use crate::gateway::decode::{Delta, Reply};

/// The item being streamed now.
enum Open {
    Text {
        id: String,
        text: String,
        refusal: Option<String>,
    },
    Call {
        index: u64,
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Feed it the upstream's bytes in any pieces; it returns the events to send.
pub struct StreamTranslator {
    meta: ResponseMeta,
    seq: u64,
    started: bool,
    /// The closed items, why the upstream stopped, and (once finished) the usage.
    outcome: Outcome,
    open: Option<Open>,
}

impl StreamTranslator {
    pub fn new(meta: ResponseMeta) -> Self {
        StreamTranslator {
            meta,
            seq: 0,
            started: false,
            outcome: Outcome::default(),
            open: None,
        }
    }

    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    /// The turn so far: complete once [`Self::finish`] has run.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// `response.created` and `response.in_progress`, once.
    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let mut response = Vec::new();
            write_response_object(&mut response, &self.meta, &[], None, &Progress::InProgress);
            out.reserve(2 * response.len() + 160);
            self.response_event(out, "response.created", &response);
            self.response_event(out, "response.in_progress", &response);
        }
    }

    /// Consumes the deltas decoded from one upstream chunk; returns the Responses events
    /// they complete (`response.created` first).
    pub fn push(&mut self, deltas: &[Delta]) -> Vec<u8> {
        let mut out = Vec::with_capacity(deltas.iter().map(delta_size).sum());
        self.start(&mut out);
        for delta in deltas {
            match delta {
                Delta::Text(text) => self.text_delta(text, &mut out),
                Delta::Refusal(refusal) => {
                    self.ensure_text(&mut out);
                    if let Some(Open::Text { refusal: r, .. }) = &mut self.open {
                        r.get_or_insert_with(String::new).push_str(refusal);
                    }
                }
                Delta::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                    ..
                } => self.call_delta(*index, id.as_deref(), name, arguments, &mut out),
                Delta::Finish(reason) => self.outcome.finish_reason = Some(reason.clone()),
                Delta::Done => {}
            }
        }
        out
    }

    fn ensure_text(&mut self, out: &mut Vec<u8>) {
        if matches!(self.open, Some(Open::Text { .. })) {
            return;
        }
        self.close(out);
        let id = random_id("msg");
        let index = self.outcome.items.len() as u64;
        begin(out, "response.output_item.added");
        out.extend_from_slice(b"\"item\":");
        write_message(out, &id, "in_progress", None, None);
        self.end(out, Some(index), "response.output_item.added");
        begin(out, "response.content_part.added");
        out.extend_from_slice(b"\"content_index\":0,\"item_id\":");
        write_str(out, &id);
        out.extend_from_slice(b",\"output_index\":");
        write_u64(out, index);
        out.extend_from_slice(b",\"part\":");
        write_text_part(out, "");
        self.end(out, None, "response.content_part.added");
        self.open = Some(Open::Text {
            id,
            text: String::new(),
            refusal: None,
        });
    }

    fn text_delta(&mut self, text: &str, out: &mut Vec<u8>) {
        self.ensure_text(out);
        let index = self.outcome.items.len() as u64;
        if let Some(Open::Text { id, text: all, .. }) = &mut self.open {
            all.push_str(text);
            begin(out, "response.output_text.delta");
            out.extend_from_slice(b"\"content_index\":0,\"delta\":");
            write_str(out, text);
            out.extend_from_slice(b",\"item_id\":");
            write_str(out, id);
            out.extend_from_slice(b",\"logprobs\":[]");
            self.end(out, Some(index), "response.output_text.delta");
        }
    }

    fn call_delta(
        &mut self,
        index: u64,
        call_id: Option<&str>,
        name: &str,
        arguments: &str,
        out: &mut Vec<u8>,
    ) {
        let same = matches!(&self.open, Some(Open::Call { index: i, .. }) if *i == index);
        if !same {
            self.close(out);
            let output_index = self.outcome.items.len() as u64;
            let call_id = match call_id {
                Some(id) => id.to_string(),
                None => random_id("call"),
            };
            let id = random_id("fc");
            begin(out, "response.output_item.added");
            out.extend_from_slice(b"\"item\":");
            write_function_call(out, &id, "in_progress", &call_id, name, "");
            self.end(out, Some(output_index), "response.output_item.added");
            self.open = Some(Open::Call {
                index,
                id,
                call_id,
                name: name.to_string(),
                arguments: String::new(),
            });
        } else if let Some(Open::Call { name: all, .. }) = &mut self.open {
            all.push_str(name);
        }
        if arguments.is_empty() {
            return;
        }
        let output_index = self.outcome.items.len() as u64;
        if let Some(Open::Call {
            id, arguments: all, ..
        }) = &mut self.open
        {
            all.push_str(arguments);
            begin(out, "response.function_call_arguments.delta");
            out.extend_from_slice(b"\"content_index\":0,\"delta\":");
            write_str(out, arguments);
            out.extend_from_slice(b",\"item_id\":");
            write_str(out, id);
            self.end(
                out,
                Some(output_index),
                "response.function_call_arguments.delta",
            );
        }
    }

    /// Ends the open item with its `.done` events.
    fn close(&mut self, out: &mut Vec<u8>) {
        let index = self.outcome.items.len() as u64;
        let status = item_status(self.outcome.finish_reason.as_deref());
        match self.open.take() {
            None => {}
            Some(Open::Text { id, text, refusal }) => {
                out.reserve(3 * text.len() + 1024);
                begin(out, "response.output_text.done");
                out.extend_from_slice(b"\"content_index\":0,\"item_id\":");
                write_str(out, &id);
                out.extend_from_slice(b",\"logprobs\":[],\"output_index\":");
                write_u64(out, index);
                // `text` sorts after `sequence_number`.
                out.extend_from_slice(b",\"sequence_number\":");
                write_u64(out, self.next_seq());
                out.extend_from_slice(b",\"text\":");
                write_str(out, &text);
                out.extend_from_slice(b",\"type\":\"response.output_text.done\"}\n\n");
                begin(out, "response.content_part.done");
                out.extend_from_slice(b"\"content_index\":0,\"item_id\":");
                write_str(out, &id);
                out.extend_from_slice(b",\"output_index\":");
                write_u64(out, index);
                out.extend_from_slice(b",\"part\":");
                write_text_part(out, &text);
                self.end(out, None, "response.content_part.done");
                let item = OutputItem::Message {
                    id,
                    status,
                    text: Some(text),
                    refusal,
                };
                self.item_done(out, index, item);
            }
            Some(Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            }) => {
                begin(out, "response.function_call_arguments.done");
                out.extend_from_slice(b"\"arguments\":");
                write_str(out, &arguments);
                out.extend_from_slice(b",\"content_index\":0,\"item_id\":");
                write_str(out, &id);
                out.extend_from_slice(b",\"name\":");
                write_str(out, &name);
                self.end(out, Some(index), "response.function_call_arguments.done");
                let item = OutputItem::FunctionCall {
                    id,
                    status: "completed",
                    call_id,
                    name,
                    arguments,
                };
                self.item_done(out, index, item);
            }
        }
    }

    /// `response.output_item.done`; the item joins the output.
    fn item_done(&mut self, out: &mut Vec<u8>, index: u64, item: OutputItem) {
        begin(out, "response.output_item.done");
        out.extend_from_slice(b"\"item\":");
        item.write(out);
        self.end(out, Some(index), "response.output_item.done");
        self.outcome.items.push(item);
    }

    /// Closes the open item (an empty message if nothing was said) and returns the
    /// events that close it; [`Self::outcome`] is then the finished turn, with the usage
    /// of the decoded reply.
    pub fn finish(&mut self, reply: &Reply) -> Vec<u8> {
        self.outcome.usage = reply.usage.as_ref().map(TokenUsage::from_chat);
        if reply.finish_reason.is_some() {
            self.outcome.finish_reason.clone_from(&reply.finish_reason);
        }
        let mut out = Vec::new();
        self.start(&mut out);
        if self.outcome.items.is_empty() && self.open.is_none() {
            self.ensure_text(&mut out);
        }
        self.close(&mut out);
        out
    }

    /// `response.completed` or `response.incomplete`, carrying the full response (built
    /// from the outcome [`Self::finish`] left).
    pub fn terminal(&mut self, response: &[u8]) -> Vec<u8> {
        let kind = match status(self.outcome.finish_reason.as_deref()).0 {
            "incomplete" => "response.incomplete",
            _ => "response.completed",
        };
        let mut out = Vec::new();
        self.response_event(&mut out, kind, response);
        out
    }

    /// An `error` event and `response.failed`: the turn ended without a complete answer.
    pub fn failure(&mut self, error: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        self.start(&mut out);
        let detail = error.get("error").unwrap_or(&Value::Null);
        let field = |name: &str| detail.get(name).unwrap_or(&Value::Null);
        let (code, message) = (field("code"), field("message"));
        begin(&mut out, "error");
        for (name, value) in [
            (&b"\"code\":"[..], code),
            (b",\"message\":", message),
            (b",\"param\":", field("param")),
        ] {
            out.extend_from_slice(name);
            if serde_json::to_writer(&mut out, value).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        self.end(&mut out, None, "error");
        let mut response = Vec::new();
        let failed = Progress::Failed { code, message };
        write_response_object(
            &mut response,
            &self.meta,
            &self.outcome.items,
            None,
            &failed,
        );
        self.response_event(&mut out, "response.failed", &response);
        out
    }

    /// An event carrying the response object, copied in as JSON text.
    fn response_event(&mut self, out: &mut Vec<u8>, kind: &str, response: &[u8]) {
        out.reserve(2 * kind.len() + response.len() + 72);
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"sequence_number\":");
        write_u64(out, self.next_seq());
        out.extend_from_slice(b",\"response\":");
        out.extend_from_slice(response);
        out.extend_from_slice(b"}\n\n");
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    /// Ends an item event: its `output_index` (when it has one not written already), then
    /// `sequence_number` and `type`, the keys that sort last.
    fn end(&mut self, out: &mut Vec<u8>, output_index: Option<u64>, kind: &str) {
        if let Some(index) = output_index {
            out.extend_from_slice(b",\"output_index\":");
            write_u64(out, index);
        }
        out.extend_from_slice(b",\"sequence_number\":");
        write_u64(out, self.next_seq());
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\"}\n\n");
    }
}

/// Starts an item event: its name, and the opening of its data object.
fn begin(out: &mut Vec<u8>, kind: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: {");
}

/// Room for the events a delta makes (an item's opening events when it starts one).
fn delta_size(delta: &Delta) -> usize {
    match delta {
        Delta::Text(text) | Delta::Refusal(text) => 2 * text.len() + 640,
        Delta::ToolCall {
            name, arguments, ..
        } => 2 * (name.len() + arguments.len()) + 640,
        Delta::Finish(_) | Delta::Done => 0,
    }
}
