//! What a protocol adapter hands the pipeline: the turn, and the four things an adapter supplies.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;

use super::decode::{Delta, Reply};
use crate::config::keys::ClientKey;
use crate::store::{History, ResponseRecord};
use crate::wire::error::ApiError;
use crate::wire::openai::{ChatRequest, Endpoint};

/// The stored state a turn continues, as the client named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Nothing,
    /// `X-Session-Id` on chat: a session, leased for the turn.
    Session(String),
    /// `conversation` on Responses (`conv_…`, or a `sess_…` id): the same sessions, leased,
    /// with conversation-shaped errors.
    Conversation(String),
    /// `previous_response_id` of a response gatewayd stored (`resp_…`): its context, read-only.
    Response(String),
    /// `previous_response_id` of a response a native upstream stores: only the upstream
    /// that holds it may answer, and only for the key that created it.
    NativeResponse(String),
}

/// One turn, as parsed by an adapter.
pub struct Turn {
    /// The caller's key name: every stored thing is looked up and written under it.
    pub owner: Arc<str>,
    /// The caller's key (its policy: models, budgets); `None` in keyless mode and for
    /// turns that call no upstream.
    pub key: Option<Arc<ClientKey>>,
    pub stored: Stored,
    /// This turn's new messages as JSON text: checked against the limits, then stored
    /// before the reply.
    pub input: Vec<String>,
    /// The client headers that may travel upstream (credentials already removed). Set
    /// here once, so every protocol forwards the same list.
    pub client_headers: Arc<HeaderMap>,
    /// The turn stores something even without stored state: a Responses API response
    /// (`store`), or the id of one a native upstream keeps.
    pub records: bool,
}

/// The request for the upstream, built by the adapter from the stored context (step 3).
pub struct UpstreamCall {
    pub endpoint: Endpoint,
    pub request: ChatRequest,
    /// Messages placed before the request's own (a comma-separated JSON list), at each
    /// attempt, after the model is renamed for that upstream.
    pub prefix: Option<String>,
    /// Set when only upstreams that speak the client's API themselves may take the call:
    /// its bytes then pass through unchanged.
    pub native: Option<NativeApi>,
}

/// An API an upstream may serve itself, besides chat completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeApi {
    /// OpenAI's Responses API (`responses = "native"`); response ids are recorded.
    Responses,
    /// Anthropic's Messages API (`api = "anthropic"`); stateless.
    Messages,
}

/// What a finished turn adds to the stored state beside its input.
#[derive(Default)]
pub struct Record {
    /// The reply as chat messages, stored after the input.
    pub output: Vec<String>,
    /// A Responses API response to store with the turn (in the same transaction).
    pub response: Option<ResponseRecord>,
}

/// A successful upstream answer that arrived whole.
pub struct Complete {
    pub status: axum::http::StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Complete {
    /// The answer as it came, for a protocol that passes the upstream's bytes on.
    pub fn into_response(self) -> Response {
        super::route::respond(super::route::Answer::Complete {
            status: self.status,
            content_type: self.headers,
            body: self.body,
        })
    }
}

/// A client protocol on the pipeline. An adapter supplies this, plus the parse into a
/// [`Turn`]: the pipeline owns everything else (state, limits, routing, relay, settle).
pub trait Protocol: Send + 'static {
    /// Step 3: the upstream request, given the messages the stored state holds
    /// (its system prompt first, as a message).
    fn upstream_call(&mut self, context: &History) -> Result<UpstreamCall, ApiError>;
    /// Whether a complete answer must be read into a [`Reply`] even when nothing is
    /// stored (a translating protocol builds its answer from it).
    fn translates(&self) -> bool;
    /// Step 5, whole answers: the client's response for a successful reply, and what
    /// the turn stores. `reply` is `None` only when the protocol passes the bytes on
    /// untouched and the turn stores nothing.
    fn reply(
        &mut self,
        reply: Option<&Reply>,
        answer: Complete,
    ) -> Result<(Response, Record), ApiError>;
    /// Step 5, streams: how the client's events are made from the upstream's.
    fn encoder(&mut self) -> Box<dyn Encoder>;
    /// Headers on every answer the turn gives (after the upstream was reached).
    fn finish_headers(&self, _headers: &mut HeaderMap) {}
}

