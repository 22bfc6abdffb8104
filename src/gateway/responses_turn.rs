//! One Responses API turn: load the state it names, translate, forward, commit, then answer.
//!
//! `previous_response_id` and `conversation` are two ways of naming stored state, like
//! `X-Session-Id` for chat. The turn runs through the same pieces as a chat session turn:
//! the session lease (for a conversation), `proxy::forward`, the relay with an observer,
//! and [`SessionStore::commit`], the single commit point, before the client sees the end.

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::value::RawValue;
use serde_json::Value;

// LAYERING: the gateway reads and writes the Responses wire format through the api
// layer's translate/ (these imports and `now_secs` below); the turn pipeline moves that
// into the Responses adapter.
use crate::api::responses::translate::random_id;
use crate::api::responses::translate::responses::{chat_body, translate, Translated};
use crate::api::responses::translate::responses_items::items_to_messages;
use crate::api::responses::translate::responses_reply::{
    outcome_from_completion, response_object, Outcome, ResponseMeta,
};
use crate::api::responses::translate::responses_stream::StreamTranslator;
use crate::gateway::relay::StreamObserver;
use crate::gateway::route::{forward, respond, Answer};
use crate::gateway::Gateway;
use crate::store::{
    session_id_of_conversation, ResponseRecord, SessionError, SessionLease, SessionStore,
};
use crate::wire::error::ApiError;
use crate::wire::openai::{parse_request, Endpoint};

/// Lists the tools removed before the upstream call (`[responses] unsupported_tools = "drop"`).
pub const DROPPED_TOOLS: HeaderName = HeaderName::from_static("x-gatewayd-dropped-tools");

/// `POST /v1/responses` after authentication: the whole turn.
pub async fn create(state: &Gateway, owner: Arc<str>, body: &[u8]) -> Result<Response, ApiError> {
    let t = translate(body, state.config.responses.unsupported_tools)?;
    if !t.dropped_tools.is_empty() {
        tracing::debug!(tools = %t.dropped_tools.join(", "), "dropped tools a chat upstream cannot run");
    }
    let store = state.session_store()?.clone();
    let (context, lease) = load_state(&store, &owner, &t).await?;
    let limits = store.limits();
    let input: Vec<String> = t.input_messages.iter().map(Value::to_string).collect();
    let bytes: usize = context.iter().chain(&input).map(String::len).sum();
    if context.len() + input.len() + 1 > limits.max_messages || bytes > limits.max_bytes {
        return Err(ApiError::from(store.limit_error()));
    }
    let chat = chat_body(&t, t.stream, &context);
    let request = parse_request(Bytes::from(chat), Endpoint::ChatCompletions).map_err(|_| {
        ApiError::bad_request(
            "'input' is required: there is no stored context to continue.",
            Some("input"),
        )
    })?;
    let meta = ResponseMeta::new(&t, crate::api::responses::translate::now_secs());
    let turn = Turn {
        store,
        owner,
        lease,
        context,
        input,
        input_items: with_ids(&t.input_items),
        persist: t.store,
        meta: meta.clone(),
    };
    let answer = forward(state, Endpoint::ChatCompletions, &request, None).await?;
    let mut response = match answer {
        Answer::Complete { status, body, .. } if status.is_success() => {
            let outcome = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|completion| outcome_from_completion(&completion))
                .ok_or_else(|| {
                    tracing::warn!("upstream reply had no choices[0].message; nothing stored");
                    ApiError::BadGateway
                })?;
            if t.stream {
                // The upstream ignored `stream`; a streaming client cannot read a JSON body.
                tracing::warn!("upstream answered a streaming request without a stream");
                return Err(ApiError::BadGateway);
            }
            let object = response_object(&meta, &outcome, None);
            // Stored before the client sees the answer: an acknowledged turn is never lost.
            turn.commit(&outcome, &object).await?;
            axum::Json(object).into_response()
        }
        Answer::Complete { .. } => respond(state, answer, None),
        Answer::Stream(upstream) => {
            let recorder = Recorder {
                translator: StreamTranslator::new(meta),
                turn,
                pending: Bytes::new(),
            };
            respond(state, Answer::Stream(upstream), Some(Box::new(recorder)))
        }
    };
    if !t.dropped_tools.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&t.dropped_tools.join(", ")) {
            response.headers_mut().insert(DROPPED_TOOLS, value);
        }
    }
    Ok(response)
}

