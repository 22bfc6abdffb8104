//! The edge: one tower service in front of the router that does, per request and in this
//! order, what every request needs before routing (request id, redaction marks, client
//! address, log span, metrics scope, hardening) and after it (security headers).
//!
//! It replaces a stack of ten layers: one boxed future per request instead of ten, and no
//! per-route copies of the stack (the router clones a route's whole layer stack on every
//! request). The auth boundary stays inside the router, where route patterns are known.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use super::client_addr::{self, ClientAddr};
use super::hardening;
use super::peer::Peer;
use super::state::EdgeState;
use crate::telemetry::access_log;
use crate::telemetry::deferred;
use crate::telemetry::traces;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers whose values must never reach a log line (marked sensitive, so `Debug` of a
/// header map shows `Sensitive`).
const SENSITIVE_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-api-key"),
];

/// Set on every response (Cache-Control only where the handler set none).
const SECURITY_HEADERS: [(HeaderName, HeaderValue); 3] = [
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
    (
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    ),
];

#[derive(Clone)]
pub struct EdgeLayer {
    state: EdgeState,
    ids: RequestIds,
}

impl EdgeLayer {
    pub fn new(state: EdgeState) -> Self {
        EdgeLayer {
            state,
            ids: RequestIds::new(),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            state: self.state.clone(),
            ids: self.ids.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    state: EdgeState,
    ids: RequestIds,
}

impl<S> Service<Request<Body>> for Edge<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready; a clone is called below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let started = Instant::now();
        // A client's own id is kept (and echoed); otherwise one is made.
        let id = match request.headers().get(REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.ids.next();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        mark_sensitive(request.headers_mut());
        let config = &self.state.config;
        let peer = request.extensions().get::<Peer>().copied();
        let client = client_addr::resolve(
            peer,
            request.headers(),
            &config.trusted_proxies,
            config.forwarded_header,
        );
        request.extensions_mut().insert(ClientAddr(client));
        // A client's `traceparent` is believed only from a trusted proxy.
        let trusted_peer = || match peer {
            Some(Peer::Tcp(addr)) => client_addr::is_trusted(addr.ip(), &config.trusted_proxies),
            _ => false,
        };
        let trace = traces::start_request(request.method(), request.headers(), trusted_peer);
        let span = request_span(&request, &id, client);
        // The access log's start of a line; one branch when the log is off.
        let logged = access_log::enabled().then(|| access_log::Started {
            at: SystemTime::now(),
            clock: started,
            method: request.method().clone(),
            request_id: id.clone(),
        });
        let refused = hardening::refuse(&self.state, &request);
        let anthropic = super::dialect::is_anthropic(request.uri().path());
        let strip_cors = !config.cors_origins.is_empty();
        let mut inner = self.inner.clone();
        let timing = crate::telemetry::RequestTiming::start();
        let handled = async move {
            let mut response = match refused {
                Some(refused) => refused.into_response(),
                None => {
                    let Ok(response) = inner.call(request).await;
                    response
                }
            };
            if strip_cors {
                hardening::strip_cors_unless_allowed(&mut response);
            }
            if anthropic {
                response = super::dialect::reshape(response).await;
            }
            response
        };
        let scoped = crate::telemetry::scope(timing.clone(), handled);
        Box::pin(
            async move {
                let mut response = match &trace {
                    Some(trace) => traces::scope(trace.clone(), scoped).await,
                    None => scoped.await,
                };
                crate::telemetry::record(&timing, started, response.status());
                if let Some(logged) = logged {
                    let status = response.status();
                    response =
                        response.map(|body| access_log::wrap(body, logged, status, timing.clone()));
                }
                let status = response.status().as_u16();
                let latency_ms = started.elapsed().as_millis() as u64;
                if response.status().is_server_error() {
                    tracing::error!(status, latency_ms, "response failed");
                } else {
                    tracing::debug!(status, latency_ms, "finished processing request");
                }
                finish_headers(response.headers_mut(), id);
                if let Some(trace) = trace {
                    trace.answered(timing.route(), response.status().as_u16());
                    response = trace.hold_through(response);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

fn mark_sensitive(headers: &mut axum::http::HeaderMap) {
    for name in &SENSITIVE_HEADERS {
        if let axum::http::header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

fn finish_headers(headers: &mut axum::http::HeaderMap, id: HeaderValue) {
    // Room for all of them at once: one growth of the map at most, not one per insert.
    headers.reserve(SECURITY_HEADERS.len() + 2);
    if !headers.contains_key(REQUEST_ID) {
        headers.insert(REQUEST_ID, id);
    }
    for (name, value) in &SECURITY_HEADERS {
        headers.insert(name, value.clone());
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// The span every log line of a request is recorded in; it carries the request id.
/// Headers are deliberately not recorded. Its fields are formatted only when a line is
/// written inside it ([`deferred`]): most requests write none.
fn request_span<B>(
    request: &Request<B>,
    id: &HeaderValue,
    client: std::net::IpAddr,
) -> tracing::Span {
    let empty = tracing::field::Empty;
    let span = tracing::info_span!(
        "request",
        request_id = empty,
        client = empty,
        method = empty,
        path = empty
    );
    if !span.is_disabled() {
        let fields = deferred::RequestFields {
            request_id: id.clone(),
            client,
            method: request.method().clone(),
            uri: request.uri().clone(),
        };
        deferred::attach(&span, fields);
    }
    span
}

/// Request ids: `req_`, a random per-process prefix of 12 hex digits and a counter of
/// 16 hex digits; unique, cheap (no lock, no formatting), always 32 characters.
#[derive(Clone)]
struct RequestIds {
    prefix: [u8; 16],
    counter: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let mut seed = [0u8; 6];
        let _ = getrandom::getrandom(&mut seed);
        let mut prefix = *b"req_000000000000";
        let _ = hex::encode_to_slice(seed, &mut prefix[4..]);
        RequestIds {
            prefix,
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 32];
        id[..16].copy_from_slice(&self.prefix);
        let _ = hex::encode_to_slice(n.to_be_bytes(), &mut id[16..]);
        HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("req_unknown"))
    }
}

#[cfg(test)]
mod tests {
    use super::RequestIds;

    #[test]
    fn request_ids_are_unique_and_32_characters() {
        let ids = RequestIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.to_str().unwrap().starts_with("req_"));
    }
}
