//! Per-connection deadlines: a connection that is silent, sends its headers too slowly,
//! idles between requests, or stops accepting response bytes is closed.
//!
//! hyper's own header timeout starts only once hyper reads a request head (not while the
//! auto builder is still sniffing HTTP/1 vs HTTP/2) and it also cuts idle keep-alive
//! connections at the header timeout. So the gateway keeps the clock itself:
//! - no request in flight and no byte since the last one: closed after
//!   `header_read_timeout_secs` on a fresh connection, `keepalive_idle_secs` after a
//!   request; never later than `unauthenticated_idle_secs` until a request has passed auth;
//! - bytes of a request arrived but no complete head: closed `header_read_timeout_secs`
//!   after the first byte (slowloris);
//! - a write to the client blocked (it reads nothing) for `send_timeout_secs`: closed,
//!   request in flight or not. Dropping the connection drops the response body, which
//!   cancels the upstream request and any session recording (nothing is stored);
//! - otherwise a request in flight (including a streamed response body) is never closed here.
//!
//! When slots run low, `relief` may also ask an idle connection to give way; the
//! connection's own task then checks it is still idle before closing (see `Ending`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
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
    /// Milliseconds since `start` when a write to the client first found no room, with
    /// no byte accepted since; `NEVER` while writes go through.
    write_blocked: AtomicU64,
    /// A request on this connection has passed the auth boundary.
    authenticated: AtomicBool,
    /// Why slot relief asked this connection to close (a `GiveWay` as u8); 0 if it did not.
    give_way: AtomicU8,
    changed: Notify,
}

/// Why slot relief asks an idle connection to close; also the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveWay {
    /// Never passed auth: among the oldest such connections while slots are short.
    Unauthenticated = 1,
    /// Never passed auth and silent past the timeout shortened under pressure.
    UnauthenticatedTimeout = 2,
    /// Passed auth, idle between requests, and no unauthenticated connection was left.
    IdleKeepalive = 3,
}

impl GiveWay {
    pub fn label(self) -> &'static str {
        match self {
            GiveWay::Unauthenticated => "unauthenticated",
            GiveWay::UnauthenticatedTimeout => "unauthenticated_timeout",
            GiveWay::IdleKeepalive => "idle_keepalive",
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(GiveWay::Unauthenticated),
            2 => Some(GiveWay::UnauthenticatedTimeout),
            3 => Some(GiveWay::IdleKeepalive),
            _ => None,
        }
    }
}

/// Why [`Activity::expired`] resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// A deadline passed: the connection is dropped.
    Overstayed,
    /// Slot relief asked it to close. It was idle when asked; the connection's task
    /// checks [`Activity::is_idle`] again before closing, since a request may have begun.
    GiveWay(GiveWay),
}

/// What slot relief sees of a connection.
#[derive(Clone, Copy, Debug)]
pub enum Standing {
    /// A request in flight, or bytes of a request head (or TLS handshake) arriving.
    Busy,
    /// Nothing in flight and no byte since `since` (the accept, or the last response).
    Idle { authenticated: bool, since: Instant },
}

/// The connection timeouts, from `[limits]`.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_read: Duration,
    pub keepalive_idle: Duration,
    pub unauthenticated_idle: Duration,
    pub send: Duration,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NEVER),
            write_blocked: AtomicU64::new(NEVER),
            authenticated: AtomicBool::new(false),
            give_way: AtomicU8::new(0),
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

    /// The TLS handshake is done. Its bytes were not a request's: unless a request's first
    /// bytes came with it (`request_begun`), the connection is silent from now on.
    pub fn handshake_done(&self, request_begun: bool) {
        if !request_begun {
            self.idle_since.store(self.now_ms(), Ordering::Relaxed);
            self.first_byte.store(NEVER, Ordering::Relaxed);
        }
    }

    /// A request on this connection passed auth: it gets the normal keep-alive timeout.
    pub fn mark_authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }

    /// Nothing in flight and no byte of a next request (or handshake) has arrived:
    /// closing the connection loses nothing.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.first_byte.load(Ordering::Relaxed) == NEVER
    }

    /// Whether slot relief may ask this connection to close, and since when it is silent.
    pub fn standing(&self) -> Standing {
        if !self.is_idle() {
            return Standing::Busy;
        }
        Standing::Idle {
            authenticated: self.authenticated.load(Ordering::Relaxed),
            since: self.start + Duration::from_millis(self.idle_since.load(Ordering::Relaxed)),
        }
    }

    /// Asks the connection to close; false if it was already asked.
    pub fn ask_to_give_way(&self, why: GiveWay) -> bool {
        let asked = self
            .give_way
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if asked {
            self.changed.notify_one();
        }
        asked
    }

    pub fn was_asked_to_give_way(&self) -> bool {
        self.give_way.load(Ordering::Acquire) != 0
    }

    /// Withdraws a request to give way; true if there was one.
    pub fn clear_give_way(&self) -> bool {
        self.give_way.swap(0, Ordering::AcqRel) != 0
    }

    fn write_blocked(&self) {
        if self.write_blocked.load(Ordering::Relaxed) == NEVER {
            self.write_blocked.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn write_progressed(&self) {
        if self.write_blocked.load(Ordering::Relaxed) != NEVER {
            self.write_blocked.store(NEVER, Ordering::Relaxed);
        }
    }

    /// When the connection must be closed, or `None` while a request is in flight and
    /// the client accepts what it is sent.
    fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        let at = |from: u64, allowed: Duration| self.start + Duration::from_millis(from) + allowed;
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        let unread = (blocked != NEVER).then(|| at(blocked, timeouts.send));
        let idle = self
            .idle_deadline(timeouts)
            .map(|(from, allowed)| at(from, allowed));
        match (unread, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn idle_deadline(&self, timeouts: Timeouts) -> Option<(u64, Duration)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let anonymous = !self.authenticated.load(Ordering::Relaxed);
        let shorten = |allowed: Duration| match anonymous {
            true => allowed.min(timeouts.unauthenticated_idle),
            false => allowed,
        };
        let first_byte = self.first_byte.load(Ordering::Relaxed);
        Some(if first_byte != NEVER {
            (first_byte, timeouts.header_read)
        } else if self.served.load(Ordering::Relaxed) == 0 {
            (0, shorten(timeouts.header_read))
        } else {
            (
                self.idle_since.load(Ordering::Relaxed),
                shorten(timeouts.keepalive_idle),
            )
        })
    }

    /// Resolves when the connection has overstayed (the caller then drops it) or has been
    /// asked to give way (the caller checks it is still idle first).
    pub async fn expired(&self, timeouts: Timeouts) -> Ending {
        loop {
            if let Some(why) = GiveWay::from_u8(self.give_way.load(Ordering::Acquire)) {
                return Ending::GiveWay(why);
            }
            match self.deadline(timeouts) {
                None => self.changed.notified().await,
                Some(at) if at <= Instant::now() => return Ending::Overstayed,
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

impl<S> Tracked<S> {
    /// A write that found no room starts the send clock; one that went through stops it.
    fn saw_write(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.write_progressed(),
            _ => {}
        }
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
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.saw_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.saw_write(&polled);
        polled
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
