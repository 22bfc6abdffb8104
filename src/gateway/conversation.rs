//! Continuing a session: stored history goes in before the request, the answered turn is appended after.

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::value::RawValue;

use crate::gateway::assemble::{message_from_reply, ReplyAssembler};
use crate::gateway::relay::StreamObserver;
use crate::gateway::route::{forward, respond, Answer};
use crate::gateway::Gateway;
use crate::store::{parse_session_id, SessionLease, SessionStore};
use crate::wire::error::ApiError;
use crate::wire::openai::{ChatRequest, Endpoint};

pub const SESSION_HEADER: HeaderName = HeaderName::from_static("x-session-id");

/// Runs one turn of session `id` for `owner`. The session's lease is held from reading
/// the history until the turn is stored (or abandoned), so concurrent continuations of
/// one session form one consistent sequence, on one instance or several. The reply
/// reaches the client only after [`SessionStore::commit_turn`] has made it durable.
pub async fn continue_session(
    state: &Gateway,
    owner: Arc<str>,
    id: &str,
    request: &ChatRequest,
) -> Result<Response, ApiError> {
    let id = parse_session_id(id)?.to_string();
    let store = state.session_store()?.clone();
    let lease = store.lease(&owner, &id).await?;
    let history = store.history(&lease).await.map_err(ApiError::from)?;

    let mut turn: Vec<String> = request_messages(request)?;
    let limits = store.limits();
    let new_bytes: usize = turn.iter().map(String::len).sum();
    if history.messages.len() + turn.len() + 1 > limits.max_messages
        || history.bytes + new_bytes > limits.max_bytes
    {
        return Err(ApiError::from(store.limit_error()));
    }

    let history_json = history.to_json_list();
    let answer = forward(
        state,
        Endpoint::ChatCompletions,
        request,
        Some(history_json.as_bytes()),
    )
    .await?;
    let session_header = HeaderValue::from_str(&id).map_err(|_| ApiError::Internal)?;
    let mut response = match answer {
        Answer::Complete {
            status,
            content_type,
            body,
        } if status.is_success() => {
            let reply = message_from_reply(&body).ok_or_else(|| {
                tracing::warn!("upstream reply had no choices[0].message; turn not stored");
                ApiError::BadGateway
            })?;
            turn.push(reply.to_string());
            // Stored before the client sees the answer: an acknowledged turn is never lost.
            store.commit_turn(&owner, lease, &turn).await?;
            respond(
                state,
                Answer::Complete {
                    status,
                    content_type,
                    body,
                },
                None,
            )
        }
        Answer::Complete { .. } => respond(state, answer, None),
        Answer::Stream(upstream) => {
            let recorder = SessionRecorder {
                assembler: ReplyAssembler::default(),
                store,
                owner,
                turn,
                lease,
            };
            respond(state, Answer::Stream(upstream), Some(Box::new(recorder)))
        }
    };
    response
        .headers_mut()
        .insert(SESSION_HEADER, session_header);
    Ok(response)
}

/// Each of the request's messages as its exact JSON text.
fn request_messages(request: &ChatRequest) -> Result<Vec<String>, ApiError> {
    let raw = request.messages_json().unwrap_or(b"[]");
    let items: Vec<&RawValue> = serde_json::from_slice(raw)
        .map_err(|_| ApiError::bad_request("'messages' must be an array.", Some("messages")))?;
    Ok(items.into_iter().map(|m| m.get().to_string()).collect())
}

/// Assembles a streamed reply and stores the turn when the stream completes.
struct SessionRecorder {
    assembler: ReplyAssembler,
    store: Arc<SessionStore>,
    owner: Arc<str>,
    turn: Vec<String>,
    lease: SessionLease,
}

impl StreamObserver for SessionRecorder {
    fn chunk(&mut self, bytes: &Bytes) {
        self.assembler.push(bytes);
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Option<Bytes>> {
        async move {
            let mut turn = self.turn;
            turn.push(self.assembler.message().to_string());
            match self.store.commit_turn(&self.owner, self.lease, &turn).await {
                Ok(()) => None,
                Err(err) => {
                    let error = ApiError::from(err);
                    Some(Bytes::from(format!("data: {}\n\n", error.body())))
                }
            }
        }
        .boxed()
    }
}
