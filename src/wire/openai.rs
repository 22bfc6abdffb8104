//! The few OpenAI wire fields the gateway must read; every other byte passes through untouched.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

/// What the gateway reads from a request body. Borrowed, so nothing is copied or
/// re-serialised; fields it does not name are skipped by serde and forwarded as bytes.
/// Duplicate top-level keys are refused, so no two parsers can disagree on the model.
#[derive(Debug, Deserialize)]
pub struct RequestPreamble<'a> {
    #[serde(borrow)]
    pub model: Option<&'a RawValue>,
    #[serde(borrow)]
    pub messages: Option<&'a RawValue>,
    #[serde(borrow)]
    pub stream: Option<&'a RawValue>,
    #[serde(borrow)]
    pub stream_options: Option<&'a RawValue>,
}

/// A validated request: the model name, whether it streams, and where the model and
/// messages sit in the original bytes (so aliases and session history can be spliced in).
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub body: Bytes,
    pub model: String,
    pub stream: bool,
    /// The client's headers that may travel upstream (set by the route; credentials
    /// already removed). Each upstream forwards its own allowed subset.
    pub client_headers: std::sync::Arc<http::HeaderMap>,
    model_span: (usize, usize),
    messages_span: Option<(usize, usize)>,
    stream_options_span: Option<(usize, usize)>,
}

/// Which field was wrong, for the OpenAI error's `param`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub param: Option<&'static str>,
}

fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Invalid {
    Invalid {
        message: message.into(),
        param,
    }
}

/// Which endpoint a body is for: chat needs a non-empty `messages` array, Anthropic's
/// Messages endpoints need `messages` present; the others do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions = 0,
    Completions = 1,
    Embeddings = 2,
    /// `/v1/responses`, only for upstreams that serve it natively (`responses = "native"`).
    Responses = 3,
    /// Anthropic's `/v1/messages`, only for upstreams with `api = "anthropic"`.
    Messages = 4,
    /// Anthropic's `/v1/messages/count_tokens`, only for upstreams with `api = "anthropic"`.
    CountTokens = 5,
}

impl Endpoint {
    /// Every endpoint, in discriminant order: `ALL[e as usize] == e`.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::Messages,
        Endpoint::CountTokens,
    ];

    /// The path below an upstream's `base_url` (which ends in the version, `/v1`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "messages/count_tokens",
        }
    }

    /// Anthropic's Messages API, rather than OpenAI's.
    pub fn is_anthropic(self) -> bool {
        matches!(self, Endpoint::Messages | Endpoint::CountTokens)
    }
}

/// Checks only what the gateway needs: a JSON object with a `model` string and, for
/// chat, a non-empty `messages` array (for Anthropic's Messages endpoints, a `messages`
/// of any shape: the upstream judges it). Never panics on any input.
pub fn parse_request(body: Bytes, endpoint: Endpoint) -> Result<ChatRequest, Invalid> {
    let text = std::str::from_utf8(&body).map_err(|_| invalid("Body is not UTF-8.", None))?;
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Err(invalid("Body must be a JSON object.", None));
    }
    let preamble: RequestPreamble<'_> = serde_json::from_str(text)
        .map_err(|e| invalid(format!("Body is not valid JSON: {e}"), None))?;
    let model_raw = preamble
        .model
        .ok_or_else(|| invalid("Missing required parameter: 'model'.", Some("model")))?;
    let model: String = match serde_json::from_str::<String>(model_raw.get()) {
        Ok(m) if !m.is_empty() => m,
        _ => {
            return Err(invalid(
                "'model' must be a non-empty string.",
                Some("model"),
            ))
        }
    };
    let messages_span = match (endpoint, preamble.messages) {
        (Endpoint::ChatCompletions, None) => {
            return Err(invalid(
                "Missing required parameter: 'messages'.",
                Some("messages"),
            ))
        }
        (Endpoint::ChatCompletions, Some(raw)) => {
            let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|_| {
                invalid("'messages' must be an array of messages.", Some("messages"))
            })?;
            if items.is_empty() {
                return Err(invalid("'messages' must not be empty.", Some("messages")));
            }
            if let Some(bad) = items.iter().position(|m| !m.get().starts_with('{')) {
                return Err(invalid(
                    format!("'messages[{bad}]' must be an object."),
                    Some("messages"),
                ));
            }
            Some(span_of(text, raw))
        }
        (Endpoint::Messages | Endpoint::CountTokens, None) => {
            return Err(invalid(
                "Missing required parameter: 'messages'.",
                Some("messages"),
            ))
        }
        (_, Some(raw)) => Some(span_of(text, raw)),
        (_, None) => None,
    };
    let stream = match preamble.stream.map(|s| s.get()) {
        None | Some("null") | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(invalid("'stream' must be a boolean.", Some("stream"))),
    };
    let model_span = span_of(text, model_raw);
    let stream_options_span = preamble.stream_options.map(|raw| span_of(text, raw));
    Ok(ChatRequest {
        body,
        model,
        stream,
        client_headers: Default::default(),
        model_span,
        messages_span,
        stream_options_span,
    })
}

