//! Settling a native Responses turn: the upstream's response id is recorded for the key, before the client can chain it.
//!
//! A native upstream stores the content. gatewayd records only, per response id, the key
//! that created it and the upstream that holds it: every client key shares the gateway's
//! upstream key, so without this record key B could read key A's responses there.
//!
//! In a stream, the `response.created` event's `response.id` is recorded before the
//! chunk that carries it is passed on. A stream that ends before `response.completed`,
//! `response.incomplete`, `response.failed` or `error` was cut short and ends with the
//! relay's error event.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use serde::Deserialize;

use super::decode::sse::{Line, SseLines};
use super::resolve::is_native_id;
use super::turn::NativeApi;
use crate::store::SessionStore;
use crate::upstream::{ByteStream, UpstreamError};
use crate::wire::error::ApiError;

/// The events that end a complete native stream, per API.
fn terminal_events(api: NativeApi) -> &'static [&'static str] {
    match api {
        NativeApi::Responses => &[
            "response.completed",
            "response.incomplete",
            "response.failed",
            "error",
        ],
        NativeApi::Messages => &["message_stop", "error"],
    }
}

/// Where a native response id is recorded (absent for `store: false`).
pub struct NativeRecorder {
    pub store: Arc<SessionStore>,
    pub owner: Arc<str>,
    pub upstream: String,
}

impl NativeRecorder {
    pub async fn record(&self, id: &str) -> Result<(), ApiError> {
        if !is_native_id(id) {
            tracing::warn!(upstream = %self.upstream, "native upstream sent an unusable response id; not recorded");
            return Ok(());
        }
        let recorded = self.store.record_native(&self.owner, id, &self.upstream);
        recorded.await.map_err(ApiError::from)
    }
}

#[derive(Deserialize)]
struct IdOnly {
    id: Option<String>,
}

/// Records the id of a whole (non-streamed) native response.
pub async fn from_body(recorder: &NativeRecorder, body: &[u8]) -> Result<(), ApiError> {
    match serde_json::from_slice::<IdOnly>(body) {
        Ok(IdOnly { id: Some(id) }) => recorder.record(&id).await,
        _ => {
            tracing::warn!(upstream = %recorder.upstream, "native upstream answered without a response id");
            Ok(())
        }
    }
}

/// Reads a native stream's events for the end (and a Responses stream's created id).
pub struct Scanner {
    lines: SseLines,
    terminal: &'static [&'static str],
    /// The current event's `event:` name.
    event: Option<String>,
    created: bool,
    ended: bool,
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
    pub fn new(api: NativeApi) -> Self {
        Scanner {
            lines: SseLines::default(),
            terminal: terminal_events(api),
            event: None,
            created: false,
            ended: false,
        }
    }

    /// Reads one chunk; returns the response id the first time `response.created` names one.
    pub fn push(&mut self, bytes: &[u8]) -> Option<String> {
        let Scanner {
            lines,
            terminal,
            event,
            created,
            ended,
        } = self;
        let mut found = None;
        lines.push(bytes, |line| match line {
            Line::End => *event = None,
            Line::Event(name) => {
                *ended |= terminal.contains(&name);
                *event = Some(name.to_string());
            }
            Line::Data(data) => {
                let Ok(head) = serde_json::from_slice::<Head>(data) else {
                    return;
                };
                let Some(kind) = head.kind.or_else(|| event.clone()) else {
                    return;
                };
                *ended |= terminal.contains(&kind.as_str());
                if kind == "response.created" && !*created {
                    *created = true;
                    found = head.response.and_then(|r| r.id);
                }
            }
        });
        found
    }

    /// Every event was read and one of them ended the response (or some line was too
    /// long to read, so a missing end cannot be told from a missed one).
    pub fn complete(&self) -> bool {
        self.ended || self.lines.missed()
    }
}

struct Tap {
    upstream: ByteStream,
    scanner: Scanner,
    recorder: Option<NativeRecorder>,
    done: bool,
}

/// The upstream's stream, byte for byte, with the response id recorded on the way.
pub fn tap(upstream: ByteStream, recorder: Option<NativeRecorder>, api: NativeApi) -> ByteStream {
    let name: Arc<str> = recorder
        .as_ref()
        .map_or("native", |r| r.upstream.as_str())
        .into();
    let tap = Tap {
        upstream,
        scanner: Scanner::new(api),
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
    use super::{NativeApi, Scanner};

    fn scan(pieces: &[&str]) -> (Vec<Option<String>>, bool) {
        let mut scanner = Scanner::new(NativeApi::Responses);
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
