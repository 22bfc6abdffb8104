//! The Responses API adapter for chat upstreams: a Responses request parsed into a turn, sent as chat, answered as Responses.
//!
//! `previous_response_id` and `conversation` are two ways of naming stored state, like
//! `X-Session-Id` for chat; the pipeline resolves them, checks the limits and commits the
//! turn. This adapter supplies the translation both ways.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use bytes::Bytes;

use crate::api::responses::translate::output::chat_messages;
use crate::api::responses::translate::responses::{chat_body, translate, Translated};
use crate::api::responses::translate::responses_reply::{
    outcome_from_reply, response_object, Outcome, ResponseMeta,
};
use crate::api::responses::translate::responses_stream::StreamTranslator;
use crate::api::state::AppState;
use crate::config::keys::ClientKey;
use crate::gateway::decode::{Delta, Reply};
use crate::gateway::{Complete, Encoder, Protocol, Record, Stored, Turn, UpstreamCall};
use crate::http::auth::client_headers;
use crate::store::{History, ResponseRecord};
use crate::wire::error::ApiError;
use crate::wire::openai::{parse_request, Endpoint};

/// How many headers a whole answer ends with: its content type, `vary` from the CORS
/// layer, the five `http::edge` adds to every response (request id, three security
/// headers, cache control), and the dropped tools. Made this size at once, the map is
/// not grown (a reallocation and rehash) on the way out.
const ANSWER_HEADERS: usize = 8;

/// Lists the tools removed before the upstream call (`[responses] unsupported_tools = "drop"`).
pub const DROPPED_TOOLS: HeaderName = HeaderName::from_static("x-gatewayd-dropped-tools");

/// `POST /v1/responses` for a model served through chat: parse, then the pipeline.
pub async fn create(
    state: &AppState,
    owner: Arc<str>,
    key: Option<Arc<ClientKey>>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut t = translate(&body, state.config.responses.unsupported_tools)?;
    // Everything the turn needs was copied out: the body is not held through the turn.
    drop(body);
    if !t.dropped_tools.is_empty() {
        tracing::debug!(tools = %t.dropped_tools.join(", "), "dropped tools a chat upstream cannot run");
    }
    let stored = match (&t.previous_response_id, &t.conversation) {
        (Some(id), _) => Stored::Response(id.clone()),
        (None, Some(conversation)) => Stored::Conversation(conversation.clone()),
        (None, None) => Stored::Nothing,
    };
    let continues_conversation = matches!(stored, Stored::Conversation(_));
    let input = std::mem::take(&mut t.input_messages);
    let input_items = std::mem::take(&mut t.input_items);
    let max_owner_bytes = state.config.responses.max_bytes_per_key;
    if t.store {
        // Refused before anything goes upstream when the input alone would pass the
        // key's quota; the commit checks the whole response again.
        let incoming = input.iter().map(String::len).sum::<usize>() + input_items.len();
        state
            .session_store()?
            .admits_response(&owner, incoming as u64, max_owner_bytes)
            .await?;
    }
    let turn = Turn {
        owner,
        key,
        stored,
        input: input.clone(),
        client_headers: client_headers(headers),
        records: true,
    };
    let recording = Recording {
        meta: ResponseMeta::new(&t, crate::api::responses::translate::now_secs()),
        parent: t.previous_response_id.clone(),
        input,
        input_items,
        persist: t.store,
        continues_conversation,
        max_owner_bytes,
    };
    let protocol = Responses {
        t,
        recording: Some(recording),
    };
    crate::gateway::run(state.gateway(), turn, protocol).await
}

struct Responses {
    t: Translated,
    /// Moves into the stream encoder when the answer streams.
    recording: Option<Recording>,
}

/// What a finished turn stores: built from the translated request and its outcome. The
/// context it continued is not copied: the stored response names its parent
/// (`previous_response_id`), or the commit links it to its conversation.
struct Recording {
    meta: ResponseMeta,
    /// The response this turn continues.
    parent: Option<String>,
    input: Vec<String>,
    /// The input items as `input_items` lists them (a JSON list, each with an id).
    input_items: String,
    /// `store`: the response is kept for `previous_response_id` and GET.
    persist: bool,
    /// The turn continues a conversation, whose session keeps the output as messages.
    continues_conversation: bool,
    /// `[responses] max_bytes_per_key` when the turn arrived.
    max_owner_bytes: u64,
}