/// A span after an edit that replaced `cut` bytes ending at `end` with `grown` bytes.
fn moved((s, e): (usize, usize), end: usize, grown: usize, cut: usize) -> (usize, usize) {
    match s >= end {
        true => (s + grown - cut, e + grown - cut),
        false => (s, e),
    }
}

/// Byte offsets of a borrowed sub-slice within the text it was parsed from.
fn span_of(text: &str, raw: &RawValue) -> (usize, usize) {
    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
    (start, start + raw.get().len())
}

impl ChatRequest {
    /// Asks a chat upstream for the usage chunk of its stream
    /// (`stream_options.include_usage = true`), editing only that field's bytes. Returns
    /// whether the client had asked for it itself.
    pub fn ask_stream_usage(&mut self) -> bool {
        const ASK: &[u8] = br#"{"include_usage":true}"#;
        let Some((start, end)) = self.stream_options_span else {
            // Added as the body's last field: no other field moves.
            let Some(close) = self.body.iter().rposition(|b| *b == b'}') else {
                return false;
            };
            let field = br#","stream_options":"#;
            let at = close + field.len();
            self.splice(close, close, &[&field[..], ASK].concat());
            self.stream_options_span = Some((at, at + ASK.len()));
            return false;
        };
        let options = serde_json::from_slice::<serde_json::Value>(&self.body[start..end]);
        let mut options = match options {
            Ok(serde_json::Value::Object(options)) => options,
            _ => serde_json::Map::new(),
        };
        if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
            return true;
        }
        options.insert("include_usage".into(), serde_json::Value::Bool(true));
        let replacement = serde_json::to_vec(&options).unwrap_or_else(|_| ASK.to_vec());
        self.splice(start, end, &replacement);
        self.stream_options_span = Some((start, start + replacement.len()));
        false
    }

    /// Replaces `body[start..end]`, moving the spans after it.
    fn splice(&mut self, start: usize, end: usize, replacement: &[u8]) {
        let mut out = BytesMut::with_capacity(self.body.len() + replacement.len());
        out.extend_from_slice(&self.body[..start]);
        out.extend_from_slice(replacement);
        out.extend_from_slice(&self.body[end..]);
        self.body = out.freeze();
        let (grown, cut) = (replacement.len(), end - start);
        self.model_span = moved(self.model_span, end, grown, cut);
        self.messages_span = self.messages_span.map(|span| moved(span, end, grown, cut));
    }

    /// The raw JSON text of `messages`, as sent.
    pub fn messages_json(&self) -> Option<&[u8]> {
        self.messages_span.map(|(s, e)| &self.body[s..e])
    }

    /// The body to forward: the original bytes, with the model renamed (alias) and
    /// history placed before the request's own messages. Untouched when neither applies.
    pub fn forward_body(&self, upstream_model: Option<&str>, history: Option<&[u8]>) -> Bytes {
        let rename = upstream_model.filter(|m| *m != self.model);
        let prefix = history.filter(|h| !h.is_empty());
        if rename.is_none() && prefix.is_none() {
            return self.body.clone();
        }
        let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        if let Some(name) = rename {
            let quoted = serde_json::to_vec(name).unwrap_or_default();
            edits.push((self.model_span.0, self.model_span.1, quoted));
        }
        if let (Some(history), Some((start, _))) = (prefix, self.messages_span) {
            // `history` is a comma-separated list of JSON objects; insert it right after '['.
            let mut insert = history.to_vec();
            insert.push(b',');
            edits.push((start + 1, start + 1, insert));
        }
        edits.sort_by_key(|e| e.0);
        let extra: usize = edits.iter().map(|e| e.2.len()).sum();
        let mut out = BytesMut::with_capacity(self.body.len() + extra);
        let mut cursor = 0;
        for (start, end, replacement) in edits {
            out.extend_from_slice(&self.body[cursor..start]);
            out.extend_from_slice(&replacement);
            cursor = end;
        }
        out.extend_from_slice(&self.body[cursor..]);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<ChatRequest, Invalid> {
        parse_request(Bytes::from(body.to_string()), Endpoint::ChatCompletions)
    }

    #[test]
    fn validates_only_what_it_needs() {
        let ok =
            chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"x":1}"#).unwrap();
        assert_eq!((ok.model.as_str(), ok.stream), ("m", false));
        assert_eq!(chat("[]").unwrap_err().param, None);
        assert_eq!(
            chat(r#"{"messages":[{}]}"#).unwrap_err().param,
            Some("model")
        );
        assert_eq!(
            chat(r#"{"model":5,"messages":[{}]}"#).unwrap_err().param,
            Some("model")
        );
        assert_eq!(
            chat(r#"{"model":"m"}"#).unwrap_err().param,
            Some("messages")
        );
        assert_eq!(
            chat(r#"{"model":"m","messages":[]}"#).unwrap_err().param,
            Some("messages")
        );
        assert_eq!(
            chat(r#"{"model":"m","messages":{}}"#).unwrap_err().param,
            Some("messages")
        );
        assert_eq!(
            chat(r#"{"model":"m","messages":[{}],"stream":"yes"}"#)
                .unwrap_err()
                .param,
            Some("stream")
        );
        assert!(chat(r#"{"model":"m","model":"n","messages":[{}]}"#).is_err());
        assert!(chat(r#"{"model":"m","messages":[{}]"#).is_err());
        assert!(chat("\u{0}").is_err());
    }

    #[test]
    fn all_is_in_discriminant_order() {
        for (i, endpoint) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(endpoint as usize, i, "{endpoint:?}");
        }
    }

    #[test]
    fn messages_bodies_need_model_and_messages_of_any_shape() {
        for endpoint in [Endpoint::Messages, Endpoint::CountTokens] {
            let parse = |body: &str| parse_request(Bytes::from(body.to_string()), endpoint);
            let body = r#"{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true}"#;
            let ok = parse(body).unwrap();
            assert_eq!((ok.model.as_str(), ok.stream), ("claude", true));
            assert_eq!(ok.forward_body(Some("claude"), None), Bytes::from(body));
            assert!(parse(r#"{"model":"claude","messages":[]}"#).is_ok());
            assert!(parse(r#"{"model":"claude","messages":"odd"}"#).is_ok());
            assert_eq!(
                parse(r#"{"model":"claude"}"#).unwrap_err().param,
                Some("messages")
            );
            assert_eq!(
                parse(r#"{"messages":[]}"#).unwrap_err().param,
                Some("model")
            );
        }
    }

    #[test]
    fn stream_usage_is_asked_by_editing_one_field() {
        let mut req =
            chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#)
                .unwrap();
        assert!(!req.ask_stream_usage());
        assert_eq!(
            &req.body[..],
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#
        );
        assert!(req.ask_stream_usage());
        let mut req = chat(r#"{"stream_options":{"include_usage":false,"x":1},"model":"m","messages":[{"role":"user","content":"b"}]}"#).unwrap();
        assert!(!req.ask_stream_usage());
        let out = req.forward_body(Some("n"), Some(br#"{"role":"user","content":"a"}"#));
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
        assert_eq!(value["model"], "n");
        assert_eq!(value["messages"][1]["content"], "b");
        let mut asked =
            chat(r#"{"model":"m","messages":[{}],"stream_options":{"include_usage":true}}"#)
                .unwrap();
        let before = asked.body.clone();
        assert!(asked.ask_stream_usage());
        assert_eq!(asked.body, before);
    }

    #[test]
    fn forward_body_is_untouched_without_edits() {
        let body =
            r#"{ "model" : "m", "messages":[{"role":"user","content":"hi"}], "stream":true }"#;
        let req = chat(body).unwrap();
        assert!(req.stream);
        assert_eq!(req.forward_body(Some("m"), None), Bytes::from(body));
    }

    #[test]
    fn forward_body_renames_and_prepends_history() {
        let req = chat(r#"{"model":"fast","messages":[{"role":"user","content":"b"}]}"#).unwrap();
        let out = req.forward_body(
            Some("gpt-4o-mini"),
            Some(br#"{"role":"user","content":"a"}"#),
        );
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["model"], "gpt-4o-mini");
        assert_eq!(value["messages"][0]["content"], "a");
        assert_eq!(value["messages"][1]["content"], "b");
    }
}
