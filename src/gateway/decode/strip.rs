//! Removes the usage-only chunk (`choices: []` with `usage`) from a chat stream the client did not ask usage of: the one change gatewayd makes to a chat stream's bytes.
//!
//! gatewayd asks chat upstreams for `stream_options.include_usage` on every streamed
//! turn, so every turn's tokens are known. A client that did not ask must not get the
//! extra chunk. Every other byte passes on unchanged; only whole events are passed on
//! (a partial event waits for its end), so an event can be judged whole.

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// Holds back a partial event until it is complete, and drops usage-only events.
#[derive(Default)]
pub struct UsageChunkStrip {
    pending: BytesMut,
}

/// What one chunk becomes.
pub struct Stripped {
    /// The whole events to send (the usage-only ones removed).
    pub send: Bytes,
    /// The usage-only events removed, for the decoder to read the usage from.
    pub removed: Option<Bytes>,
}

impl UsageChunkStrip {
    /// Reads one upstream chunk.
    pub fn push(&mut self, bytes: Bytes) -> Stripped {
        if self.pending.is_empty() && ends_event(&bytes) && !has_usage(&bytes) {
            // The usual chunk: whole events with no usage report, sent as it came.
            return Stripped {
                send: bytes,
                removed: None,
            };
        }
        self.pending.extend_from_slice(&bytes);
        let whole = last_event_end(&self.pending);
        let events = self.pending.split_to(whole).freeze();
        let mut send = BytesMut::with_capacity(events.len());
        let mut removed = BytesMut::new();
        let mut at = 0;
        while at < events.len() {
            let end = at + next_event_end(&events[at..]).unwrap_or(events.len() - at);
            let event = &events[at..end];
            match usage_only(event) {
                true => removed.extend_from_slice(event),
                false => send.extend_from_slice(event),
            }
            at = end;
        }
        Stripped {
            send: send.freeze(),
            removed: (!removed.is_empty()).then(|| removed.freeze()),
        }
    }

    /// What is still held at the stream's end (an unfinished last event), sent as is.
    pub fn rest(&mut self) -> Bytes {
        self.pending.split().freeze()
    }
}

/// The chunk ends with a blank line (the end of an event).
fn ends_event(bytes: &[u8]) -> bool {
    bytes.ends_with(b"\n\n") || bytes.ends_with(b"\n\r\n")
}

/// The chunk may hold a usage report: a `"usage"` key whose value is not `null`.
fn has_usage(bytes: &[u8]) -> bool {
    memchr::memmem::find_iter(bytes, b"\"usage\"").any(|at| {
        let rest = &bytes[at + 7..];
        let value = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b':'))
            .map_or(rest, |skip| &rest[skip..]);
        !value.starts_with(b"null")
    })
}

/// Where the event starting at `bytes[0]` ends (after its blank line), if it does.
fn next_event_end(bytes: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for newline in memchr::memchr_iter(b'\n', bytes) {
        let line = &bytes[line_start..newline];
        if (line.is_empty() || line == b"\r") && line_start > 0 {
            return Some(newline + 1);
        }
        line_start = newline + 1;
    }
    None
}

/// The end of the last whole event in `bytes` (0 if none is whole).
fn last_event_end(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(end) = next_event_end(&bytes[at..]) {
        at += end;
    }
    at
}

/// One `data:` line holding a chunk with no choices and a usage report.
fn usage_only(event: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        choices: Option<Vec<IgnoredAny>>,
        usage: Option<serde_json::Value>,
    }
    if !has_usage(event) {
        return false;
    }
    let mut data = event
        .split(|b| *b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data:"));
    let (Some(line), None) = (data.next(), data.next()) else {
        return false;
    };
    let line = line.strip_prefix(b" ").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match serde_json::from_slice::<Probe>(line) {
        Ok(probe) => {
            probe.choices.is_none_or(|c| c.is_empty()) && probe.usage.is_some_and(|u| u.is_object())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::UsageChunkStrip;
    use bytes::Bytes;

    const TEXT: &str =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n";
    const USAGE: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn run(pieces: &[&str]) -> (String, String) {
        let mut strip = UsageChunkStrip::default();
        let (mut sent, mut removed) = (String::new(), String::new());
        for piece in pieces {
            let out = strip.push(Bytes::from(piece.to_string()));
            sent.push_str(std::str::from_utf8(&out.send).unwrap());
            if let Some(r) = out.removed {
                removed.push_str(std::str::from_utf8(&r).unwrap());
            }
        }
        sent.push_str(std::str::from_utf8(&strip.rest()).unwrap());
        (sent, removed)
    }

    #[test]
    fn only_the_usage_chunk_is_removed() {
        let whole = [TEXT, USAGE, DONE].concat();
        assert_eq!(run(&[&whole]), ([TEXT, DONE].concat(), USAGE.to_string()));
        // Split anywhere, the result is the same.
        for cut in 1..whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(
                run(&[a, b]),
                ([TEXT, DONE].concat(), USAGE.to_string()),
                "{cut}"
            );
        }
        // A chunk with choices keeps its usage; CRLF events are read too.
        let both = "data: {\"choices\":[{\"index\":0}],\"usage\":{\"prompt_tokens\":1}}\r\n\r\n";
        assert_eq!(run(&[both]), (both.to_string(), String::new()));
        let crlf = USAGE.replace("\n\n", "\r\n\r\n");
        assert_eq!(run(&[&crlf, DONE]), (DONE.to_string(), crlf));
        // An unfinished last event is sent at the end as it came.
        assert_eq!(
            run(&[TEXT, "data: {\"x\""]).0,
            [TEXT, "data: {\"x\""].concat()
        );
    }
}