impl Recording {
    /// What the turn stores: nothing at all unless it continues a conversation or the
    /// response is kept (`store`), so an unstored turn writes no chat messages.
    fn record(&self, outcome: &Outcome, object: &[u8]) -> Result<Record, ApiError> {
        if !self.persist && !self.continues_conversation {
            return Ok(Record::default());
        }
        let output = chat_messages(&outcome.items);
        let response = match self.persist {
            true => Some(ResponseRecord {
                id: self.meta.id.clone(),
                created_at: self.meta.created_at,
                parent: self.parent.clone(),
                context: format!("[{}]", [&self.input[..], &output[..]].concat().join(",")),
                input_items: self.input_items.clone(),
                response: String::from_utf8(object.to_vec()).map_err(|_| ApiError::Internal)?,
                max_owner_bytes: self.max_owner_bytes,
            }),
            false => None,
        };
        Ok(Record { output, response })
    }
}

impl Protocol for Responses {
    fn upstream_call(&mut self, context: &History) -> Result<UpstreamCall, ApiError> {
        let context = context.to_messages();
        let input = self.recording.as_ref().map_or(&[][..], |r| &r.input);
        let chat = chat_body(&mut self.t, &context, input);
        let request =
            parse_request(Bytes::from(chat), Endpoint::ChatCompletions).map_err(|_| {
                ApiError::bad_request(
                    "'input' is required: there is no stored context to continue.",
                    Some("input"),
                )
            })?;
        Ok(UpstreamCall {
            endpoint: Endpoint::ChatCompletions,
            request,
            prefix: None,
            native: None,
        })
    }

    fn translates(&self) -> bool {
        true
    }

    fn reply(
        &mut self,
        reply: Option<&Reply>,
        _answer: Complete,
    ) -> Result<(Response, Record), ApiError> {
        let (reply, recording) = reply
            .zip(self.recording.as_ref())
            .ok_or(ApiError::Internal)?;
        let outcome = outcome_from_reply(reply);
        let object = response_object(&recording.meta, &outcome);
        let record = recording.record(&outcome, &object)?;
        // Room for the headers every answer gets on its way out (request id, security
        // headers, cache control): the map is not grown again for them.
        let mut headers = HeaderMap::with_capacity(ANSWER_HEADERS);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let mut response = Response::new(Body::from(object));
        *response.headers_mut() = headers;
        Ok((response, record))
    }

    fn encoder(&mut self) -> Box<dyn Encoder> {
        let recording = self.recording.take().unwrap_or_else(|| Recording {
            meta: ResponseMeta::new(&self.t, crate::api::responses::translate::now_secs()),
            parent: None,
            input: Vec::new(),
            input_items: String::new(),
            persist: false,
            continues_conversation: false,
            max_owner_bytes: 0,
        });
        Box::new(ResponseEvents {
            translator: StreamTranslator::new(recording.meta.clone()),
            recording,
            closing: Vec::new(),
            object: Vec::new(),
        })
    }

    fn finish_headers(&self, headers: &mut HeaderMap) {
        if !self.t.dropped_tools.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&self.t.dropped_tools.join(", ")) {
                headers.insert(DROPPED_TOOLS, value);
            }
        }
    }
}

/// Responses API events from the decoded chat stream; `response.completed` is sent only
/// after the turn is stored.
struct ResponseEvents {
    translator: StreamTranslator,
    recording: Recording,
    /// The events that close the last item, held until the turn is settled.
    closing: Vec<u8>,
    /// The finished response object, for `response.completed`.
    object: Vec<u8>,
}

impl Encoder for ResponseEvents {
    fn chunk(&mut self, _raw: &Bytes, deltas: &[Delta]) -> Option<Bytes> {
        Some(Bytes::from(self.translator.push(deltas)))
    }

    fn record(&mut self, reply: &Reply) -> Result<Record, ApiError> {
        self.closing = self.translator.finish(reply);
        self.object = response_object(self.translator.meta(), self.translator.outcome());
        self.recording
            .record(self.translator.outcome(), &self.object)
    }

    fn done(&mut self, settled: Result<(), &ApiError>) -> Option<Bytes> {
        let mut out = std::mem::take(&mut self.closing);
        match settled {
            Ok(()) => out.extend(self.translator.terminal(&self.object)),
            Err(error) => out.extend(self.translator.failure(&error.body())),
        }
        Some(Bytes::from(out))
    }

    fn failed(&mut self, error: &ApiError) -> Option<Bytes> {
        Some(Bytes::from(self.translator.failure(&error.body())))
    }
}
