//! Steps 6 and 7 of a turn: store what it produced (or record the native id), and release its lease on every exit.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;

use super::decode::{ChatDecoder, Delta, NativeUsage, Reply, Shape, UsageChunkStrip};
use super::meter::Meter;
use super::relay::{Ending, Flow, StreamTap};
use super::turn::{Encoder, Record};
use crate::store::{SessionLease, SessionStore};
use crate::telemetry::traces::{self, Kind};
use crate::wire::error::ApiError;

/// What a turn stores once its reply is complete. Holding it holds the session's lease:
/// dropping it on any other exit (an upstream error, a truncated stream, a client that
/// left) releases the lease, and a failed commit releases it too.
pub struct Settlement {
    pub store: Arc<SessionStore>,
    pub owner: Arc<str>,
    pub lease: Option<SessionLease>,
    /// This turn's new messages, stored before the reply's when a session is leased.
    pub input: Vec<String>,
}

impl Settlement {
    /// THE commit of a turn: its input and output go to the leased session (if any) and
    /// the response record (if any) is stored, in one transaction. The lease is released
    /// by the commit, or when it fails, by dropping it.
    pub async fn commit(self, record: Record) -> Result<(), ApiError> {
        let messages: Vec<String> = match self.lease {
            Some(_) => [self.input, record.output].concat(),
            None => Vec::new(),
        };
        let mut span = traces::current().map(|trace| {
            let mut span = trace.child("gatewayd.store.commit".into(), Kind::Internal);
            span.set("db.system.name", self.store.backend());
            span.set("gatewayd.store.session", self.lease.is_some());
            span.set("gatewayd.store.response", record.response.is_some());
            span.set("gatewayd.store.messages", messages.len() as i64);
            span
        });
        let committed = self
            .store
            .commit(&self.owner, self.lease, &messages, record.response.as_ref())
            .await;
        if let (Some(span), Err(_)) = (&mut span, &committed) {
            span.fail("store_error");
        }
        committed.map_err(ApiError::from)
    }
}

/// The relay's tap for one turn: finds the end of the upstream's stream, decodes it
/// once into deltas when anyone needs them, lets the protocol's encoder say what the
/// client gets, and settles the turn before the client sees the stream's end.
pub struct Settler {
    /// Finds the end; decodes the content too when the encoder or the settlement needs it.
    decoder: ChatDecoder,
    deltas: Vec<Delta>,
    encoder: Box<dyn Encoder>,
    /// Boxed, as `observer` and `native` are: most streams have none, and the tap is
    /// held for as long as the stream is open (each inline costs every open stream).
    settlement: Option<Box<Settlement>>,
    /// The upstream's own ending (`data: [DONE]…`), held until the turn is settled.
    held: Bytes,
    /// The `[DONE]` line began in an earlier chunk, so part of it was sent already.
    split_end: bool,
    /// With traces on, a stream nobody decodes is read once more for its model, usage
    /// and finish reason only (the client's bytes are unaffected; no content is kept).
    observer: Option<Box<ChatDecoder>>,
    /// The reply must be whole to be used (a translating protocol, or a turn that
    /// stores): an error inside the stream then ends it with an error.
    checks: bool,
    /// The turn's tokens: settled with the stream's usage at its end, or (dropped with
    /// this tap when the stream fails or the client leaves) estimated from what was seen.
    meter: Option<Meter>,
    /// A native stream's usage and output text (its events are not chat chunks).
    native: Option<Box<NativeUsage>>,
    /// Removes the usage chunk gatewayd asked for from a chat client's stream when the
    /// client did not ask for it.
    strip: Option<UsageChunkStrip>,
}

impl Settler {
    /// `native`: the shape of a native stream's events (`None` for chat chunks).
    pub fn new(
        encoder: Box<dyn Encoder>,
        settlement: Option<Settlement>,
        translates: bool,
        meter: Option<Meter>,
        native: Option<Shape>,
    ) -> Box<Self> {
        let checks = translates || settlement.is_some();
        // Metering a chat stream reads its usage chunk and its deltas (for an estimate).
        let decode = checks || (meter.is_some() && native.is_none());
        let observer = (!decode && traces::enabled()).then(|| Box::new(ChatDecoder::summary()));
        Box::new(Settler {
            decoder: match decode {
                true => ChatDecoder::default(),
                false => ChatDecoder::ends_only(),
            },
            deltas: Vec::new(),
            encoder,
            settlement: settlement.map(Box::new),
            held: Bytes::new(),
            split_end: false,
            observer,
            checks,
            native: native
                .filter(|_| meter.is_some())
                .map(|shape| Box::new(NativeUsage::new(shape))),
            meter,
            strip: None,
        })
    }

