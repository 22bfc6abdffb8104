//! The access log (`[telemetry] access_log = true`): one JSON line per finished request,
//! to standard output (so the journal gets it) or to `access_log_file`.
//!
//! A line holds what an operator acts on and nothing a client sent: the route pattern
//! (never the raw path), status, key name, model, upstream name, tokens, timings and the
//! request id. Never content, keys or upstream URLs.
//!
//! Off the request's critical path: the request hands its line to a bounded channel
//! (no lock shared by requests) and one writer thread writes it. When the writer falls
//! behind, lines are dropped and counted (`gatewayd_access_log_dropped_total`) rather
//! than slowing requests. When the log is off, a request pays one branch.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, Method, StatusCode};
use hyper::body::{Frame, SizeHint};
use serde::Serialize;

use super::RequestTiming;
use crate::config::TelemetrySection;

/// Lines waiting for the writer; past this, new lines are dropped and counted.
const QUEUE: usize = 16_384;

static LINES: OnceLock<SyncSender<String>> = OnceLock::new();

/// Opens the access log `section` asks for and starts its writer (once per process).
/// A file that cannot be opened is an error that names it.
pub fn install(section: &TelemetrySection) -> Result<(), String> {
    if !section.access_log || LINES.get().is_some() {
        return Ok(());
    }
    let out: Box<dyn Write + Send> = match &section.access_log_file {
        Some(path) => Box::new(open(path)?),
        None => Box::new(std::io::stdout()),
    };
    let (sender, receiver) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_lines(receiver, out))
        .map_err(|err| format!("cannot start the access log writer: {err}"))?;
    let _ = LINES.set(sender);
    Ok(())
}

fn open(path: &Path) -> Result<std::fs::File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|err| {
            format!(
                "cannot open [telemetry] access_log_file {}: {err}. Create its directory and let gatewayd's user write there, or remove access_log_file to log to standard output",
                path.display()
            )
        })
}

/// The writer thread: each line in one write, flushed whenever the queue is empty.
fn write_lines(lines: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(out);
    while let Ok(line) = lines.recv() {
        let mut next = Some(line);
        while let Some(line) = next {
            if out.write_all(line.as_bytes()).is_err() {
                return;
            }
            next = lines.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
    }
}

/// Whether requests write access log lines.
pub fn enabled() -> bool {
    LINES.get().is_some()
}

/// What the edge knows of a request when it starts.
pub struct Started {
    pub at: SystemTime,
    pub clock: Instant,
    pub method: Method,
    pub request_id: HeaderValue,
}

/// One line of the access log.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    method: &'a str,
    route: Option<&'a str>,
    status: u16,
    key: Option<&'a str>,
    model: Option<&'a str>,
    upstream: Option<&'a str>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    duration_ms: f64,
    ttfb_ms: Option<f64>,
    /// False when the client left (or the stream failed) before the body's end.
    complete: bool,
}

/// Wraps a response body so its line is written when the body ends (or is dropped):
/// the duration then covers a whole stream, and the tokens its end reported.
pub fn wrap(body: Body, started: Started, status: StatusCode, timing: Arc<RequestTiming>) -> Body {
    Body::new(LoggedBody {
        inner: body,
        pending: Some(Pending {
            started,
            status,
            timing,
            first_byte: None,
            complete: false,
        }),
    })
}

struct Pending {
    started: Started,
    status: StatusCode,
    timing: Arc<RequestTiming>,
    first_byte: Option<Instant>,
    complete: bool,
}

impl Pending {
    fn write(self) {
        let Some(lines) = LINES.get() else {
            return;
        };
        let millis = |at: Instant| (at - self.started.clock).as_secs_f64() * 1000.0;
        let timing = &self.timing;
        let tokens = timing.tokens.get();
        let line = Line {
            time: crate::wire::time::rfc3339_millis(self.started.at),
            request_id: self.started.request_id.to_str().unwrap_or("-"),
            method: self.started.method.as_str(),
            route: timing.route.get().map(|route| route.as_str()),
            status: self.status.as_u16(),
            key: timing.caller.get().map(|name| name.as_ref()),
            model: timing
                .requested_model
                .get()
                .or(timing.model.get())
                .map(|model| model.as_ref()),
            upstream: timing.upstream.get().map(|name| name.as_ref()),
            input_tokens: tokens.map(|t| t.0),
            output_tokens: tokens.map(|t| t.1),
            duration_ms: round(millis(Instant::now())),
            ttfb_ms: self.first_byte.map(millis).map(round),
            complete: self.complete,
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        match lines.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics::counter!(super::ACCESS_LOG_DROPPED).increment(1);
            }
        }
    }
}

/// Milliseconds to three decimals (microseconds), so lines stay short.
fn round(millis: f64) -> f64 {
    (millis * 1000.0).round() / 1000.0
}

struct LoggedBody {
    inner: Body,
    pending: Option<Pending>,
}

// `Body` is `Unpin` and `pending` is never pinned, so plain `&mut` access is sound.
impl Unpin for LoggedBody {}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let data = frame.data_ref().is_some_and(|d| !d.is_empty());
                let ended = self.inner.is_end_stream();
                if let Some(pending) = self.pending.as_mut() {
                    if data && pending.first_byte.is_none() {
                        pending.first_byte = Some(Instant::now());
                    }
                }
                if ended {
                    if let Some(mut pending) = self.pending.take() {
                        pending.complete = true;
                        pending.write();
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(mut pending) = self.pending.take() {
                    pending.complete = true;
                    pending.write();
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(mut pending) = self.pending.take() {
            // A body hyper never polled to its end: empty (HEAD, 204) or abandoned.
            pending.complete = self.inner.is_end_stream();
            pending.write();
        }
    }
}
