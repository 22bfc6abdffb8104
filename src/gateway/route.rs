//! Sends one request to the upstreams that serve its model, in its pool's order with
//! fallback, skipping open upstreams, and shapes the answer.

use std::time::Instant;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::routing::trace::OUTCOME;
use super::routing::{self, Attempt, Skipped};
use super::state::Gateway;
use crate::gateway::relay::{relay, RelayOptions, StreamTap};
use crate::telemetry;
use crate::telemetry::traces::{self, Span};
use crate::upstream::health::clock;
use crate::upstream::{Candidate, StoredResponseCall, Upstream, UpstreamError};
use crate::upstream::{UpstreamRequest, UpstreamResponse};
use crate::wire::error::ApiError;
use crate::wire::openai::{ChatRequest, Endpoint};

/// Largest non-streaming upstream body gatewayd will hold (embeddings can be large).
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;

/// What the upstreams answered.
pub enum Answer {
    /// A complete, non-streaming body with the upstream's status.
    Complete {
        status: StatusCode,
        /// Every upstream header the client sees, Content-Type included (filtered by
        /// `upstream::headers::response`). The field keeps its first name so callers that
        /// only move it along need no change; rename it to `headers` with them.
        content_type: HeaderMap,
        body: Bytes,
    },
    /// A successful event stream, still flowing.
    Stream(UpstreamResponse),
}

/// Sends the request to the upstreams serving the model, in the order its pool's
/// strategy gives, up to `max_attempts`. Open upstreams (and those at their
/// `max_in_flight`) are skipped without an attempt; when every one is, the answer is an
/// immediate 503 with `Retry-After`. Connect errors, 429 and 5xx move on to the next while
/// the pool's retry budget allows; timeouts do not (the upstream may already be working
/// on it). Nothing has reached the client yet, so retrying is safe.
pub async fn forward(
    gateway: &Gateway,
    endpoint: Endpoint,
    request: &ChatRequest,
    history: Option<&[u8]>,
) -> Result<Answer, ApiError> {
    let candidates = gateway.upstreams.candidates(&request.model);
    let (answer, _) = forward_to(gateway, endpoint, request, history, candidates).await?;
    Ok(answer)
}

/// What failed last, kept until the request knows whether another upstream will try.
enum Failed {
    /// No answer (connect error, broken exchange, an endpoint it does not serve).
    Error(&'static str),
    /// The upstream's own refusal (429, 5xx): the client's answer if nothing follows.
    Refused {
        response: UpstreamResponse,
        upstream: String,
        reason: &'static str,
    },
}

impl Failed {
    fn reason(&self) -> &'static str {
        match self {
            Failed::Error(reason) | Failed::Refused { reason, .. } => reason,
        }
    }
}

