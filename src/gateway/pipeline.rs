//! `run`: one turn from start to end, for every protocol — resolve, limit, build, route, relay, settle, release.
//!
//! 1. resolve the stored state the turn names and take its lease (`resolve.rs`);
//! 2. check the session limits, one rule for every protocol ([`SessionStore::admits`]);
//! 3. build the upstream request (the adapter's [`Protocol::upstream_call`]), with the
//!    client headers the turn carries;
//! 4. open the turn's token meter (`meter.rs`: the key's budget is reserved), then route
//!    with fallback (`proxy::forward_to`), pinned to the upstream that holds a native
//!    response;
//! 5. relay: a whole answer is read once into a [`Reply`]; a stream passes through the
//!    [`Settler`], which decodes it once and lets the adapter's encoder shape it;
//! 6. settle: commit the turn, or record the native response id, before the client sees
//!    the end of the answer, and settle the meter (exact usage, an estimate, or a refund);
//! 7. release: the lease lives in the settlement, so every exit — a failed commit, an
//!    upstream error, a truncated stream, a client that left — drops and releases it.

use std::sync::Arc;

use axum::response::Response;
use bytes::Bytes;

use super::decode::{Reply, Shape, Usage};
use super::meter::Meter;
use super::native_record::{self, NativeRecorder};
use super::resolve::{resolve, Resolved};
use super::settle::{trace_reply, Settlement, Settler};
use super::state::Gateway;
use super::turn::{Complete, NativeApi, Protocol, Stored, Turn, UpstreamCall};
use crate::gateway::route::{forward_to, respond, respond_stream, Answer};
use crate::store::SessionStore;
use crate::telemetry::traces;
use crate::upstream::{Candidate, UpstreamApi};
use crate::wire::error::ApiError;
use crate::wire::openai::Endpoint;

/// Runs one turn that calls an upstream.
pub async fn run(
    gateway: &Gateway,
    turn: Turn,
    mut protocol: impl Protocol,
) -> Result<Response, ApiError> {
    let Turn {
        owner,
        key,
        stored,
        input,
        client_headers,
        records,
    } = turn;
    let store = match stored != Stored::Nothing || records {
        true => Some(gateway.session_store()?.clone()),
        false => None,
    };
    let resolved = resolve(store.as_ref(), &owner, &stored).await?;
    if let Some(store) = &store {
        store.admits(&resolved.context, &input, true)?;
    }
    let Resolved {
        context,
        lease,
        pinned,
    } = resolved;

    let mut call = protocol.upstream_call(&context)?;
    // Let go of the cached history now: the commit then grows the cache's entry in
    // place instead of copying it.
    drop(context);
    if let Some(key) = &key {
        // The key's `models`: one check for every protocol, before anything goes upstream.
        if !key.policy.allows_model(&call.request.model) {
            return Err(ApiError::ModelNotAllowed {
                model: call.request.model.chars().take(128).collect(),
            });
        }
    }
    call.request.client_headers = client_headers;
    // Every streamed chat (and completions) turn asks for its usage; a client that did
    // not ask is not sent it.
    let strip_usage = call.native.is_none()
        && matches!(
            call.endpoint,
            Endpoint::ChatCompletions | Endpoint::Completions
        )
        && call.request.stream
        && !call.request.ask_stream_usage()
        && !protocol.translates();
    let candidates = candidates(gateway, &call, pinned)?;
    // Shared by every attempt and the meter, never copied.
    let prefix: Option<Bytes> = call.prefix.take().map(Bytes::from);
    // The turn's tokens: reserved against the key's budgets now, settled once after.
    let meter = match (call.endpoint, candidates.first()) {
        (Endpoint::CountTokens, _) | (_, None) => None,
        (_, Some(first)) => {
            let label = first.label.clone();
            let open = Meter::open(gateway, key.as_ref(), &call.request, prefix.clone(), label);
            Some(open.await?)
        }
    };
    let shape = match call.native {
        Some(NativeApi::Responses) => Shape::Responses,
        Some(NativeApi::Messages) => Shape::Anthropic,
        None => Shape::Chat,
    };
    let (answer, upstream) = forward_to(
        gateway,
        call.endpoint,
        &call.request,
        prefix.as_deref(),
        candidates,
    )
    .await?;

    let native = match (call.native, &store) {
        (Some(NativeApi::Responses), Some(store)) if records => Some(NativeRecorder {
            store: store.clone(),
            owner: owner.clone(),
            upstream,
        }),
        _ => None,
    };
    let settlement = match (call.native, store) {
        (None, Some(store)) => Some(Settlement {
            store,
            owner,
            lease,
            input,
        }),
        _ => None,
    };
    let mut response = match answer {
        Answer::Complete {
            status,
            content_type: headers,
            body,
        } if status.is_success() => {
            if protocol.translates() && call.request.stream {
                // The upstream ignored `stream`; a client that asked for another
                // protocol's events cannot read a chat JSON body.
                tracing::warn!("upstream answered a streaming request without a stream");
                return Err(ApiError::BadGateway);
            }
            let reply = match protocol.translates() || settlement.is_some() {
                true => Some(Reply::from_completion(&body).ok_or_else(|| {
                    tracing::warn!("upstream reply had no choices[0].message; nothing stored");
                    ApiError::BadGateway
                })?),
                false => None,
            };
            if reply.is_none() && traces::enabled() {
                // Read only for the trace: the client still gets the upstream's bytes.
                if let Some(reply) = Reply::from_completion(&body) {
                    trace_reply(&reply);
                }
            }
            if let Some(meter) = meter {
                settle_answer(meter, reply.as_ref(), shape, &body);
            }
            if let Some(recorder) = &native {
                native_record::from_body(recorder, &body).await?;
            }
            let answer = Complete {
                status,
                headers,
                body,
            };
            let (response, record) = protocol.reply(reply.as_ref(), answer)?;
            if let Some(reply) = &reply {
                trace_reply(reply);
            }
            if let Some(settlement) = settlement {
                // Stored before the client sees the answer: an acknowledged turn is never lost.
                settlement.commit(record).await?;
            }
            response
        }
        // The upstream's own refusal passes on; nothing is stored, the lease is released,
        // the meter (dropped with no output) refunds.
        Answer::Complete { .. } => respond(answer),
        Answer::Stream(mut upstream) => {
            if let Some(api) = call.native {
                // A native stream has no `data: [DONE]`; its last event says it is complete.
                upstream.require_done = false;
                upstream.body = native_record::tap(upstream.body, native, api);
            }
            let native = call.native.map(|_| shape);
            let mut settler = Settler::new(
                protocol.encoder(),
                settlement,
                protocol.translates(),
                meter,
                native,
            );
            if strip_usage {
                settler = settler.strip_usage_chunk();
            }
            respond_stream(gateway, upstream, settler)
        }
    };
    protocol.finish_headers(response.headers_mut());
    Ok(response)
}

