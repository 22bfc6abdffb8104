//! A chat-completions stream, decoded into deltas → the Responses API's semantic events, incrementally, with sequence numbers.

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::random_id;
use super::responses_reply::{
    function_call_item, message_item, output_text_part, response_object, status, Outcome,
    ResponseMeta,
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
    items: Vec<Value>,
    open: Option<Open>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

impl StreamTranslator {
    pub fn new(meta: ResponseMeta) -> Self {
        StreamTranslator {
            meta,
            seq: 0,
            started: false,
            items: Vec::new(),
            open: None,
            finish_reason: None,
            usage: None,
        }
    }

    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    /// `response.created` and `response.in_progress`, once.
    pub fn start(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            let response = response_object(
                &self.meta,
                &Outcome::default(),
                Some(("in_progress", Value::Null)),
            );
            self.response_event(&mut out, "response.created", &response);
            self.response_event(&mut out, "response.in_progress", &response);
        }
        out
    }

    /// Consumes the deltas decoded from one upstream chunk; returns the Responses events
    /// they complete (`response.created` first).
    pub fn push(&mut self, deltas: &[Delta]) -> Vec<u8> {
        let mut out = self.start();
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
                Delta::Finish(reason) => self.finish_reason = Some(reason.clone()),
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
        let index = self.items.len();
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": index,
            "item": message_item(&id, "in_progress", None, None)}),
        );
        self.event(
            out,
            "response.content_part.added",
            json!({"item_id": id, "output_index": index,
            "content_index": 0, "part": output_text_part("")}),
        );
        self.open = Some(Open::Text {
            id,
            text: String::new(),
            refusal: None,
        });
    }

    fn text_delta(&mut self, text: &str, out: &mut Vec<u8>) {
        self.ensure_text(out);
        let index = self.items.len();
        if let Some(Open::Text { id, text: all, .. }) = &mut self.open {
            all.push_str(text);
            let id = id.clone();
            self.event(
                out,
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index,
                "content_index": 0, "delta": text, "logprobs": []}),
            );
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
            let call_id = match call_id {
                Some(id) => id.to_string(),
                None => random_id("call"),
            };
            let id = random_id("fc");
            self.event(
                out,
                "response.output_item.added",
                json!({"output_index": self.items.len(),
                "item": function_call_item(&id, "in_progress", &call_id, name, "")}),
            );
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
        let output_index = self.items.len();
        if let Some(Open::Call {
            id, arguments: all, ..
        }) = &mut self.open
        {
            all.push_str(arguments);
            let id = id.clone();
            self.event(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": id,
                "output_index": output_index, "content_index": 0, "delta": arguments}),
            );
        }
    }

    /// Ends the open item with its `.done` events.
    fn close(&mut self, out: &mut Vec<u8>) {
        let index = self.items.len();
        let item_status = if status(self.finish_reason.as_deref()).0 == "completed" {
            "completed"
        } else {
            "incomplete"
        };
        match self.open.take() {
            None => {}
            Some(Open::Text { id, text, refusal }) => {
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index,
                    "content_index": 0, "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index,
                    "content_index": 0, "part": output_text_part(&text)}),
                );
                let item = message_item(&id, item_status, Some(&text), refusal.as_deref());
                self.event(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item.clone()}),
                );
                self.items.push(item);
            }
            Some(Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            }) => {
                self.event(out, "response.function_call_arguments.done", json!({"item_id": id,
                    "output_index": index, "content_index": 0, "name": name, "arguments": arguments}));
                let item = function_call_item(&id, "completed", &call_id, &name, &arguments);
                self.event(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item.clone()}),
                );
                self.items.push(item);
            }
        }
    }

    /// Closes the open item (an empty message if nothing was said) and returns the
    /// finished turn, with the events that close it. The usage is the decoded reply's.
    pub fn finish(&mut self, reply: &Reply) -> (Outcome, Vec<u8>) {
        self.usage = reply.usage.as_ref().map(|u| u.raw.clone());
        if reply.finish_reason.is_some() {
            self.finish_reason.clone_from(&reply.finish_reason);
        }
        let mut out = self.start();
        if self.items.is_empty() && self.open.is_none() {
            self.ensure_text(&mut out);
        }
        self.close(&mut out);
        let outcome = Outcome {
            items: self.items.clone(),
            finish_reason: self.finish_reason.clone(),
            usage: self.usage.clone(),
        };
        (outcome, out)
    }

    /// `response.completed` or `response.incomplete`, carrying the full response (built
    /// from the outcome [`Self::finish`] returned).
    pub fn terminal(&mut self, response: &RawValue) -> Vec<u8> {
        let kind = match status(self.finish_reason.as_deref()).0 {
            "incomplete" => "response.incomplete",
            _ => "response.completed",
        };
        let mut out = Vec::new();
        self.response_event(&mut out, kind, response);
        out
    }

    /// An `error` event and `response.failed`: the turn ended without a complete answer.
    pub fn failure(&mut self, error: &Value) -> Vec<u8> {
        let mut out = self.start();
        let detail = error.get("error").cloned().unwrap_or(Value::Null);
        let code = detail.get("code").cloned().unwrap_or(Value::Null);
        let message = detail.get("message").cloned().unwrap_or(Value::Null);
        self.event(
            &mut out,
            "error",
            json!({"code": code, "message": message,
            "param": detail.get("param").cloned().unwrap_or(Value::Null)}),
        );
        let outcome = Outcome {
            items: self.items.clone(),
            ..Outcome::default()
        };
        let response = response_object(
            &self.meta,
            &outcome,
            Some(("failed", json!({"code": code, "message": message}))),
        );
        self.response_event(&mut out, "response.failed", &response);
        out
    }

    /// An event carrying the response object, copied in as JSON text.
    fn response_event(&mut self, out: &mut Vec<u8>, kind: &str, response: &RawValue) {
        let head = format!(
            "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{},\"response\":",
            self.seq
        );
        self.seq += 1;
        out.reserve(head.len() + response.get().len() + 3);
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(response.get().as_bytes());
        out.extend_from_slice(b"}\n\n");
    }

    fn event(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        if let Some(object) = data.as_object_mut() {
            object.insert("type".into(), json!(kind));
            object.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        out.extend_from_slice(format!("event: {kind}\ndata: {data}\n\n").as_bytes());
    }
}
