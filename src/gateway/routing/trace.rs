//! What routing tells a request's trace: the GenAI operation and models, one client
//! span per upstream attempt (its name, number, status and outcome; never its URL), the
//! upstreams skipped, and the W3C trace context each attempt sends.

use super::attempt::Attempt;
use crate::telemetry::traces::{self, Kind, RequestTrace, Span};
use crate::upstream::{Candidate, Endpoint, TraceHeaders, UpstreamApi};

/// The attribute saying how an attempt ended: `ok`, `fallback` (it failed and the next
/// upstream was tried) or `failed` (it failed and was the last).
pub const OUTCOME: &str = "gatewayd.upstream.outcome";

/// The longest model name a span carries.
const MAX_MODEL: usize = 256;

/// The GenAI operation an endpoint performs.
pub fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        Endpoint::CountTokens => "count_tokens",
    }
}

/// The provider, as the GenAI conventions name it, by the API the upstream speaks.
fn provider(api: UpstreamApi) -> &'static str {
    match api {
        UpstreamApi::Openai => "openai",
        UpstreamApi::Anthropic => "anthropic",
    }
}

/// Labels the request's span with what the client asked for.
pub fn requested(trace: &RequestTrace, endpoint: Endpoint, model: &str) {
    trace.set("gen_ai.operation.name", operation(endpoint));
    trace.request_model(model);
}

/// Notes an upstream skipped without an attempt (`state`: its breaker is open, or it is full).
pub fn skipped(trace: &RequestTrace, candidate: &Candidate, state: &'static str) {
    trace.event(
        "gatewayd.upstream.skipped",
        vec![
            (
                "gatewayd.upstream.name",
                candidate.upstream.name().to_string().into(),
            ),
            ("gatewayd.upstream.state", state.into()),
        ],
    );
}

/// Traces `attempt` (number `number`, at `candidate`) with a client span when the
/// request is traced, and returns the headers that carry that span upstream.
pub fn attempt(
    trace: Option<&RequestTrace>,
    attempt: &mut Attempt,
    endpoint: Endpoint,
    candidate: &Candidate,
    number: usize,
) -> TraceHeaders {
    let Some(trace) = trace else {
        return TraceHeaders::default();
    };
    let (span, headers) = attempt_span(trace, endpoint, candidate, number);
    attempt.trace(span);
    headers
}

/// The client span of attempt `number` at `candidate`, and the headers that carry it.
fn attempt_span(
    trace: &RequestTrace,
    endpoint: Endpoint,
    candidate: &Candidate,
    number: usize,
) -> (Span, TraceHeaders) {
    let operation = operation(endpoint);
    // Under a `*` pattern the upstream model is the client's own text: bounded.
    let model: String = candidate.upstream_model.chars().take(MAX_MODEL).collect();
    let mut span = trace.child(format!("{operation} {model}"), Kind::Client);
    span.set("gen_ai.operation.name", operation);
    let provider = provider(candidate.upstream.api());
    span.set("gen_ai.provider.name", provider);
    span.set("gen_ai.system", provider);
    span.set("gen_ai.request.model", model);
    span.set(
        "gatewayd.upstream.name",
        candidate.upstream.name().to_string(),
    );
    span.set("gatewayd.upstream.attempt", number as i64);
    let headers = TraceHeaders {
        traceparent: span.ids().map(|ids| traces::traceparent(&ids)),
        tracestate: trace.trace_state().cloned(),
    };
    (span, headers)
}

/// Labels the request's span with the upstream whose answer the client gets.
pub fn answered_by(trace: &RequestTrace, candidate: &Candidate) {
    let provider = provider(candidate.upstream.api());
    trace.set("gen_ai.provider.name", provider);
    trace.set("gen_ai.system", provider);
    trace.set(
        "gatewayd.upstream.name",
        candidate.upstream.name().to_string(),
    );
}