    /// The client did not ask for the usage chunk gatewayd asked the upstream for: it is
    /// removed from what the client gets (and still read for the turn's usage).
    pub fn strip_usage_chunk(mut self: Box<Self>) -> Box<Self> {
        self.strip = Some(UsageChunkStrip::default());
        self
    }

    /// An unfinished last event the strip still holds, before the stream's last bytes.
    fn with_rest(strip: Option<UsageChunkStrip>, ending: Bytes) -> Bytes {
        match strip.map(|mut strip| strip.rest()) {
            Some(rest) if !rest.is_empty() => [rest, ending].concat().into(),
            _ => ending,
        }
    }
}

impl StreamTap for Settler {
    fn chunk(&mut self, bytes: Bytes) -> Flow {
        self.deltas.clear();
        let bytes = match &mut self.strip {
            Some(strip) => {
                let stripped = strip.push(bytes);
                if let Some(removed) = stripped.removed {
                    // Read for its usage only; it carries no delta.
                    self.decoder.push(&removed, &mut self.deltas);
                }
                stripped.send
            }
            None => bytes,
        };
        let done_at = self.decoder.push(&bytes, &mut self.deltas);
        if let Some(observer) = &mut self.observer {
            // Its deltas (only `Done`) are not the encoder's business.
            observer.push(&bytes, &mut self.deltas);
            self.deltas.clear();
        }
        if let Some(meter) = &mut self.meter {
            match &mut self.native {
                Some(native) => native.push(&bytes, |text| meter.saw_output(text)),
                None => meter_deltas(meter, &self.deltas),
            }
        }
        let encoded = self.encoder.chunk(&bytes, &self.deltas);
        match (done_at, encoded) {
            (None, None) => Flow::Send(bytes),
            (None, Some(events)) => Flow::Send(events),
            // Nothing to settle: the upstream's end passes on at once, uncopied.
            (Some(at), None) if self.settlement.is_none() => {
                Flow::Complete(bytes.slice(..end_of_done(&bytes, at)))
            }
            (Some(at), None) => {
                self.held = bytes.slice(at..end_of_done(&bytes, at));
                self.split_end = at == 0;
                Flow::Complete(bytes.slice(..at))
            }
            (Some(_), Some(events)) => Flow::Complete(events),
        }
    }

    fn finish(self: Box<Self>) -> Ending {
        if self.settlement.is_none() {
            // Nothing to store: the ending is the upstream's own, or the encoder's, made
            // from the decoded reply when the protocol translates.
            let Settler {
                decoder,
                mut encoder,
                held,
                observer,
                checks,
                meter,
                native,
                strip,
                ..
            } = *self;
            if let Some(observer) = observer {
                trace_reply(&observer.reply());
            } else if !checks && decoder.decodes() && traces::enabled() {
                // Decoded for the meter only: the trace reads the same reply.
                trace_reply(&decoder.reply());
            }
            settle_meter(meter, native.as_deref(), &decoder);
            let made = match (checks, decoder.incomplete()) {
                (true, true) => Err(incomplete_reply()),
                (true, false) => {
                    let reply = decoder.reply();
                    trace_reply(&reply);
                    encoder.record(&reply).map(drop)
                }
                (false, _) => Ok(()),
            };
            let ending = encoder.done(made.as_ref().map(|_| ())).unwrap_or(held);
            return Ending::Now(Settler::with_rest(strip, ending));
        }
        Ending::Settled(
            async move {
                let Settler {
                    decoder,
                    mut encoder,
                    settlement,
                    held,
                    split_end,
                    meter,
                    native,
                    strip,
                    ..
                } = *self;
                settle_meter(meter, native.as_deref(), &decoder);
                let settled = match settlement {
                    None => Ok(()),
                    // The upstream reported an error, or a line was lost: not stored.
                    Some(_) if decoder.incomplete() => Err(incomplete_reply()),
                    Some(settlement) => {
                        let reply = decoder.reply();
                        trace_reply(&reply);
                        match encoder.record(&reply) {
                            Ok(record) => settlement.commit(record).await,
                            Err(error) => Err(error),
                        }
                    }
                };
                let ending = match encoder.done(settled.as_ref().map(drop)) {
                    // In place of `data: [DONE]`; a half-sent `[DONE]` line is closed first.
                    Some(ending) if split_end => [&b"\n\n"[..], &ending].concat().into(),
                    Some(ending) => ending,
                    None => held,
                };
                Settler::with_rest(strip, ending)
            }
            .boxed(),
        )
    }