/// Runs one turn that only stores what the client sent (conversation items): the same
/// state, limits, commit and release as every turn, and no upstream. Returns how many
/// messages were stored.
pub async fn append(gateway: &Gateway, turn: Turn) -> Result<usize, ApiError> {
    let store: Arc<SessionStore> = gateway.session_store()?.clone();
    let Resolved { context, lease, .. } = resolve(Some(&store), &turn.owner, &turn.stored).await?;
    store.admits(&context, &turn.input, false)?;
    drop(context);
    let added = turn.input.len();
    let settlement = Settlement {
        store,
        owner: turn.owner,
        lease,
        input: turn.input,
    };
    settlement.commit(Default::default()).await?;
    Ok(added)
}

/// Step 6 for tokens, on a whole answer: the usage its body reports (read from the
/// reply when it was decoded, else from the body once), or an estimate of its message.
fn settle_answer(mut meter: Meter, reply: Option<&Reply>, shape: Shape, body: &[u8]) {
    let usage = match reply {
        Some(reply) => reply.usage.clone(),
        None => Usage::from_body(shape, body),
    };
    if usage.is_none() {
        if let Some(text) = reply
            .and_then(|r| r.message.get("content"))
            .and_then(|c| c.as_str())
        {
            meter.saw_output(text);
        }
    }
    meter.settle(usage.as_ref(), true);
}

/// The upstreams that may answer: those serving the model (natively, if the call needs
/// it), only the one holding a continued native response.
fn candidates(
    gateway: &Gateway,
    call: &UpstreamCall,
    pinned: Option<String>,
) -> Result<Vec<Candidate>, ApiError> {
    let mut candidates = gateway.upstreams.candidates(&call.request.model);
    match call.native {
        Some(NativeApi::Responses) => candidates.retain(|c| c.upstream.native_responses()),
        Some(NativeApi::Messages) => {
            candidates.retain(|c| c.upstream.api() == UpstreamApi::Anthropic)
        }
        // A chat (or translated) call never goes to an upstream that speaks another API.
        None => candidates.retain(|c| c.upstream.api() == UpstreamApi::Openai),
    }
    if let Some(holder) = pinned {
        candidates.retain(|c| c.upstream.name() == holder);
        if candidates.is_empty() {
            return Err(ApiError::bad_request(
                format!(
                    "previous_response_id was created at an upstream that does not serve the model '{}'.",
                    call.request.model
                ),
                Some("previous_response_id"),
            ));
        }
    }
    Ok(candidates)
}
