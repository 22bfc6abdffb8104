//! Per-connection deadlines: a connection that is silent, sends its headers too slowly,
//! or idles between requests is closed.
//!
//! hyper's own header timeout starts only once hyper reads a request head (not while the
//! auto builder is still sniffing HTTP/1 vs HTTP/2) and it also cuts idle keep-alive
//! connections at the header timeout. So the gateway keeps the clock itself:
//! - no request in flight and no byte since the last one: closed after
//!   `header_read_timeout_secs` on a fresh connection, `keepalive_idle_secs` after a request;
//! - bytes of a request arrived but no complete head: closed `header_read_timeout_secs`
//!   after the first byte (slowloris);
//! - a request in flight (including a streamed response body): never closed here.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

const NEVER: u64 = u64::MAX;

/// What one connection is doing, shared by its IO, its requests and its watchdog.
pub struct Activity {
    start: Instant,
    /// Requests whose response has not fully been sent.
    in_flight: AtomicUsize,
    /// Requests seen so far (0 = the connection is still waiting for its first).
    served: AtomicUsize,
    /// Milliseconds since `start` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds since `start` of the first byte read while idle; `NEVER` if none.
    first_byte: AtomicU64,
    changed: Notify,
}

/// The two timeouts, from `[limits]`.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_read: Duration,
    pub keepalive_idle: Duration,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NEVER),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Marks a request head as received; the returned guard marks its end when dropped
    /// (put it in the response body so a stream counts until its last byte).
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.first_byte.store(NEVER, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn saw_bytes(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.first_byte.load(Ordering::Relaxed) == NEVER
        {
            self.first_byte.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// When the connection must be closed, or `None` while a request is in flight.
    fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let first_byte = self.first_byte.load(Ordering::Relaxed);
        let (from, allowed) = if first_byte != NEVER {
            (first_byte, timeouts.header_read)
        } else if self.served.load(Ordering::Relaxed) == 0 {
            (0, timeouts.header_read)
        } else {
            (
                self.idle_since.load(Ordering::Relaxed),
                timeouts.keepalive_idle,
            )
        };
        Some(self.start + Duration::from_millis(from) + allowed)
    }

    /// Resolves when the connection has overstayed; the caller then drops it.
    pub async fn expired(&self, timeouts: Timeouts) {
        loop {
            match self.deadline(timeouts) {
                None => self.changed.notified().await,
                Some(at) if at <= Instant::now() => return,
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// One request in flight; dropping it starts the idle clock when it was the last.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.first_byte.store(NEVER, Ordering::Relaxed);
        activity
            .idle_since
            .store(activity.now_ms(), Ordering::Relaxed);
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.changed.notify_one();
        }
    }
}

/// The connection's IO, reporting reads to its [`Activity`].
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.saw_bytes();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
