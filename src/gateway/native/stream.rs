//! A native Responses stream, passed on unchanged while its events are read for the response id and the end.
//!
//! The `response.created` event's `response.id` is recorded before the chunk that
//! carries it is passed on, so the client can never chain an id gatewayd does not know.
//! A stream that ends before `response.completed`, `response.incomplete`,
//! `response.failed` or `error` was cut short and ends with the relay's error event.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use serde::Deserialize;

use super::Recorder;
use crate::upstream::{ByteStream, UpstreamError};

/// Longest SSE line read for its fields; a longer one is passed on unread.
const MAX_LINE: usize = 8 * 1024 * 1024;

const TERMINAL: [&str; 4] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
];

/// Reads SSE lines across chunk boundaries, copying only the unfinished last line.
#[derive(Default)]
pub struct Scanner {
    line: Vec<u8>,
    /// The current line passed `MAX_LINE`: skip to its end.
    skipping: bool,
    /// Some line was never read, so a missing end cannot be told from a missed one.
    missed: bool,
    /// The current event's `event:` name.
    event: Option<String>,
    created: bool,
    terminal: bool,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<String>,
    response: Option<ResponseHead>,
}

#[derive(Deserialize)]
struct ResponseHead {
    id: Option<String>,
}

impl Scanner {
    /// Reads one chunk; returns the response id the first time `response.created` names one.
    pub fn push(&mut self, mut bytes: &[u8]) -> Option<String> {
        let mut created = None;
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            let found = if self.line.is_empty() && !self.skipping {
                self.on_line(&bytes[..end])
            } else {
                self.extend(&bytes[..end]);
                let line = std::mem::take(&mut self.line);
                let found = (!std::mem::take(&mut self.skipping))
                    .then(|| self.on_line(&line))
                    .flatten();
                self.line = line;
                self.line.clear();
                found
            };
            created = created.or(found);
            bytes = &bytes[end + 1..];
        }
        self.extend(bytes);
        created
    }

    /// Every event was read and one of them ended the response.
    pub fn complete(&self) -> bool {
        self.terminal || self.missed
    }

    fn extend(&mut self, bytes: &[u8]) {
        if self.skipping {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            self.skipping = true;
            self.missed = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn on_line(&mut self, line: &[u8]) -> Option<String> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.event = None;
            return None;
        }
        if let Some(name) = line.strip_prefix(b"event:") {
            let name = String::from_utf8_lossy(name).trim().to_string();
            self.terminal |= TERMINAL.contains(&name.as_str());
            self.event = Some(name);
            return None;
        }
        let data = line.strip_prefix(b"data:")?;
        let head = serde_json::from_slice::<Head>(data).ok()?;
        let kind = head.kind.or_else(|| self.event.clone())?;
        self.terminal |= TERMINAL.contains(&kind.as_str());
        if kind != "response.created" || self.created {
            return None;
        }
        self.created = true;
        head.response.and_then(|r| r.id)
    }
}

struct Tap {
    upstream: ByteStream,
    scanner: Scanner,
    recorder: Option<Recorder>,
    done: bool,
}

/// The upstream's stream, byte for byte, with the response id recorded on the way.
pub fn tap(upstream: ByteStream, recorder: Option<Recorder>) -> ByteStream {
    let name: Arc<str> = recorder
        .as_ref()
        .map_or("native", |r| r.upstream.as_str())
        .into();
    let tap = Tap {
        upstream,
        scanner: Scanner::default(),
        recorder,
        done: false,
    };
    stream::unfold(tap, move |mut tap| {
        let name = name.clone();
        async move {
            if tap.done {
                return None;
            }
            let item = match tap.upstream.next().await {
                Some(Ok(bytes)) => match tap.scanner.push(&bytes) {
                    Some(id) => match &tap.recorder {
                        Some(recorder) if recorder.record(&id).await.is_err() => {
                            tap.done = true;
                            let what = "its response id could not be recorded";
                            Err(UpstreamError::Broken(name.clone(), what.into()))
                        }
                        _ => Ok(bytes),
                    },
                    None => Ok(bytes),
                },
                Some(Err(err)) => {
                    tap.done = true;
                    Err(err)
                }
                None if !tap.scanner.complete() => {
                    tap.done = true;
                    Err(UpstreamError::Truncated(name.clone()))
                }
                None => return None,
            };
            Some((item, tap))
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::Scanner;

    fn scan(pieces: &[&str]) -> (Vec<Option<String>>, bool) {
        let mut scanner = Scanner::default();
        let ids = pieces.iter().map(|p| scanner.push(p.as_bytes())).collect();
        (ids, scanner.complete())
    }

    #[test]
    fn finds_the_created_id_across_chunks() {
        let created = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\"}}\n\n";
        let (at, mid) = created.split_at(40);
        let (ids, complete) = scan(&[
            at,
            mid,
            "event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n",
        ]);
        assert_eq!(ids, [None, Some("resp_1".into()), None]);
        assert!(complete);
    }

    #[test]
    fn a_stream_without_its_final_event_is_incomplete() {
        let (ids, complete) = scan(&[
            "data: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}\r\n\r\n",
            "data: {\"type\":\"response.output_text.delta\"}\n\n",
        ]);
        assert_eq!(ids, [Some("r".into()), None]);
        assert!(!complete);
        // Only the first response.created counts; an event name stands in for a missing type.
        let (ids, complete) = scan(&["event: response.created\ndata: {\"response\":{\"id\":\"a\"}}\n\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"b\"}}\n\n", "event: error\ndata: {}\n\n"]);
        assert_eq!(ids, [Some("a".into()), None]);
        assert!(complete);
    }
}
