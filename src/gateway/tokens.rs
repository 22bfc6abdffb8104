//! Token counts gatewayd makes itself (input estimates, output seen in a cut-short stream), with a real BPE vocabulary.
//!
//! An estimate, not the upstream model's own count: gatewayd cannot know every model's
//! tokenizer, so it counts with OpenAI's `o200k_base` (shipped with the `tiktoken-rs`
//! crate, nothing fetched), plus the few tokens chat formats add per message. A non-empty
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

/// Whether the vocabulary is loaded. Loading it takes a noticeable time (most of a
/// second in a debug build): the first counts go to a blocking thread, so they never
/// stall the threads that serve requests.
pub fn loaded() -> bool {
    VOCABULARY.get().is_some()
}

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

/// Texts larger than this are estimated by length: BPE over megabytes of one repeated
/// run of characters takes seconds of CPU.
const TOKENIZE_AT_MOST: usize = 1024 * 1024;

/// Tokens in one text (about four bytes a token if the vocabulary failed to load, or
/// the text is too large to tokenize).
pub fn count(text: &str) -> u64 {
    match vocabulary() {
        Some(bpe) if text.len() <= TOKENIZE_AT_MOST => bpe.encode_ordinary(text).len() as u64,
        _ => text.len().div_ceil(4) as u64,
    }
}

/// About four bytes a token: a guess that costs nothing (at least 1).
pub fn rough(bytes: usize) -> u64 {
    (bytes.div_ceil(4) as u64).max(1)
}

/// The estimated input tokens of a chat-completions request body: its messages (text,
/// tool calls, images) and its tool definitions. At least 1 for any request with content.
pub fn estimate(chat_body: &[u8]) -> u64 {
    estimate_request(chat_body, None)
}

/// The estimated input tokens of a request body of any protocol gatewayd forwards (chat
/// and Anthropic `messages` and `system`, Responses `input` and `instructions`,
/// completions' `prompt`, embeddings' `input`, `tools`), with `prefix` (stored history:
/// a comma-separated list of chat messages) placed before its messages.
pub fn estimate_request(body: &[u8], prefix: Option<&[u8]>) -> u64 {
    let size = body.len() + prefix.map_or(0, <[u8]>::len);
    if size > TOKENIZE_AT_MOST {
        return rough(size);
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return rough(size);
    };
    let mut total = PER_REPLY;
    if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
        let list = [&b"["[..], prefix, b"]"].concat();
        match serde_json::from_slice::<Value>(&list) {
            Ok(history) => total += messages(&history),
            Err(_) => total += rough(prefix.len()),
        }
    }
    total += messages(&body["messages"]);
    for field in ["system", "instructions", "prompt", "input"] {
        total += content_tokens(&body[field]);
    }
    if let Some(tools) = body.get("tools").filter(|t| t.is_array()) {
        total += count(&tools.to_string());
    }
    total.max(1)
}

fn messages(list: &Value) -> u64 {
    let mut total = 0;
    for message in list.as_array().into_iter().flatten() {
        total += PER_MESSAGE + content_tokens(&message["content"]);
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            total += count(call["function"]["name"].as_str().unwrap_or_default());
            total += count(call["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    total
}

/// A content value of any protocol: a string, or a list of parts (text, images, nested
/// Responses items with their own `content`, tool results).
fn content_tokens(content: &Value) -> u64 {
    match content {
        Value::String(text) => count(text),
        Value::Array(parts) => parts.iter().map(part_tokens).sum(),
        _ => 0,
    }
}

fn part_tokens(part: &Value) -> u64 {
    match part {
        Value::String(text) => count(text),
        Value::Object(fields) => match fields.get("type").and_then(Value::as_str) {
            Some("image_url" | "image" | "input_image") => PER_IMAGE,
            _ => {
                let text = ["text", "arguments", "output"]
                    .iter()
                    .filter_map(|f| fields.get(*f))
                    .map(content_tokens)
                    .sum::<u64>();
                text + fields.get("content").map_or(0, content_tokens)
            }
        },
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::{estimate, estimate_request};

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

    #[test]
    fn counts_every_protocol_and_the_history_prefix() {
        let with_prefix = estimate_request(
            br#"{"messages":[{"role":"user","content":"hello world"}]}"#,
            Some(br#"{"role":"user","content":"hello world"}"#),
        );
        assert_eq!(with_prefix, 2 * (2 + 4) + 3);
        let responses = br#"{"input":[{"role":"user","content":[{"type":"input_text","text":"hello world"}]}],"instructions":"hello world"}"#;
        assert_eq!(estimate_request(responses, None), 2 + 2 + 3);
        let anthropic =
            br#"{"system":"hello world","messages":[{"role":"user","content":[{"type":"text","text":"hello world"}]}]}"#;
        assert_eq!(estimate_request(anthropic, None), 2 + 2 + 4 + 3);
        assert_eq!(
            estimate_request(br#"{"input":["hello world"]}"#, None),
            2 + 3
        );
    }
}
