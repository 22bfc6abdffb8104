//! Relays an upstream SSE stream to the client byte for byte, with keep-alives and a clean error end.
//!
//! A stream is complete only when its terminal `data: [DONE]` arrives (unless the upstream
//! is configured with `stream_end = "eof"`). A stream that ends without it was cut short:
//! the client gets an `upstream_truncated` error event, and nothing is stored.
//!
//! An observer may also translate: then the client gets the observer's events (another
//! protocol's, e.g. the Responses API's) instead of the upstream's bytes, with the same
//! keep-alives, deadlines and error endings.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::telemetry::StreamGauge;
use crate::upstream::{ByteStream, UpstreamError};
use crate::wire::error::ApiError;

/// Sent after a quiet period so proxies and clients keep the connection open.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Watches the relayed bytes, e.g. to assemble a reply for a session.
pub trait StreamObserver: Send + 'static {
    /// Called with each chunk before it is forwarded.
    fn chunk(&mut self, bytes: &Bytes);
    /// Called once when the reply is complete (at `data: [DONE]`, or at the end of the
    /// body for a `stream_end = "eof"` upstream), before the client sees its end. An
    /// error event it returns replaces `data: [DONE]` (e.g. the turn could not be stored).
    /// Never called for a failed, truncated or abandoned stream: it is just dropped.
    fn finish(self: Box<Self>) -> futures_util::future::BoxFuture<'static, Option<Bytes>>;
    /// For a translating observer: what to send in place of the chunk just observed
    /// (whole events, possibly none). Its `finish` then returns the stream's whole ending,
    /// and the upstream's own `[DONE]` is not sent.
    fn translated(&mut self) -> Option<Bytes> {
        None
    }
    /// The final event(s) of a failed stream in the client's protocol; `None` sends the
    /// chat-style `data: {"error":…}` event.
    fn error_event(&mut self, _error: &ApiError) -> Option<Bytes> {
        None
    }
}

pub struct RelayOptions {
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
    pub hard_stop: CancellationToken,
    /// The upstream ends every complete stream with `data: [DONE]`.
    pub require_done: bool,
}

/// Finds the `data: [DONE]` line in a stream that arrives in arbitrary pieces, without
/// copying: each chunk is searched in place, and the few bytes that straddle two chunks
/// are checked in a small stack window.
struct DoneScanner {
    /// The last bytes seen (a newline at the start of the stream).
    tail: [u8; DONE_LINE.len()],
    tail_len: usize,
    seen: bool,
}

/// `data: [DONE]` at the start of a line (JSON text cannot contain a raw newline, so
/// this never matches inside an event's data).
const DONE_LINE: &[u8] = b"\ndata: [DONE]";
const DONE_LINE_TIGHT: &[u8] = b"\ndata:[DONE]";
const DONE: &[u8] = b"[DONE]";

impl DoneScanner {
    fn new() -> Self {
        let mut tail = [0u8; DONE_LINE.len()];
        tail[0] = b'\n';
        DoneScanner {
            tail,
            tail_len: 1,
            seen: false,
        }
    }

