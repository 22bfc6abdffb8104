//! The provider contract: the `Upstream` trait, the request and response it carries, and
//! `UpstreamError`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::config::UpstreamApi;
use crate::wire::openai::Endpoint;

/// What went wrong talking to an upstream. Carries no URL and no key, so it is safe to
/// log; the HTTP layer turns it into a generic 502/504.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream's name, then its `host:port` and the OS error (never the URL or key).
    #[error("could not connect to upstream {0} at {1}")]
    Connect(Arc<str>, String),
    #[error("upstream {0} timed out")]
    Timeout(Arc<str>),
    #[error("upstream {0} broke the response: {1}")]
    Broken(Arc<str>, String),
    #[error("upstream {0} is misconfigured: {1}")]
    Config(Arc<str>, String),
    /// A stream that ended before the event that completes it.
    #[error("upstream {0} ended the stream before its final event")]
    Truncated(Arc<str>),
}

impl UpstreamError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout(_))
    }
}

pub type ByteStream = BoxStream<'static, Result<Bytes, UpstreamError>>;

/// One call to an upstream: the endpoint, the exact bytes to send and the client headers
/// that may be forwarded (already stripped of credentials; see [`super::headers::forwardable`]).
pub struct UpstreamRequest {
    pub endpoint: Endpoint,
    pub body: Bytes,
    pub client_headers: Arc<::http::HeaderMap>,
    /// The W3C trace context of this attempt (only when traces are on).
    pub trace: TraceHeaders,
}

/// `traceparent` (naming gatewayd's span for this attempt) and the `tracestate` of a
/// trace continued from a trusted proxy. Never the client's own headers: those are
/// not forwarded (see [`super::headers`]).
#[derive(Debug, Clone, Default)]
pub struct TraceHeaders {
    pub traceparent: Option<::http::HeaderValue>,
    pub tracestate: Option<::http::HeaderValue>,
}

/// One model object as an upstream lists it (`id` is always a string); its other fields
/// (`created`, `owned_by`, vendor extras) are kept as they came.
pub type ModelObject = serde_json::Map<String, serde_json::Value>;

/// The upstream's answer, with its body still streaming.
pub struct UpstreamResponse {
    pub status: ::http::StatusCode,
    /// The headers a client may see (Content-Type included), already filtered by
    /// [`super::headers::response::ResponseHeaders::pass_through`].
    pub headers: ::http::HeaderMap,
    pub body: ByteStream,
    /// The longest silence allowed between body chunks.
    pub idle_timeout: Duration,
    /// A complete event stream ends with `data: [DONE]` (`stream_end = "done"`). Never
    /// set by an `api = "anthropic"` upstream: its streams end with `message_stop`.
    pub require_done: bool,
}

/// A read or delete of one response an upstream stores itself (`responses = "native"`):
/// `GET`/`DELETE responses/{id}`, or `GET responses/{id}/input_items` with the client's query.
pub struct StoredResponseCall {
    pub method: ::http::Method,
    /// An id `gateway::native::is_native_id` accepted: safe as a path segment.
    pub id: String,
    pub input_items: bool,
    pub query: Vec<(String, String)>,
    pub client_headers: Arc<::http::HeaderMap>,
}

/// A provider: OpenAI-compatible, or speaking Anthropic's Messages API (see
/// [`Upstream::api`]). The built-in echo model is an OpenAI one.
pub trait Upstream: Send + Sync {
    fn name(&self) -> &str;
    /// The API it speaks. An `Anthropic` upstream serves only [`Endpoint::Messages`] and
    /// [`Endpoint::CountTokens`] (its bodies are forwarded as they are); an `Openai` one
    /// serves every other endpoint. Either refuses the other's with
    /// [`UpstreamError::Config`], which routing treats as "try the next upstream".
    fn api(&self) -> UpstreamApi {
        UpstreamApi::Openai
    }
    /// Serves `/v1/responses` itself: Responses requests are passed through, not translated.
    fn native_responses(&self) -> bool {
        false
    }
    /// The most output tokens its models accept (`max_output_tokens`), if configured.
    fn max_output_tokens(&self) -> Option<u64> {
        None
    }
    /// Reads or deletes a response the upstream stores (native upstreams only).
    fn stored_response(
        &self,
        _call: StoredResponseCall,
    ) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        let name: Arc<str> = self.name().into();
        Box::pin(async move {
            Err(UpstreamError::Config(
                name,
                "does not serve the Responses API".into(),
            ))
        })
    }
    /// Sends the request and resolves once response headers have arrived.
    fn send(
        &self,
        request: UpstreamRequest,
    ) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>>;
    /// The upstream's own model list, for pattern upstreams.
    fn list_models(&self) -> BoxFuture<'_, Result<Arc<Vec<ModelObject>>, UpstreamError>>;
    /// One model its list lacks, asked for by id (`GET …/models/{id}`): `Ok(None)` when
    /// the upstream does not know it (or cannot be asked for one model).
    fn retrieve_model<'a>(
        &'a self,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ModelObject>, UpstreamError>> {
        Box::pin(async { Ok(None) })
    }
    /// A cheap health check of an open upstream (`probe_interval_secs`): `Ok` when it
    /// answers at all with neither 429 nor 5xx.
    fn probe(&self) -> BoxFuture<'_, Result<(), UpstreamError>> {
        Box::pin(async { Ok(()) })
    }
}
