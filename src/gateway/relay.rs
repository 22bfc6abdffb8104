//! Relays an upstream SSE stream to the client byte for byte, with keep-alives and a clean error end.
//!
//! A stream is complete only when its terminal `data: [DONE]` arrives (unless the upstream
//! is configured with `stream_end = "eof"`). A stream that ends without it was cut short:
//! the client gets an `upstream_truncated` error event, and nothing is stored.
//!
//! What is sent for each chunk, and how a complete stream ends, is the turn's
//! [`StreamTap`]'s to say (the pipeline's settler): the upstream's bytes for chat, another
//! protocol's events for a translated turn, with the same keep-alives, deadlines and
//! error endings either way.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::telemetry::StreamGauge;
use crate::upstream::{ByteStream, UpstreamError};
use crate::wire::error::ApiError;

/// Sent after a quiet period so proxies and clients keep the connection open.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// How long the rest of a complete stream's upstream body is read before the client's
/// response ends anyway.
const DRAIN_AFTER_END: Duration = Duration::from_secs(1);

/// What the relay asks of the turn while it forwards: what to send for each upstream
/// chunk, and how the stream ends. The pipeline's settler is the one implementation.
pub trait StreamTap: Send + 'static {
    /// Reads one upstream chunk: the bytes to send for it, and whether it completed the reply.
    fn chunk(&mut self, bytes: Bytes) -> Flow;
    /// The reply is complete (its final event, or the end of the body for an upstream
    /// whose streams end at EOF): settles the turn, then gives the stream's last bytes.
    fn finish(self: Box<Self>) -> Ending;
    /// The stream failed before it completed: its last bytes, or `None` for the
    /// chat-style `data: {"error":…}` event. Nothing is stored.
    fn failed(self: Box<Self>, error: &ApiError) -> Option<Bytes>;
    /// What to send after a quiet period between events (an SSE comment by default).
    fn keep_alive(&self) -> Bytes {
        Bytes::from_static(KEEP_ALIVE)
    }
    /// The longest quiet period the client's protocol allows, if shorter than the
    /// configured keep-alive interval.
    fn keep_alive_within(&self) -> Option<Duration> {
        None
    }
}

/// The last bytes of a complete stream: known at once when there is nothing to settle.
pub enum Ending {
    Now(Bytes),
    /// After the turn is settled.
    Settled(BoxFuture<'static, Bytes>),
}

/// What to send for one upstream chunk.
pub enum Flow {
    /// Send these bytes (none is fine) and keep reading.
    Send(Bytes),
    /// The reply is complete: send these, then what `finish` returns.
    Complete(Bytes),
}

pub struct RelayOptions {
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
    pub hard_stop: CancellationToken,
    /// A complete stream ends with its final event (chat's `data: [DONE]`), not merely
    /// at the end of the body.
    pub require_done: bool,
}

struct RelayState {
    upstream: ByteStream,
    options: RelayOptions,
    last_upstream_byte: Instant,
    last_sent: Instant,
    at_event_boundary: bool,
    finished: bool,
    tap: Option<Box<dyn StreamTap>>,
    _open: StreamGauge,
}

/// The client-facing body: upstream bytes unchanged, `: keep-alive` comments between
/// events during silences, and a final `data: {"error":…}` event if the upstream fails,
/// goes silent past its idle timeout, or the shutdown grace period ends.
pub fn relay(
    upstream: ByteStream,
    options: RelayOptions,
    tap: Box<dyn StreamTap>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let now = Instant::now();
    let state = RelayState {
        upstream,
        options,
        last_upstream_byte: now,
        last_sent: now,
        at_event_boundary: true,
        finished: false,
        tap: Some(tap),
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
        // Once complete, the rest of the upstream's body is read (so its connection can be
        // reused) only briefly: an upstream that keeps its body open after the end must
        // not hold the client's response open.
        let idle_deadline = match state.tap {
            Some(_) => state.last_upstream_byte + state.options.idle_timeout,
            None => state.last_sent + DRAIN_AFTER_END,
        };
        let keep_alive_at = state.last_sent + state.options.keep_alive;
        tokio::select! {
            biased;
            _ = state.options.hard_stop.cancelled(), if state.tap.is_some() => {
                return Some(finish_with_error(state, &ApiError::Unavailable));
            }
            item = state.upstream.next() => match item {
                Some(Ok(bytes)) => {
                    state.last_upstream_byte = Instant::now();
                    if bytes.is_empty() {
                        continue;
                    }
                    let Some(tap) = state.tap.as_mut() else {
                        // Complete already: read the body to its end, so the upstream
                        // connection goes back to the pool.
                        continue;
                    };
                    let out = match tap.chunk(bytes) {
                        Flow::Send(out) if out.is_empty() => continue,
                        Flow::Send(out) => out,
                        Flow::Complete(before) => {
                            let ending = finish_tap(state).await;
                            match (before.is_empty(), ending.is_empty()) {
                                (true, true) => continue,
                                (false, true) => before,
                                (true, false) => ending,
                                (false, false) => [before, ending].concat().into(),
                            }
                        }
                    };
                    state.last_sent = state.last_upstream_byte;
                    state.at_event_boundary = out.ends_with(b"\n\n") || out.ends_with(b"\r\n\r\n");
                    return Some(out);
                }
                Some(Err(_)) if state.tap.is_none() => return None,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "upstream stream failed");
                    return Some(finish_with_error(state, &upstream_error(&err)));
                }
                None if state.tap.is_none() => return None,
                None if state.options.require_done => {
                    tracing::warn!("upstream stream ended without data: [DONE]; treated as truncated");
                    return Some(finish_with_error(state, &ApiError::UpstreamTruncated));
                }
                None => {
                    state.finished = true;
                    return Some(finish_tap(state).await).filter(|end| !end.is_empty());
                }
            },
            _ = sleep_until(idle_deadline) => {
                // Complete already: the drained body's silence ends it quietly.
                state.tap.as_ref()?;
                tracing::warn!("upstream stream went silent past its idle timeout");
                return Some(finish_with_error(state, &ApiError::GatewayTimeout));
            }
            _ = sleep_until(keep_alive_at), if state.at_event_boundary && state.tap.is_some() => {
                state.last_sent = Instant::now();
                return state.tap.as_ref().map(|tap| tap.keep_alive());
            }
        }
    }
}

async fn finish_tap(state: &mut RelayState) -> Bytes {
    match state.tap.take() {
        Some(tap) => match tap.finish() {
            Ending::Now(bytes) => bytes,
            Ending::Settled(settling) => settling.await,
        },
        None => Bytes::new(),
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
/// event stands on its own. The tap is dropped with its lease: a failed turn is not stored.
fn finish_with_error(state: &mut RelayState, error: &ApiError) -> Bytes {
    state.finished = true;
    let separator = if state.at_event_boundary { "" } else { "\n\n" };
    if let Some(events) = state.tap.take().and_then(|tap| tap.failed(error)) {
        return match separator {
            "" => events,
            _ => [separator.as_bytes(), &events].concat().into(),
        };
    }
    Bytes::from(format!("{separator}data: {}\n\n", error.body()))
}
