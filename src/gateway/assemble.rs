//! Rebuilds the assistant's message from a chat-completion SSE stream, incrementally, while it is relayed.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

#[derive(Default)]
struct ToolCallParts {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

/// Feed it the relayed bytes in whatever pieces they arrive; ask for the message at the end.
#[derive(Default)]
pub struct ReplyAssembler {
    pending: Vec<u8>,
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCallParts>,
    done: bool,
}

impl ReplyAssembler {
    /// Consumes a chunk; returns true once `data: [DONE]` has been seen.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        self.pending.extend_from_slice(bytes);
        while let Some(newline) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=newline).collect();
            self.line(&line);
        }
        self.done
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    fn line(&mut self, line: &[u8]) {
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        let line = line.trim_end_matches(['\n', '\r']);
        let Some(data) = line.strip_prefix("data:") else {
            return;
        };
        let data = data.strip_prefix(' ').unwrap_or(data);
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let Some(choices) = event.get("choices").and_then(Value::as_array) else {
            return;
        };
        for choice in choices {
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) == 0 {
                if let Some(delta) = choice.get("delta") {
                    self.delta(delta);
                }
            }
        }
    }

    fn delta(&mut self, delta: &Value) {
        if let Some(role) = delta.get("role").and_then(Value::as_str) {
            self.role = Some(role.to_string());
        }
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            self.content.get_or_insert_with(String::new).push_str(text);
        }
        if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
            self.refusal.get_or_insert_with(String::new).push_str(text);
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let parts = self.tool_calls.entry(index).or_default();
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                parts.id = Some(id.to_string());
            }
            if let Some(kind) = call.get("type").and_then(Value::as_str) {
                parts.kind = Some(kind.to_string());
            }
            if let Some(function) = call.get("function") {
                if let Some(name) = function.get("name").and_then(Value::as_str) {
                    parts.name.push_str(name);
                }
                if let Some(args) = function.get("arguments").and_then(Value::as_str) {
                    parts.arguments.push_str(args);
                }
            }
        }
    }

    /// The assistant message in the same shape a non-streamed reply carries.
    pub fn message(&self) -> Value {
        let mut message = Map::new();
        message.insert(
            "role".into(),
            Value::String(self.role.clone().unwrap_or_else(|| "assistant".into())),
        );
        message.insert(
            "content".into(),
            self.content.clone().map_or(Value::Null, Value::String),
        );
        if let Some(refusal) = &self.refusal {
            message.insert("refusal".into(), Value::String(refusal.clone()));
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .values()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "type": c.kind.clone().unwrap_or_else(|| "function".into()),
                        "function": {"name": c.name, "arguments": c.arguments},
                    })
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        Value::Object(message)
    }
}

/// The assistant message of a non-streamed reply (`choices[0].message`).
pub fn message_from_reply(body: &[u8]) -> Option<Value> {
    let reply: Value = serde_json::from_slice(body).ok()?;
    reply.get("choices")?.get(0)?.get("message").cloned()
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

    #[test]
    fn assembles_content_and_tool_calls_across_any_split() {
        for size in [1, 7, 64, STREAM.len()] {
            let mut assembler = ReplyAssembler::default();
            let mut done = false;
            for piece in STREAM.as_bytes().chunks(size) {
                done |= assembler.push(piece);
            }
            assert!(done && assembler.is_done());
            assert_eq!(
                assembler.message(),
                json!({"role": "assistant", "content": "Hello", "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}),
                "split {size}"
            );
        }
    }

    #[test]
    fn garbage_is_ignored_without_panic() {
        let mut assembler = ReplyAssembler::default();
        assert!(!assembler.push(b"data: {not json\n\ndata: \xff\xfe\n\nevent: x\n"));
        assert_eq!(
            assembler.message(),
            json!({"role": "assistant", "content": null})
        );
    }

    #[test]
    fn non_stream_reply_message() {
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}"#;
        assert_eq!(message_from_reply(body).unwrap()["content"], "hi");
        assert!(message_from_reply(b"[]").is_none());
    }
}
