//! Token estimates for the Anthropic Messages API: the request as a chat upstream sees it, counted with a real BPE vocabulary.
//!
//! An estimate, not the upstream model's own count: gatewayd cannot know every model's
//! tokenizer, so it counts with OpenAI's `o200k_base` (shipped with the `tiktoken-rs`
//! crate, nothing fetched), plus the few tokens chat formats add per message. Clients such
//! as Claude Code use the count to decide when to compact a conversation, so a non-empty
//! request never counts as 0.

use std::sync::OnceLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// Tokens a chat format adds around each message, and once to prime the reply.
const PER_MESSAGE: u64 = 4;
const PER_REPLY: u64 = 3;
/// A flat cost per image part: its size is unknown without decoding it.
const PER_IMAGE: u64 = 85;

static VOCABULARY: OnceLock<Option<CoreBPE>> = OnceLock::new();

fn vocabulary() -> Option<&'static CoreBPE> {
    VOCABULARY
        .get_or_init(|| match tiktoken_rs::o200k_base() {
            Ok(bpe) => Some(bpe),
            Err(err) => {
                tracing::error!(error = %err, "the token vocabulary could not be loaded; counting by length");
                None
            }
        })
        .as_ref()
}

/// Tokens in one text (about four bytes a token if the vocabulary failed to load).
fn tokens(text: &str) -> u64 {
    match vocabulary() {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => text.len().div_ceil(4) as u64,
    }
}

/// Bodies larger than this are estimated by length: BPE over megabytes of one repeated
/// run of characters takes seconds of CPU.
const TOKENIZE_AT_MOST: usize = 1024 * 1024;

/// About four bytes a token: a guess that costs nothing (at least 1).
pub fn rough(bytes: usize) -> u64 {
    (bytes.div_ceil(4) as u64).max(1)
}

/// The estimated input tokens of a chat-completions request body: its messages (text,
/// tool calls, images) and its tool definitions. At least 1 for any request with content.
pub fn estimate(chat_body: &[u8]) -> u64 {
    if chat_body.len() > TOKENIZE_AT_MOST {
        return rough(chat_body.len());
    }
    let Ok(body) = serde_json::from_slice::<Value>(chat_body) else {
        return rough(chat_body.len());
    };
    let mut count = PER_REPLY;
    for message in body["messages"].as_array().into_iter().flatten() {
        count += PER_MESSAGE + content_tokens(&message["content"]);
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            count += tokens(call["function"]["name"].as_str().unwrap_or_default());
            count += tokens(call["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    if let Some(tools) = body.get("tools").filter(|t| t.is_array()) {
        count += tokens(&tools.to_string());
    }
    count.max(1)
}

fn content_tokens(content: &Value) -> u64 {
    match content {
        Value::String(text) => tokens(text),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part["type"].as_str() {
                Some("image_url") => PER_IMAGE,
                _ => tokens(part["text"].as_str().unwrap_or_default()),
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::estimate;

    #[test]
    fn counts_real_tokens_and_never_zero() {
        let short = br#"{"messages":[{"role":"user","content":"hello world"}]}"#;
        let n = estimate(short);
        // "hello world" is 2 tokens in o200k_base, plus the chat framing.
        assert_eq!(n, 2 + 4 + 3);
        let long = format!(
            r#"{{"messages":[{{"role":"user","content":"{}"}}],"tools":[{{"type":"function","function":{{"name":"f","parameters":{{}}}}}}]}}"#,
            "word ".repeat(1000)
        );
        assert!(estimate(long.as_bytes()) > 1000);
        assert!(estimate(b"not json") >= 1);
    }
}
