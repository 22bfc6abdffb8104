//! Relays an upstream SSE stream to the client byte for byte, with keep-alives and a clean error end.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::telemetry::StreamGauge;
use crate::upstream::{ByteStream, UpstreamError};

/// Sent after a quiet period so proxies and clients keep the connection open.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Watches the relayed bytes, e.g. to assemble a reply for a session.
pub trait StreamObserver: Send + 'static {
    /// Called with each chunk before it is forwarded. Returns true when the chunk ends the
    /// reply (`data: [DONE]`): `finish` then runs before that chunk is forwarded.
    fn chunk(&mut self, bytes: &Bytes) -> bool;
    /// Called once when the reply is complete, before the client sees its end. May return
    /// an event to send first (e.g. an error event if the turn could not be stored).
    /// Never called for a failed or abandoned stream: the observer is just dropped.
    fn finish(self: Box<Self>) -> futures_util::future::BoxFuture<'static, Option<Bytes>>;
}

pub struct RelayOptions {
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
    pub hard_stop: CancellationToken,
}

struct RelayState {
    upstream: ByteStream,
    options: RelayOptions,
    last_upstream_byte: Instant,
    last_sent: Instant,
    at_event_boundary: bool,
    finished: bool,
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
                    let ends_reply = state.observer.as_mut().is_some_and(|o| o.chunk(&bytes));
                    if ends_reply {
                        if let Some(prefix) = finish_observer(state).await {
                            return Some([prefix, bytes].concat().into());
                        }
                    }
                    return Some(bytes);
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "upstream stream failed");
                    return Some(finish_with_error(state, &upstream_error(&err)));
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
    if err.is_timeout() {
        ApiError::GatewayTimeout
    } else {
        ApiError::BadGateway
    }
}

/// The final event of a failed stream. A half-sent event is closed first so the error
/// event stands on its own. The observer is dropped: a failed turn is not stored.
fn finish_with_error(state: &mut RelayState, error: &ApiError) -> Bytes {
    state.finished = true;
    state.observer = None;
    let separator = if state.at_event_boundary { "" } else { "\n\n" };
    Bytes::from(format!("{separator}data: {}\n\n", error.body()))
}