/// Turns a decoded upstream stream into the client's protocol.
pub trait Encoder: Send + 'static {
    /// The client's bytes for one upstream chunk, with the deltas decoded from it;
    /// `None` sends the chunk as it came (byte-faithful chat).
    fn chunk(&mut self, raw: &Bytes, deltas: &[Delta]) -> Option<Bytes>;
    /// The reply is complete: what the turn stores.
    fn record(&mut self, reply: &Reply) -> Result<Record, ApiError>;
    /// The stream's last bytes once the turn is settled (`Ok`) or could not be. `None`
    /// sends the upstream's own ending (chat's `data: [DONE]`).
    fn done(&mut self, settled: Result<(), &ApiError>) -> Option<Bytes>;
    /// The last bytes of a stream that failed before it completed; `None` sends the
    /// chat-style `data: {"error":…}` event.
    fn failed(&mut self, error: &ApiError) -> Option<Bytes>;
    /// What keeps a quiet stream open in this protocol (`ping` events for Anthropic);
    /// `None` sends an SSE comment.
    fn keep_alive(&self) -> Option<Bytes> {
        None
    }
    /// The longest quiet period the protocol allows (Anthropic: a `ping` every 10 s), if
    /// shorter than `stream_keepalive_secs`.
    fn keep_alive_within(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The byte-faithful encoder: chat clients get the upstream's bytes untouched, and a
/// turn that cannot be stored ends with an error event in place of `data: [DONE]`.
pub struct Passthrough;

impl Encoder for Passthrough {
    fn chunk(&mut self, _: &Bytes, _: &[Delta]) -> Option<Bytes> {
        None
    }

    fn record(&mut self, reply: &Reply) -> Result<Record, ApiError> {
        Ok(Record {
            output: vec![reply.message.to_string()],
            response: None,
        })
    }

    fn done(&mut self, settled: Result<(), &ApiError>) -> Option<Bytes> {
        settled
            .err()
            .map(|error| Bytes::from(format!("data: {}\n\n", error.body())))
    }

    fn failed(&mut self, _: &ApiError) -> Option<Bytes> {
        None
    }
}

/// The protocol of a client that speaks its upstream's own API (native Responses,
/// Anthropic's Messages): the request goes as it came, the answer comes back as it came.
/// Only the encoder differs, for the endings and keep-alives gatewayd adds itself.
pub struct Native {
    request: Option<ChatRequest>,
    endpoint: Endpoint,
    api: NativeApi,
    encoder: Option<Box<dyn Encoder>>,
}

impl Native {
    pub fn new(request: ChatRequest, endpoint: Endpoint, api: NativeApi) -> Self {
        Native {
            request: Some(request),
            endpoint,
            api,
            encoder: None,
        }
    }

    /// Streams end and keep alive with `encoder` (by default: [`Passthrough`]).
    pub fn with_encoder(mut self, encoder: Box<dyn Encoder>) -> Self {
        self.encoder = Some(encoder);
        self
    }
}

impl Protocol for Native {
    fn upstream_call(&mut self, _context: &History) -> Result<UpstreamCall, ApiError> {
        Ok(UpstreamCall {
            endpoint: self.endpoint,
            request: self.request.take().ok_or(ApiError::Internal)?,
            prefix: None,
            native: Some(self.api),
        })
    }

    fn translates(&self) -> bool {
        false
    }

    fn reply(
        &mut self,
        _reply: Option<&Reply>,
        answer: Complete,
    ) -> Result<(Response, Record), ApiError> {
        Ok((answer.into_response(), Record::default()))
    }

    fn encoder(&mut self) -> Box<dyn Encoder> {
        self.encoder.take().unwrap_or_else(|| Box::new(Passthrough))
    }
}
