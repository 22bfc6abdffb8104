//! The built-in offline `echo` model: replies with the last user message, so gatewayd works with no upstream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{stream, FutureExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Endpoint, ModelObject, Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};

pub struct EchoUpstream;

#[derive(Deserialize)]
struct EchoRequest {
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The text of a message: a string, or the text parts of a content array.
fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

fn json_response(status: ::http::StatusCode, body: Value) -> UpstreamResponse {
    UpstreamResponse {
        status,
        headers: content_type("application/json"),
        body: stream::once(async move { Ok(Bytes::from(body.to_string())) }).boxed(),
        idle_timeout: Duration::from_secs(60),
        require_done: true,
    }
}

fn content_type(value: &'static str) -> ::http::HeaderMap {
    let mut headers = ::http::HeaderMap::new();
    headers.insert(
        ::http::header::CONTENT_TYPE,
        ::http::HeaderValue::from_static(value),
    );
    headers
}

fn sse_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn complete(request: EchoRequest) -> UpstreamResponse {
    let reply = request
        .messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(text_of)
        .unwrap_or_default();
    let prompt_tokens: usize = request.messages.iter().map(|m| words(&text_of(m))).sum();
    let completion_tokens = words(&reply);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let id = format!("chatcmpl-echo-{created}");
    if !request.stream {
        return json_response(
            ::http::StatusCode::OK,
            json!({
                "id": id, "object": "chat.completion", "created": created, "model": "echo",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                             "finish_reason": "stop"}],
                "usage": usage,
            }),
        );
    }
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    // Lazily, one event per poll: a client that reads slowly holds the reply text, never
    // its whole event stream.
    let events = EchoEvents {
        id,
        created,
        reply,
        pos: 0,
        phase: Phase::Role,
        usage: include_usage.then_some(usage),
    };
    UpstreamResponse {
        status: ::http::StatusCode::OK,
        headers: content_type("text/event-stream"),
        body: stream::unfold(events, |mut events| async move {
            events.next_event().map(|event| (Ok(event), events))
        })
        .boxed(),
        idle_timeout: Duration::from_secs(60),
        require_done: true,
    }
}

/// The streamed reply, produced one event at a time.
struct EchoEvents {
    id: String,
    created: u64,
    reply: String,
    /// Byte offset in `reply` of the next word.
    pos: usize,
    phase: Phase,
    usage: Option<Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Role,
    Words,
    Stop,
    Usage,
    Done,
    End,
}

impl EchoEvents {
    fn chunk(&self, delta: Value, finish: Value) -> Bytes {
        sse_event(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": "echo", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
    }

    fn next_event(&mut self) -> Option<Bytes> {
        match self.phase {
            Phase::Role => {
                self.phase = Phase::Words;
                Some(self.chunk(json!({"role": "assistant", "content": ""}), Value::Null))
            }
            Phase::Words => match self.next_word() {
                Some(piece) => Some(self.chunk(json!({"content": piece}), Value::Null)),
                None => {
                    self.phase = Phase::Stop;
                    self.next_event()
                }
            },
            Phase::Stop => {
                self.phase = Phase::Usage;
                Some(self.chunk(json!({}), json!("stop")))
            }
            Phase::Usage => {
                self.phase = Phase::Done;
                match self.usage.take() {
                    Some(usage) => Some(sse_event(&json!({
                        "id": self.id, "object": "chat.completion.chunk",
                        "created": self.created, "model": "echo", "choices": [], "usage": usage,
                    }))),
                    None => self.next_event(),
                }
            }
            Phase::Done => {
                self.phase = Phase::End;
                Some(Bytes::from_static(b"data: [DONE]\n\n"))
            }
            Phase::End => None,
        }
    }

    /// The next whitespace-separated word, with a leading space after the first.
    fn next_word(&mut self) -> Option<String> {
        let rest = self.reply.get(self.pos..)?;
        let start = rest.find(|c: char| !c.is_whitespace())?;
        let word = &rest[start..];
        let len = word.find(char::is_whitespace).unwrap_or(word.len());
        let piece = match self.pos {
            0 => word[..len].to_string(),
            _ => format!(" {}", &word[..len]),
        };
        self.pos += start + len;
        Some(piece)
    }
}

impl Upstream for EchoUpstream {
    fn name(&self) -> &str {
        "echo"
    }

    fn send(
        &self,
        request: UpstreamRequest,
    ) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        async move {
            if request.endpoint != Endpoint::ChatCompletions {
                return Ok(json_response(
                    ::http::StatusCode::BAD_REQUEST,
                    json!({"error": {"message": "The echo model only supports chat completions.",
                                     "type": "invalid_request_error", "param": "model",
                                     "code": "unsupported_endpoint"}}),
                ));
            }
            match serde_json::from_slice::<EchoRequest>(&request.body) {
                Ok(parsed) => Ok(complete(parsed)),
                Err(_) => Ok(json_response(
                    ::http::StatusCode::BAD_REQUEST,
                    json!({"error": {"message": "The echo model could not read the request.",
                                     "type": "invalid_request_error", "param": null, "code": null}}),
                )),
            }
        }
        .boxed()
    }

    fn list_models(
        &self,
    ) -> BoxFuture<'_, Result<std::sync::Arc<Vec<ModelObject>>, UpstreamError>> {
        async { Ok(Default::default()) }.boxed()
    }
}