    fn keep_alive_within(&self) -> Option<std::time::Duration> {
        self.encoder.keep_alive_within()
    }

    fn keep_alive(&self) -> Bytes {
        self.encoder
            .keep_alive()
            .unwrap_or(Bytes::from_static(super::relay::KEEP_ALIVE))
    }

    fn failed(self: Box<Self>, error: &ApiError) -> Option<Bytes> {
        let mut encoder = self.encoder;
        encoder.failed(error)
    }
}

/// The error a turn ends with when its reply reached `[DONE]` but cannot be trusted
/// whole (an error event inside the stream, or a line too long to read).
fn incomplete_reply() -> ApiError {
    tracing::warn!(
        "upstream stream reported an error or lost a line before [DONE]; turn not stored"
    );
    ApiError::BadGateway
}

/// Where the `data: [DONE]` line that starts at `at` ends, with the blank line after it:
/// the stream is over there, and nothing after it is forwarded.
fn end_of_done(bytes: &[u8], at: usize) -> usize {
    let rest = bytes.get(at..).unwrap_or_default();
    let line_end = match memchr::memchr(b'\n', rest) {
        Some(newline) => at + newline + 1,
        None => return bytes.len(),
    };
    let after = bytes.get(line_end..).unwrap_or_default();
    if after.starts_with(b"\r\n") {
        line_end + 2
    } else if after.starts_with(b"\n") {
        line_end + 1
    } else {
        line_end
    }
}

/// The output text a chat stream's deltas carry, for the meter's estimate.
fn meter_deltas(meter: &mut Meter, deltas: &[Delta]) {
    for delta in deltas {
        match delta {
            Delta::Text(text) | Delta::Refusal(text) => meter.saw_output(text),
            Delta::ToolCall {
                name, arguments, ..
            } => {
                meter.saw_output(name);
                meter.saw_output(arguments);
            }
            Delta::Finish(_) | Delta::Done => {}
        }
    }
}

/// Step 6 for tokens, at a complete stream's end: the usage it reported, or (without a
/// report) an estimate of what it produced, or a refund if it ended in an error before
/// any output.
fn settle_meter(meter: Option<Meter>, native: Option<&NativeUsage>, decoder: &ChatDecoder) {
    if let Some(meter) = meter {
        let usage = match native {
            Some(native) => native.usage(),
            None => decoder.usage(),
        };
        // A stream that completed produced an answer (unless it reported an error).
        meter.settle(usage, !decoder.incomplete());
    }
}

/// Labels the request's span with the reply's model, finish reason and token counts
/// (never its content).
pub fn trace_reply(reply: &Reply) {
    let Some(trace) = traces::current() else {
        return;
    };
    if let Some(usage) = &reply.usage {
        let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        trace.set("gen_ai.usage.input_tokens", tokens(usage.input_tokens));
        trace.set("gen_ai.usage.output_tokens", tokens(usage.output_tokens));
    }
    if let Some(reason) = &reply.finish_reason {
        trace.finish_reason(reason);
    }
    if let Some(model) = &reply.model {
        trace.set(
            "gen_ai.response.model",
            model.chars().take(256).collect::<String>(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::end_of_done;

    #[test]
    fn the_stream_ends_with_its_done_line() {
        let chunk = b"data: {}\n\ndata: [DONE]\n\ndata: {\"more\":1}\n\n";
        assert_eq!(
            &chunk[..end_of_done(chunk, 10)],
            b"data: {}\n\ndata: [DONE]\n\n"
        );
        assert_eq!(end_of_done(b"data: [DONE]", 0), 12);
        assert_eq!(end_of_done(b"data: [DONE]\r\n\r\nx", 0), 16);
        assert_eq!(end_of_done(b"data: [DONE]\nx", 0), 13);
    }
}
