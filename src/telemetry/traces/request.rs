//! A request's server span: started at the edge (continuing a trusted client's trace or
//! starting a new one), filled in by the gateway as the turn runs, and exported when the
//! request is over — after its response body, so a stream's end and commit fall inside.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Method};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::export;
use super::ids::{new_span_id, new_trace_id, parse_traceparent, SpanIds};
use super::record::{now_ns, set, Attributes, Event, Kind, Record, Value};
use super::span::Span;

/// The longest model name an attribute carries (client input, so bounded).
const MAX_MODEL: usize = 256;
/// The most finish reasons and skip events one request records.
const MAX_LIST: usize = 16;

/// The current request's server span; cloning shares it. It is exported when the last
/// clone is dropped.
#[derive(Clone)]
pub struct RequestTrace(Arc<ServerSpan>);

struct ServerSpan {
    ids: SpanIds,
    parent: Option<[u8; 8]>,
    trace_state: Option<HeaderValue>,
    method: Method,
    start_ns: u64,
    fields: Mutex<Fields>,
}

#[derive(Default)]
struct Fields {
    route: Option<String>,
    status: u16,
    attributes: Attributes,
    finish_reasons: Vec<String>,
    events: Vec<Event>,
}

tokio::task_local! {
    static CURRENT: RequestTrace;
}

/// Starts a request's server span, if traces are on. A `traceparent` is believed only
/// from a trusted proxy (`trusted_peer`); otherwise the request starts a trace of its own.
pub fn start(
    method: &Method,
    headers: &HeaderMap,
    trusted_peer: impl FnOnce() -> bool,
) -> Option<RequestTrace> {
    if !export::enabled() {
        return None;
    }
    let inbound = headers
        .get("traceparent")
        .filter(|_| trusted_peer())
        .and_then(|value| parse_traceparent(value.as_bytes()));
    let (trace_id, parent, trace_state) = match inbound {
        Some((parent, _sampled)) => (
            parent.trace_id,
            Some(parent.span_id),
            headers.get("tracestate").cloned(),
        ),
        None => (new_trace_id(), None, None),
    };
    Some(RequestTrace(Arc::new(ServerSpan {
        ids: SpanIds {
            trace_id,
            span_id: new_span_id(),
        },
        parent,
        trace_state,
        method: method.clone(),
        start_ns: now_ns(),
        fields: Mutex::new(Fields::default()),
    })))
}

/// The trace of the request being handled here, if traces are on and there is one.
pub fn current() -> Option<RequestTrace> {
    if !export::enabled() {
        return None;
    }
    CURRENT.try_with(RequestTrace::clone).ok()
}

/// Runs `future` with `trace` as the current request's trace.
pub async fn scope<F: std::future::Future>(trace: RequestTrace, future: F) -> F::Output {
    CURRENT.scope(trace, future).await
}

impl RequestTrace {
    /// The server span's ids: the parent of the spans below it.
    pub fn ids(&self) -> SpanIds {
        self.0.ids
    }

    /// The client's `tracestate`, passed on with the trace it belongs to.
    pub fn trace_state(&self) -> Option<&HeaderValue> {
        self.0.trace_state.as_ref()
    }

    /// A span below the server span, starting now.
    pub fn child(&self, name: String, kind: Kind) -> Span {
        Span::child_of(self.0.ids, name, kind)
    }

    fn with(&self, change: impl FnOnce(&mut Fields)) {
        if let Ok(mut fields) = self.0.fields.lock() {
            change(&mut fields);
        }
    }

    /// Sets one attribute of the server span.
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        let value = value.into();
        self.with(|fields| set(&mut fields.attributes, key, value));
    }

    /// The model the client asked for (bounded: it is client input).
    pub fn request_model(&self, model: &str) {
        let model = match model.char_indices().nth(MAX_MODEL) {
            Some((end, _)) => &model[..end],
            None => model,
        };
        self.set("gen_ai.request.model", model.to_string());
    }

    /// Adds a reason the model stopped (each reason once).
    pub fn finish_reason(&self, reason: &str) {
        self.with(|fields| {
            let known = fields.finish_reasons.iter().any(|r| r == reason);
            if !known && fields.finish_reasons.len() < MAX_LIST && reason.len() <= 64 {
                fields.finish_reasons.push(reason.to_string());
            }
        });
    }

    /// Records a moment of note inside the request (an upstream skipped, …).
    pub fn event(&self, name: &'static str, attributes: Attributes) {
        let time_ns = now_ns();
        self.with(|fields| {
            if fields.events.len() < MAX_LIST {
                fields.events.push(Event {
                    time_ns,
                    name,
                    attributes,
                });
            }
        });
    }

    /// The route pattern and the response status, known once the router answered.
    pub fn answered(&self, route: Option<&str>, status: u16) {
        self.with(|fields| {
            fields.route = route.map(String::from);
            fields.status = status;
        });
    }

    /// The response, with this span kept open (and current) until its body is over.
    pub fn hold_through(self, response: axum::response::Response) -> axum::response::Response {
        response.map(|body| {
            Body::new(TracedBody {
                inner: body,
                trace: self,
            })
        })
    }
}

impl Drop for ServerSpan {
    fn drop(&mut self) {
        let fields = match self.fields.get_mut() {
            Ok(fields) => std::mem::take(fields),
            Err(poisoned) => std::mem::take(poisoned.into_inner()),
        };
        let Fields {
            route,
            status,
            mut attributes,
            finish_reasons,
            events,
        } = fields;
        let name = match &route {
            Some(route) => format!("{} {route}", self.method),
            None => self.method.to_string(),
        };
        set(
            &mut attributes,
            "http.request.method",
            Value::from(self.method.to_string()),
        );
        if let Some(route) = route {
            set(&mut attributes, "http.route", route);
        }
        if status != 0 {
            set(
                &mut attributes,
                "http.response.status_code",
                i64::from(status),
            );
        }
        if !finish_reasons.is_empty() {
            set(
                &mut attributes,
                "gen_ai.response.finish_reasons",
                Value::StrList(finish_reasons),
            );
        }
        let error = status >= 500;
        if error {
            set(&mut attributes, "error.type", status.to_string());
        }
        export::submit(Record {
            ids: self.ids,
            parent: self.parent,
            trace_state: self
                .trace_state
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            name,
            kind: Kind::Server,
            start_ns: self.start_ns,
            end_ns: now_ns(),
            attributes,
            events,
            error,
        });
    }
}

/// A response body that keeps its request's trace open and current while it is sent:
/// the stream's settling and commit record into it, and it ends when the body does.
struct TracedBody {
    inner: Body,
    trace: RequestTrace,
}

impl HttpBody for TracedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let inner = Pin::new(&mut this.inner);
        CURRENT.sync_scope(this.trace.clone(), || inner.poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