    /// Where in `chunk` the `[DONE]` line starts (0 if it began in an earlier chunk), the
    /// first time it is complete.
    fn push(&mut self, chunk: &[u8]) -> Option<usize> {
        if self.seen {
            return None;
        }
        let found = Self::find(chunk).map(|at| at + 1).or_else(|| {
            let mut window = [0u8; 2 * DONE_LINE.len()];
            let head = chunk.len().min(DONE_LINE.len());
            window[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            window[self.tail_len..self.tail_len + head].copy_from_slice(&chunk[..head]);
            Self::find(&window[..self.tail_len + head]).map(|_| 0)
        });
        let keep = chunk.len().min(DONE_LINE.len());
        if keep == DONE_LINE.len() {
            self.tail.copy_from_slice(&chunk[chunk.len() - keep..]);
            self.tail_len = keep;
        } else {
            let total = self.tail_len + keep;
            let drop = total.saturating_sub(DONE_LINE.len());
            self.tail.copy_within(drop..self.tail_len, 0);
            self.tail_len -= drop;
            self.tail[self.tail_len..self.tail_len + keep].copy_from_slice(chunk);
            self.tail_len += keep;
        }
        self.seen = found.is_some();
        found
    }

    /// Where `\ndata: [DONE]` (or `\ndata:[DONE]`) starts: one pass for `[DONE]`, which
    /// is rare, then a look at the few bytes before it.
    fn find(haystack: &[u8]) -> Option<usize> {
        memchr::memmem::find_iter(haystack, DONE).find_map(|at| {
            let before = &haystack[..at];
            [DONE_LINE, DONE_LINE_TIGHT]
                .iter()
                .map(|line| &line[..line.len() - DONE.len()])
                .find(|prefix| before.ends_with(prefix))
                .map(|prefix| at - prefix.len())
        })
    }
}

struct RelayState {
    upstream: ByteStream,
    options: RelayOptions,
    last_upstream_byte: Instant,
    last_sent: Instant,
    at_event_boundary: bool,
    finished: bool,
    done: DoneScanner,
    observer: Option<Box<dyn StreamObserver>>,
    _open: StreamGauge,
}

/// The client-facing body: upstream bytes unchanged, `: keep-alive` comments between
/// events during silences, and a final `data: {"error":…}` event if the upstream fails,
/// goes silent past its idle timeout, or the shutdown grace period ends.
pub fn relay(
    upstream: ByteStream,
    options: RelayOptions,
    observer: Option<Box<dyn StreamObserver>>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let now = Instant::now();
    let state = RelayState {
        upstream,
        options,
        last_upstream_byte: now,
        last_sent: now,
        at_event_boundary: true,
        finished: false,
        done: DoneScanner::new(),
        observer,
        _open: StreamGauge::open(),
    };
    stream::unfold(state, |mut state| async move {
        if state.finished {
            return None;
        }
        let chunk = next_chunk(&mut state).await?;
        Some((Ok::<_, std::io::Error>(chunk), state))
    })
}

/// The next bytes to send, or `None` once the stream is over.
async fn next_chunk(state: &mut RelayState) -> Option<Bytes> {
    loop {
        let idle_deadline = state.last_upstream_byte + state.options.idle_timeout;
        let keep_alive_at = state.last_sent + state.options.keep_alive;
        tokio::select! {
            biased;
            _ = state.options.hard_stop.cancelled() => {
                return Some(finish_with_error(state, &ApiError::Unavailable));
            }
            item = state.upstream.next() => match item {
                Some(Ok(bytes)) => {
                    state.last_upstream_byte = Instant::now();
                    if bytes.is_empty() {
                        continue;
                    }
                    state.last_sent = state.last_upstream_byte;
                    state.at_event_boundary = bytes.ends_with(b"\n\n") || bytes.ends_with(b"\r\n\r\n");
                    let translated = state.observer.as_mut().and_then(|observer| {
                        observer.chunk(&bytes);
                        observer.translated()
                    });
                    if translated.is_some() {
                        state.at_event_boundary = true;
                    }
                    if let Some(done_at) = state.done.push(&bytes) {
                        let ending = finish_observer(state).await;
                        if let Some(events) = translated {
                            // A translated stream ends with the observer's ending.
                            state.finished = true;
                            return Some([events, ending.unwrap_or_default()].concat().into());
                        }
                        if let Some(error_event) = ending {
                            // Not stored: the error event takes the place of [DONE].
                            state.finished = true;
                            let separator: &[u8] = if done_at == 0 { b"\n\n" } else { b"" };
                            return Some([&bytes[..done_at], separator, &error_event].concat().into());
                        }
                    }
                    match translated {
                        Some(events) if events.is_empty() => continue,
                        Some(events) => return Some(events),
                        None => return Some(bytes),
                    }
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "upstream stream failed");
                    return Some(finish_with_error(state, &upstream_error(&err)));
                }
                None if state.options.require_done && !state.done.seen => {
                    tracing::warn!("upstream stream ended without data: [DONE]; treated as truncated");
                    return Some(finish_with_error(state, &ApiError::UpstreamTruncated));
                }
                None => {
                    state.finished = true;
                    return finish_observer(state).await;
                }
            },
            _ = sleep_until(idle_deadline) => {
                tracing::warn!("upstream stream went silent past its idle timeout");
                return Some(finish_with_error(state, &ApiError::GatewayTimeout));
            }
            _ = sleep_until(keep_alive_at), if state.at_event_boundary => {
                state.last_sent = Instant::now();
                return Some(Bytes::from_static(KEEP_ALIVE));
            }
        }
    }
}

async fn finish_observer(state: &mut RelayState) -> Option<Bytes> {
    match state.observer.take() {
        Some(observer) => observer.finish().await,
        None => None,
    }
}

fn upstream_error(err: &UpstreamError) -> ApiError {
    match err {
        UpstreamError::Timeout(_) => ApiError::GatewayTimeout,
        UpstreamError::Truncated(_) => ApiError::UpstreamTruncated,
        _ => ApiError::BadGateway,
    }
}

/// The final event of a failed stream. A half-sent event is closed first so the error
/// event stands on its own. The observer is dropped: a failed turn is not stored.
fn finish_with_error(state: &mut RelayState, error: &ApiError) -> Bytes {
    state.finished = true;
    if let Some(events) = state
        .observer
        .take()
        .and_then(|mut observer| observer.error_event(error))
    {
        return events;
    }
    let separator = if state.at_event_boundary { "" } else { "\n\n" };
    Bytes::from(format!("{separator}data: {}\n\n", error.body()))
}

#[cfg(test)]
mod tests {
    use super::DoneScanner;

    fn scan(pieces: &[&[u8]]) -> Vec<Option<usize>> {
        let mut scanner = DoneScanner::new();
        pieces.iter().map(|p| scanner.push(p)).collect()
    }

    #[test]
    fn done_is_found_whole_split_or_at_the_start() {
        assert_eq!(scan(&[b"data: {}\n\ndata: [DONE]\n\n"]), [Some(10)]);
        assert_eq!(scan(&[b"data: [DONE]\n\n"]), [Some(0)]);
        assert_eq!(scan(&[b"data:[DONE]\n\n"]), [Some(0)]);
        assert_eq!(
            scan(&[b"data: {}\n\nda", b"ta: [DO", b"NE]\n\n"]),
            [None, None, Some(0)]
        );
        assert_eq!(
            scan(&[b"data: {}\n\n", b"d", b"a", b"ta: [DONE]"]),
            [None, None, None, Some(0)]
        );
        // Seen once only.
        assert_eq!(
            scan(&[b"data: [DONE]\n\n", b"\ndata: [DONE]"]),
            [Some(0), None]
        );
    }

    #[test]
    fn done_inside_event_data_is_not_the_end() {
        let event = br#"data: {"content":"data: [DONE]"}"#;
        assert_eq!(scan(&[event, b"\n\n"]), [None, None]);
        assert_eq!(scan(&[b"data: {}\n\n", b"xdata: [DONE]"]), [None, None]);
    }
}