/// [`forward`] over the given candidates; also says which upstream answered.
pub async fn forward_to(
    gateway: &Gateway,
    endpoint: Endpoint,
    request: &ChatRequest,
    history: Option<&[u8]>,
    candidates: Vec<Candidate>,
) -> Result<(Answer, String), ApiError> {
    telemetry::record_requested_model(&request.model);
    let Some(first) = candidates.first() else {
        return Err(ApiError::NotFound {
            message: format!(
                "The model '{}' does not exist or is not served by this gateway.",
                truncate(&request.model, 128)
            ),
            code: Some("model_not_found"),
        });
    };
    let (strategy, pool) = gateway.upstreams.strategy(&request.model, &first.label);
    let order = routing::attempt_order(candidates, strategy, &pool);
    let max_attempts = gateway.config.max_attempts as usize;
    let mut made = 0;
    let mut skipped = Skipped::default();
    let mut failed: Option<Failed> = None;
    let total = order.len();
    let trace = traces::current();
    if let Some(trace) = &trace {
        routing::trace::requested(trace, endpoint, &request.model);
    }
    // The span of the attempt that failed last: its outcome is known once the next starts.
    let mut failed_span: Option<Span> = None;
    for (index, candidate) in order.into_iter().enumerate() {
        if made == max_attempts {
            break;
        }
        let Some(mut attempt) = routing::claim(&candidate, &mut skipped) else {
            if let Some(trace) = &trace {
                routing::trace::skipped(trace, &candidate, skipped.last_reason());
            }
            continue;
        };
        let now = clock::now_ms();
        match &failed {
            None => pool.first_attempt(now),
            Some(previous) => {
                if !pool.try_retry(now) {
                    telemetry::count_retry_refused();
                    tracing::warn!(model = %candidate.label, "retry budget spent; not retrying");
                    break;
                }
                telemetry::count_retry(previous.reason());
            }
        }
        made += 1;
        if let Some(mut span) = failed_span.take() {
            span.set(OUTCOME, "fallback");
        }
        let trace_headers =
            routing::trace::attempt(trace.as_ref(), &mut attempt, endpoint, &candidate, made);
        let body = request.forward_body(Some(&candidate.upstream_model), history);
        let upstream = candidate.upstream.name().to_string();
        telemetry::record_model(&candidate.label);
        let started = Instant::now();
        let sent = candidate
            .upstream
            .send(UpstreamRequest {
                endpoint,
                body,
                client_headers: request.client_headers.clone(),
                trace: trace_headers,
            })
            .await;
        telemetry::record_upstream(started, &upstream);
        let failure = attempt.judge(&sent);
        let response = match sent {
            Ok(response) => response,
            Err(err @ UpstreamError::Timeout(_)) => {
                tracing::warn!(%upstream, error = %err, "upstream timed out");
                attempt.note(OUTCOME, "failed");
                return Err(ApiError::GatewayTimeout);
            }
            Err(err) => {
                if index + 1 == total || made == max_attempts {
                    tracing::warn!(%upstream, error = %err, "upstream failed");
                } else {
                    tracing::warn!(%upstream, error = %err, "upstream failed; trying the next one");
                }
                failed = Some(Failed::Error(failure.unwrap_or("broken_response")));
                failed_span = attempt.take_span();
                continue;
            }
        };
        if let Some(reason) = failure {
            tracing::warn!(%upstream, status = %response.status, "upstream refused the request");
            failed = Some(Failed::Refused {
                response,
                upstream,
                reason,
            });
            failed_span = attempt.take_span();
            continue;
        }
        if let Some(trace) = &trace {
            routing::trace::answered_by(trace, &candidate);
        }
        attempt.note(OUTCOME, "ok");
        return finish(endpoint, request, response, attempt, upstream).await;
    }
    if let Some(mut span) = failed_span {
        span.set(OUTCOME, "failed");
    }
    match failed {
        None => Err(ApiError::UpstreamUnavailable {
            retry_after_secs: skipped.retry_after_secs(),
        }),
        Some(Failed::Error(_)) => Err(ApiError::BadGateway),
        Some(Failed::Refused {
            response, upstream, ..
        }) => finish(endpoint, request, response, None, upstream).await,
    }
}

/// The answer the client gets from the upstream's response. `attempt` (if still held)
/// stays with a stream until it ends. A 429 passes on; a 5xx becomes a generic 502,
/// except Anthropic's own error bodies (529 overloaded, …), which reach Anthropic clients
/// as they are.
async fn finish(
    endpoint: Endpoint,
    request: &ChatRequest,
    response: UpstreamResponse,
    attempt: impl Into<Option<Attempt>>,
    upstream: String,
) -> Result<(Answer, String), ApiError> {
    let attempt = attempt.into();
    telemetry::record_answered_by(&upstream);
    let status = response.status;
    if status.is_server_error() && !endpoint.is_anthropic() {
        return Err(ApiError::BadGateway);
    }
    refuse_credential_errors(status, &upstream)?;
    let is_event_stream = response
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if request.stream && status.is_success() && is_event_stream {
        let response = match attempt {
            Some(attempt) => attempt.hold_through(response),
            None => response,
        };
        return Ok((Answer::Stream(response), upstream));
    }
    let started = Instant::now();
    let collected = collect(response).await;
    drop(attempt);
    telemetry::record_upstream(started, &upstream);
    if status.is_server_error() && !is_anthropic_error(&collected) {
        // Anything else (a proxy's HTML page, …) says nothing a client can use.
        return Err(ApiError::BadGateway);
    }
    collected.map(|answer| (answer, upstream))
}

/// An Anthropic error body (`{"type":"error","error":{…}}`), which passes to the client
/// unchanged.
fn is_anthropic_error(answer: &Result<Answer, ApiError>) -> bool {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "type")]
        kind: String,
        error: serde_json::Map<String, serde_json::Value>,
    }
    match answer {
        Ok(Answer::Complete { body, .. }) => serde_json::from_slice::<Shape>(body)
            .is_ok_and(|shape| shape.kind == "error" && !shape.error.is_empty()),
        _ => false,
    }
}

