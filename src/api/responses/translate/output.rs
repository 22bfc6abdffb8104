//! A turn's output items and usage, typed, written as JSON straight into a buffer (keys sorted, as clients have always seen them), and as the chat messages a stored turn keeps.

use crate::gateway::decode::Usage;

/// An output item of a translated turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputItem {
    /// An assistant message: one `output_text` part (when there is text) and one
    /// `refusal` part (when it refused).
    Message {
        id: String,
        status: &'static str,
        text: Option<String>,
        refusal: Option<String>,
    },
    FunctionCall {
        id: String,
        status: &'static str,
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl OutputItem {
    /// The item as JSON.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            OutputItem::Message {
                id,
                status,
                text,
                refusal,
            } => write_message(out, id, status, text.as_deref(), refusal.as_deref()),
            OutputItem::FunctionCall {
                id,
                status,
                call_id,
                name,
                arguments,
            } => write_function_call(out, id, status, call_id, name, arguments),
        }
    }
}

/// A list of items as JSON.
pub fn write_items(out: &mut Vec<u8>, items: &[OutputItem]) {
    out.push(b'[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        item.write(out);
    }
    out.push(b']');
}

/// A message item as JSON.
pub fn write_message(
    out: &mut Vec<u8>,
    id: &str,
    status: &str,
    text: Option<&str>,
    refusal: Option<&str>,
) {
    out.extend_from_slice(b"{\"content\":[");
    if let Some(text) = text {
        write_text_part(out, text);
    }
    if let Some(refusal) = refusal {
        if text.is_some() {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"refusal\":");
        write_str(out, refusal);
        out.extend_from_slice(b",\"type\":\"refusal\"}");
    }
    out.extend_from_slice(b"],\"id\":");
    write_str(out, id);
    out.extend_from_slice(b",\"role\":\"assistant\",\"status\":");
    write_str(out, status);
    out.extend_from_slice(b",\"type\":\"message\"}");
}

/// A function call item as JSON.
pub fn write_function_call(
    out: &mut Vec<u8>,
    id: &str,
    status: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
) {
    out.extend_from_slice(b"{\"arguments\":");
    write_str(out, arguments);
    out.extend_from_slice(b",\"call_id\":");
    write_str(out, call_id);
    out.extend_from_slice(b",\"id\":");
    write_str(out, id);
    out.extend_from_slice(b",\"name\":");
    write_str(out, name);
    out.extend_from_slice(b",\"status\":");
    write_str(out, status);
    out.extend_from_slice(b",\"type\":\"function_call\"}");
}

/// An `output_text` content part as JSON.
pub fn write_text_part(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"{\"annotations\":[],\"logprobs\":[],\"text\":");
    write_str(out, text);
    out.extend_from_slice(b",\"type\":\"output_text\"}");
}

/// `text` as a JSON string, escaped as serde_json escapes it.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    if !needs_escape(text.as_bytes()) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, text).is_err() {
        // Writing a string into a Vec cannot fail; the output stays JSON regardless.
        out.extend_from_slice(b"\"\"");
    }
}

/// Whether `bytes` hold a byte JSON escapes: a control character, `"` or `\`. Eight
/// bytes at a time: a byte below 0x20, or equal to `"` or `\` after an XOR, leaves its
/// high bit set in `(x - 0x01…) & !x & 0x80…` (other bytes never do).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        // An exact chunk always converts; zeros (control characters) would only send the
        // text the slow, exact way.
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        if below(x, 0x20) | below(x ^ (ONES * 0x22), 1) | below(x ^ (ONES * 0x5c), 1) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A number in decimal.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// A turn's token counts in the Responses API's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    pub reasoning: u64,
    pub total: u64,
}

impl TokenUsage {
    /// From a chat reply's usage: its `total_tokens`, or else input plus output.
    pub fn from_chat(usage: &Usage) -> Self {
        let total = usage
            .raw
            .get("total_tokens")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(usage.input_tokens.wrapping_add(usage.output_tokens));
        TokenUsage {
            input: usage.input_tokens,
            cached: usage.cached_input_tokens,
            output: usage.output_tokens,
            reasoning: usage.reasoning_tokens,
            total,
        }
    }

    /// The `usage` object, with the `*_details` objects the SDKs read.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"input_tokens\":");
        write_u64(out, self.input);
        out.extend_from_slice(b",\"input_tokens_details\":{\"cached_tokens\":");
        write_u64(out, self.cached);
        out.extend_from_slice(b"},\"output_tokens\":");
        write_u64(out, self.output);
        out.extend_from_slice(b",\"output_tokens_details\":{\"reasoning_tokens\":");
        write_u64(out, self.reasoning);
        out.extend_from_slice(b"},\"total_tokens\":");
        write_u64(out, self.total);
        out.push(b'}');
    }
}

/// The chat messages a stored turn keeps for its output, as `items_to_messages` makes them
/// from the items' JSON: a message's text and refusal join into its content, and function
/// calls join the assistant message before them (or a new one without content).
pub fn chat_messages(items: &[OutputItem]) -> Vec<String> {
    let mut done = Vec::with_capacity(items.len());
    // The last assistant message without its closing brace, and whether it has calls.
    let mut open: Option<(Vec<u8>, bool)> = None;
    let close = |open: &mut Option<(Vec<u8>, bool)>, done: &mut Vec<String>| {
        if let Some((mut message, has_calls)) = open.take() {
            if has_calls {
                message.push(b']');
            }
            message.push(b'}');
            done.push(String::from_utf8(message).unwrap_or_default());
        }
    };
    for item in items {
        match item {
            OutputItem::Message { text, refusal, .. } => {
                close(&mut open, &mut done);
                let (text, refusal) = (text.as_deref(), refusal.as_deref());
                let length = text.map_or(0, str::len) + refusal.map_or(0, str::len);
                let mut message = Vec::with_capacity(40 + length);
                message.extend_from_slice(br#"{"role":"assistant","content":"#);
                match (text, refusal) {
                    (Some(text), Some(refusal)) => {
                        write_str(&mut message, &[text, refusal].concat())
                    }
                    (text, refusal) => write_str(&mut message, text.or(refusal).unwrap_or("")),
                }
                open = Some((message, false));
            }
            OutputItem::FunctionCall {
                call_id,
                name,
                arguments,
                ..
            } => {
                let (message, has_calls) = open.get_or_insert_with(|| {
                    (br#"{"role":"assistant","content":null"#.to_vec(), false)
                });
                message.extend_from_slice(if *has_calls {
                    b","
                } else {
                    br#","tool_calls":["#
                });
                message.extend_from_slice(br#"{"id":"#);
                write_str(message, call_id);
                message.extend_from_slice(br#","type":"function","function":{"name":"#);
                write_str(message, name);
                message.extend_from_slice(br#","arguments":"#);
                write_str(message, arguments);
                message.extend_from_slice(b"}}");
                *has_calls = true;
            }
        }
    }
    close(&mut open, &mut done);
    done
}
