//! One attempt at one upstream: the place it takes in the upstream's health (claimed
//! before sending, given back when its answer ends), the verdict the answer gives the
//! breaker, and the one log line of each change of state.

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use futures_util::StreamExt;

use super::retry_after::retry_after_ms;
use crate::telemetry;
use crate::telemetry::traces::Span;
use crate::upstream::health::{clock, Claim, Health, Transition};
use crate::upstream::{Candidate, UpstreamError, UpstreamResponse};

/// A request's place at one upstream. Dropping it gives the place back, and a trial it
/// held but never judged is handed to the next request.
pub struct Attempt {
    health: Arc<Health>,
    trial: bool,
    judged: bool,
    started: Instant,
    /// Its client span when traces are on: it ends with the attempt (a stream's with
    /// its body).
    span: Option<Span>,
}

/// The upstreams a request skipped, and how soon the first of them may be tried.
#[derive(Default)]
pub struct Skipped {
    soonest_ms: Option<u64>,
    /// Why the last one was skipped: "open" or "full".
    last: &'static str,
}

impl Skipped {
    fn note(&mut self, left_ms: u64, why: &'static str) {
        self.soonest_ms = Some(self.soonest_ms.map_or(left_ms, |s| s.min(left_ms)));
        self.last = why;
    }

    /// Why the last upstream was skipped: its breaker is "open", or it is "full".
    pub fn last_reason(&self) -> &'static str {
        self.last
    }

    /// Whole seconds until an upstream may be tried again (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.soonest_ms.unwrap_or(0).div_ceil(1000).max(1)
    }
}

/// A place at `candidate`, unless it is open or at its `max_in_flight` (then noted in
/// `skipped`, and no attempt is made).
pub fn claim(candidate: &Candidate, skipped: &mut Skipped) -> Option<Attempt> {
    let max_in_flight = candidate.placement.max_in_flight;
    match candidate.health.claim(max_in_flight, clock::now_ms()) {
        Claim::Go { trial } => Some(Attempt {
            health: candidate.health.clone(),
            trial,
            judged: false,
            started: Instant::now(),
            span: None,
        }),
        Claim::Open { left_ms } => {
            skipped.note(left_ms, "open");
            None
        }
        Claim::Full => {
            skipped.note(0, "full");
            None
        }
    }
}

impl Attempt {
    /// Judges what the upstream sent for its health, and returns why it counts as a
    /// failure (the retry's reason), if it does: connect errors, broken or timed-out
    /// exchanges, 429 and 5xx. The time to the answer's head feeds its latency.
    pub fn judge(
        &mut self,
        sent: &Result<UpstreamResponse, UpstreamError>,
    ) -> Option<&'static str> {
        self.judged = true;
        let now = clock::now_ms();
        let (failure, retry_after) = match sent {
            Ok(response) => {
                let seconds = self.started.elapsed().as_secs_f64();
                self.health.latency.observe(seconds, clock::now_ns());
                let status = response.status;
                let waits = status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::SERVICE_UNAVAILABLE;
                let retry_after = waits.then(|| retry_after_ms(&response.headers)).flatten();
                match status {
                    StatusCode::TOO_MANY_REQUESTS => (Some("rate_limited"), retry_after),
                    s if s.is_server_error() => (Some("server_error"), retry_after),
                    _ => (None, None),
                }
            }
            Err(UpstreamError::Connect(..)) => (Some("connect_error"), None),
            Err(UpstreamError::Timeout(_)) => (Some("timeout"), None),
            Err(UpstreamError::Broken(..)) => (Some("broken_response"), None),
            Err(UpstreamError::Config(..) | UpstreamError::Truncated(_)) => {
                // Says nothing about the upstream's health; the next one is tried.
                self.health.released(self.trial, now);
                if let Some(span) = &mut self.span {
                    span.fail("not_served");
                }
                return Some("not_served");
            }
        };
        let transition = match failure {
            None => self.health.succeeded(self.trial),
            Some(_) => self.health.failed(self.trial, retry_after, now),
        };
        if let Some(span) = &mut self.span {
            if let Ok(response) = sent {
                span.set(
                    "http.response.status_code",
                    i64::from(response.status.as_u16()),
                );
            }
            if let Some(failure) = failure {
                span.fail(failure);
            }
            if let Some(Transition::Opened { .. }) = transition {
                span.set("gatewayd.upstream.breaker", "opened");
            }
        }
        if let Some(transition) = transition {
            announce(self.health.name(), transition);
        }
        failure
    }

    /// Traces this attempt with `span`.
    pub fn trace(&mut self, span: Span) {
        self.span = Some(span);
    }

    /// The attempt's span, taken to be ended by the caller, which knows what followed.
    pub fn take_span(&mut self) -> Option<Span> {
        self.span.take()
    }

    /// Sets an attribute of the attempt's span, if it has one.
    pub fn note(&mut self, key: &'static str, value: &'static str) {
        if let Some(span) = &mut self.span {
            span.set(key, value);
        }
    }

    /// The answer with this place held until its body ends (streams count as in flight
    /// while they flow).
    pub fn hold_through(self, mut response: UpstreamResponse) -> UpstreamResponse {
        let held = self;
        response.body = response
            .body
            .map(move |chunk| {
                let _ = &held;
                chunk
            })
            .boxed();
        response
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.judged {
            self.health.released(self.trial, clock::now_ms());
        }
        self.health.leave();
    }
}

/// The one log line (and count) of an upstream opening or closing.
pub fn announce(upstream: &str, transition: Transition) {
    match transition {
        Transition::Opened { cause, for_ms } => {
            telemetry::count_upstream_opened(upstream);
            tracing::warn!(
                upstream,
                cause = cause.as_str(),
                open_for_secs = for_ms.div_ceil(1000),
                "upstream opened: requests skip it until it is tried again"
            );
        }
        Transition::Closed => {
            tracing::info!(upstream, "upstream closed: it serves requests again");
        }
    }
}