/// The upstream rejected *our* credentials: a gateway misconfiguration, and its message
/// may quote part of the upstream key. Never pass it on.
fn refuse_credential_errors(status: StatusCode, upstream: &str) -> Result<(), ApiError> {
    if matches!(status.as_u16(), 401 | 403 | 407) {
        tracing::error!(%upstream, %status, "upstream rejected the gateway's credentials");
        return Err(ApiError::BadGateway);
    }
    Ok(())
}

/// One read or delete of a response a native upstream stores, answered whole. No
/// fallback: only the upstream that created the response has it.
pub async fn stored_response(
    upstream: &dyn Upstream,
    call: StoredResponseCall,
) -> Result<Answer, ApiError> {
    let name = upstream.name().to_string();
    telemetry::record_answered_by(&name);
    let started = Instant::now();
    let sent = upstream.stored_response(call).await;
    let response = sent.map_err(|err| {
        tracing::warn!(upstream = %name, error = %err, "upstream failed");
        match err {
            UpstreamError::Timeout(_) => ApiError::GatewayTimeout,
            _ => ApiError::BadGateway,
        }
    })?;
    refuse_credential_errors(response.status, &name)?;
    if response.status.is_server_error() {
        tracing::warn!(upstream = %name, status = %response.status, "upstream refused the request");
        return Err(ApiError::BadGateway);
    }
    let collected = collect(response).await;
    telemetry::record_upstream(started, &name);
    collected
}

async fn collect(response: UpstreamResponse) -> Result<Answer, ApiError> {
    let mut body = BytesMut::new();
    let mut stream = response.body;
    loop {
        let next = tokio::time::timeout(response.idle_timeout, stream.next()).await;
        match next {
            Err(_) => return Err(ApiError::GatewayTimeout),
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                tracing::warn!(error = %err, "upstream body failed");
                return Err(ApiError::BadGateway);
            }
            Ok(Some(Ok(chunk))) => {
                if body.len() + chunk.len() > MAX_UPSTREAM_BODY {
                    return Err(ApiError::BadGateway);
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
    // A success whose body is not JSON was cut short or mangled on the way: never pass
    // it on (or store it) as an answer. A body cut short of its Content-Length already
    // failed above, as a broken body.
    if response.status.is_success()
        && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err()
    {
        tracing::warn!(status = %response.status, "upstream success body is not valid JSON");
        return Err(ApiError::BadGateway);
    }
    Ok(Answer::Complete {
        status: response.status,
        content_type: response.headers,
        body: body.freeze(),
    })
}

/// A whole answer as the client's response, with the upstream's status and headers.
/// (A stream is answered by [`respond_stream`].)
pub fn respond(answer: Answer) -> Response {
    match answer {
        Answer::Complete {
            status,
            content_type: mut headers,
            body,
        } => {
            let json = HeaderValue::from_static("application/json");
            headers.entry(header::CONTENT_TYPE).or_insert(json);
            // The upstream's map becomes the response's own: no second map to copy into.
            let mut response = Response::new(axum::body::Body::from(body));
            (*response.status_mut(), *response.headers_mut()) = (status, headers);
            response
        }
        Answer::Stream(upstream) => {
            // Only reached by callers that asked for no stream; never by a turn.
            tracing::warn!("a streamed answer reached a whole-answer path");
            let _ = upstream;
            ApiError::BadGateway.into_response()
        }
    }
}

/// An event stream, relayed to the client as it arrives through the turn's tap.
pub fn respond_stream(
    gateway: &Gateway,
    upstream: UpstreamResponse,
    tap: Box<dyn StreamTap>,
) -> Response {
    let options = RelayOptions {
        idle_timeout: upstream.idle_timeout,
        keep_alive: tap
            .keep_alive_within()
            .map_or(gateway.config.stream_keepalive, |within| {
                within.min(gateway.config.stream_keepalive)
            }),
        hard_stop: gateway.hard_stop.clone(),
        require_done: upstream.require_done,
    };
    let body = axum::body::Body::from_stream(relay(upstream.body, options, tap));
    (
        StatusCode::OK,
        upstream.headers,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-store"),
            ),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response()
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