/// The chat messages this turn continues, and the conversation's lease if it names one.
async fn load_state(
    store: &Arc<SessionStore>,
    owner: &str,
    t: &Translated,
) -> Result<(Vec<String>, Option<SessionLease>), ApiError> {
    if let Some(id) = &t.previous_response_id {
        let stored = match is_response_id(id) {
            true => store.response(owner, id).await,
            false => Err(SessionError::NotFound),
        };
        let stored = stored.map_err(|err| match err {
            SessionError::NotFound => ApiError::NotFound {
                message: "No stored response with that previous_response_id. Responses created with store: false cannot be continued.".into(),
                code: Some("previous_response_not_found"),
            },
            other => ApiError::from(other),
        })?;
        let context: Vec<Box<RawValue>> =
            serde_json::from_str(&stored.context).map_err(|_| ApiError::Internal)?;
        return Ok((
            context.into_iter().map(|m| m.get().to_string()).collect(),
            None,
        ));
    }
    if let Some(conversation) = &t.conversation {
        let id = session_id_of_conversation(conversation).map_err(|_| conversation_not_found())?;
        let lease = store.lease(owner, &id).await.map_err(conversation_error)?;
        let history = store.history(&lease).await.map_err(conversation_error)?;
        let mut context = Vec::with_capacity(history.messages.len() + 1);
        if let Some(system) = &history.system {
            context.push(serde_json::json!({"role": "system", "content": system}).to_string());
        }
        context.extend(history.messages);
        return Ok((context, Some(lease)));
    }
    Ok((Vec::new(), None))
}

pub fn conversation_not_found() -> ApiError {
    ApiError::NotFound {
        message: "No conversation found with that id.".into(),
        code: Some("conversation_not_found"),
    }
}

pub fn conversation_error(err: SessionError) -> ApiError {
    match err {
        SessionError::NotFound | SessionError::InvalidId => conversation_not_found(),
        other => ApiError::from(other),
    }
}

/// `resp_` + 32 lowercase hex: anything else is never looked up.
pub fn is_response_id(id: &str) -> bool {
    id.strip_prefix("resp_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Input items as `input_items` lists them: each with an id.
fn with_ids(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            if let Some(object) = item.as_object_mut() {
                if !object.get("id").is_some_and(Value::is_string) {
                    let prefix = match object.get("type").and_then(Value::as_str) {
                        Some("function_call") => "fc",
                        Some("function_call_output") => "fco",
                        Some("reasoning") => "rs",
                        _ => "msg",
                    };
                    object.insert("id".into(), Value::String(random_id(prefix)));
                }
            }
            item
        })
        .collect()
}

/// Everything needed to commit a turn once the upstream has answered.
struct Turn {
    store: Arc<SessionStore>,
    owner: Arc<str>,
    lease: Option<SessionLease>,
    context: Vec<String>,
    input: Vec<String>,
    input_items: Vec<Value>,
    persist: bool,
    meta: ResponseMeta,
}

impl Turn {
    /// Appends input and output to the conversation (if any) and stores the response
    /// (unless `store: false`), in one transaction.
    async fn commit(self, outcome: &Outcome, object: &Value) -> Result<(), ApiError> {
        let output: Vec<String> = items_to_messages(&outcome.items)
            .map_err(|_| ApiError::Internal)?
            .iter()
            .map(Value::to_string)
            .collect();
        let record = self.persist.then(|| ResponseRecord {
            id: self.meta.id.clone(),
            created_at: self.meta.created_at,
            context: format!(
                "[{}]",
                [&self.context[..], &self.input[..], &output[..]]
                    .concat()
                    .join(",")
            ),
            input_items: Value::Array(self.input_items.clone()).to_string(),
            response: object.to_string(),
        });
        let turn: Vec<String> = match self.lease {
            Some(_) => [&self.input[..], &output[..]].concat(),
            None => Vec::new(),
        };
        self.store
            .commit(&self.owner, self.lease, &turn, record.as_ref())
            .await
            .map_err(ApiError::from)
    }
}

/// Translates the relayed chat stream into Responses events and commits the turn
/// before `response.completed` is sent.
struct Recorder {
    translator: StreamTranslator,
    turn: Turn,
    pending: Bytes,
}

impl StreamObserver for Recorder {
    fn chunk(&mut self, bytes: &Bytes) {
        self.pending = Bytes::from(self.translator.push(bytes));
    }

    fn translated(&mut self) -> Option<Bytes> {
        Some(std::mem::take(&mut self.pending))
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Option<Bytes>> {
        async move {
            let Recorder {
                mut translator,
                turn,
                ..
            } = *self;
            let (outcome, mut out) = translator.finish();
            let object = response_object(translator.meta(), &outcome, None);
            match turn.commit(&outcome, &object).await {
                Ok(()) => out.extend(translator.terminal(&object)),
                Err(err) => out.extend(translator.failure(&err.body())),
            }
            Some(Bytes::from(out))
        }
        .boxed()
    }

    fn error_event(&mut self, error: &ApiError) -> Option<Bytes> {
        Some(Bytes::from(self.translator.failure(&error.body())))
    }
}
