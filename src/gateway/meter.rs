//! The per-turn token meter: reserves a turn's worst case before the upstream call and settles it exactly once, to the upstream's usage, an estimate, or a refund.
//!
//! - With the upstream's reported usage, when there is one (exact).
//! - With an estimate when output was produced but no usage came: a stream the client
//!   left (the relay drops its tap, and this meter with it), or that the upstream cut
//!   short after its output began. The estimate is the input estimate plus the output
//!   text seen, both counted with the gateway's BPE vocabulary, and it is marked as one.
//! - With a refund (the reservation is dropped, nothing is recorded) when no output was
//!   produced: the upstream refused, could not be reached, or answered 4xx/5xx.
//!
//! Settling moves the key's budget windows by what was spent, adds the tokens to the
//! store's usage rows (per key, model and UTC day, written in batches), counts them in
//! `gatewayd_tokens_total`, and notes them on the request for its access log line.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::budget;
use super::decode::Usage;
use super::state::Gateway;
use super::tokens;
use crate::config::keys::ClientKey;
use crate::limits::Reservation;
use crate::store::{SessionStore, TokenCounts};
use crate::telemetry::RequestTiming;
use crate::wire::error::ApiError;
use crate::wire::openai::ChatRequest;

/// Output text kept for an estimate; beyond it, output is counted by length.
const KEEP_OUTPUT: usize = 4 * 1024 * 1024;
/// Inputs larger than this are estimated on a blocking thread when a budget needs the
/// estimate before the call, and by length when only a cut-short stream needs it.
const TOKENIZE_INLINE: usize = 64 * 1024;

/// One turn's tokens, from the reservation before the call to the settlement after it.
pub struct Meter {
    key: Option<Arc<ClientKey>>,
    /// The model as the client named it (a usage row's `model`).
    model: String,
    /// The configured name or pattern that routed it (the metric's bounded `model` label).
    label: Arc<str>,
    input: Input,
    reservation: Option<Reservation>,
    /// Output text seen so far (for an estimate), and the bytes not kept past the cap.
    output: String,
    output_over: usize,
    output_seen: bool,
    store: Option<Arc<SessionStore>>,
    request: Option<Arc<RequestTiming>>,
    settled: bool,
}

/// The input estimate, made only when something needs it (a budget, or a cut-short
/// stream): tokenizing every request would cost CPU on the request path.
enum Input {
    Known(u64),
    Later { body: Bytes, prefix: Option<Bytes> },
}

impl Input {
    fn size(&self) -> usize {
        match self {
            Input::Known(_) => 0,
            Input::Later { body, prefix } => body.len() + prefix.as_ref().map_or(0, Bytes::len),
        }
    }

    fn estimate(&self) -> u64 {
        match self {
            Input::Known(n) => *n,
            Input::Later { body, prefix } => tokens::estimate_request(body, prefix.as_deref()),
        }
    }
}

impl Meter {
    /// Opens the meter of a turn about to call upstream: when its key has a budget, the
    /// input estimate plus the request's `max_tokens` is reserved (or 429 `budget_exceeded`).
    /// `prefix`: the stored history placed before the request's messages (shared, not
    /// copied), counted as input too.
    pub async fn open(
        gateway: &Gateway,
        key: Option<&Arc<ClientKey>>,
        request: &ChatRequest,
        prefix: Option<Bytes>,
        label: Arc<str>,
    ) -> Result<Meter, ApiError> {
        let mut meter = Meter {
            key: key.cloned(),
            model: request.model.clone(),
            label,
            input: Input::Later {
                body: request.body.clone(),
                prefix,
            },
            reservation: None,
            output: String::new(),
            output_over: 0,
            output_seen: false,
            store: gateway.sessions.clone(),
            request: crate::telemetry::current(),
            settled: false,
        };
        if let Some(key) = key.filter(|k| k.policy.has_budget()) {
            let estimate = meter.estimate_input().await?;
            let max_tokens = max_tokens(&request.body);
            meter.reservation = budget::reserve(gateway, key, estimate, max_tokens).await?;
        }
        Ok(meter)
    }

    /// Makes the input estimate now: off the async threads when the input is large, or
    /// while the vocabulary is still to be loaded.
    async fn estimate_input(&mut self) -> Result<u64, ApiError> {
        let estimate = match &self.input {
            Input::Known(n) => *n,
            Input::Later { body, prefix }
                if self.input.size() > TOKENIZE_INLINE || !tokens::loaded() =>
            {
                let (body, prefix) = (body.clone(), prefix.clone());
                tokio::task::spawn_blocking(move || {
                    tokens::estimate_request(&body, prefix.as_deref())
                })
                .await
                .map_err(|_| ApiError::Internal)?
            }
            input => input.estimate(),
        };
        self.input = Input::Known(estimate);
        Ok(estimate)
    }

    /// Output text the client is being sent (a stream's deltas): counted only if the
    /// turn ends without a usage report.
    pub fn saw_output(&mut self, text: &str) {
        self.output_seen = true;
        if self.output.len() + text.len() <= KEEP_OUTPUT {
            self.output.push_str(text);
        } else {
            self.output_over += text.len();
        }
    }

    /// Settles with the upstream's usage, or without a report with the estimate of what
    /// was seen (`answered`: a whole answer arrived, so output was produced), or refunds
    /// when nothing was.
    pub fn settle(mut self, usage: Option<&Usage>, answered: bool) {
        self.output_seen |= answered;
        self.settle_once(usage);
    }

    fn settle_once(&mut self, usage: Option<&Usage>) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let (counts, estimated) = match usage {
            Some(usage) => (
                TokenCounts {
                    input: usage.input_tokens,
                    output: usage.output_tokens,
                    cached_input: usage.cached_input_tokens,
                    reasoning: usage.reasoning_tokens,
                },
                false,
            ),
            // Nothing was produced: the reservation goes back whole, nothing is recorded.
            None if !self.output_seen => {
                // Dropping the reservation unsettled gives it back.
                self.reservation = None;
                return;
            }
            None => {
                let input = match self.input.size() > TOKENIZE_INLINE {
                    true => tokens::rough(self.input.size()),
                    false => self.input.estimate(),
                };
                let over = match self.output_over {
                    0 => 0,
                    bytes => tokens::rough(bytes),
                };
                let output = tokens::count(&self.output) + over;
                let counts = TokenCounts {
                    input,
                    output,
                    ..TokenCounts::default()
                };
                (counts, true)
            }
        };
        if let Some(reservation) = self.reservation.take() {
            reservation.settle(counts.input + counts.output);
        }
        let key = self.key.as_ref().map(|k| k.name.as_str());
        crate::telemetry::record_tokens(key, &self.label, counts);
        if let Some(request) = &self.request {
            request.set_tokens(counts.input, counts.output);
        }
        if let (Some(store), Some(key)) = (&self.store, key) {
            store.add_usage(key, &self.model, &counts, estimated);
        }
    }
}

impl Drop for Meter {
    /// A turn that ended any other way (an error, a client that left mid-stream): an
    /// estimate if output was produced, a refund if not.
    fn drop(&mut self) {
        self.settle_once(None);
    }
}

/// The request's own cap on output tokens, in whichever protocol's name it uses.
fn max_tokens(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Caps {
        max_tokens: Option<Value>,
        max_completion_tokens: Option<Value>,
        max_output_tokens: Option<Value>,
    }
    let caps: Caps = serde_json::from_slice(body).ok()?;
    [
        caps.max_completion_tokens,
        caps.max_tokens,
        caps.max_output_tokens,
    ]
    .iter()
    .flatten()
    .find_map(Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::max_tokens;

    #[test]
    fn reads_the_cap_in_any_protocols_name() {
        assert_eq!(max_tokens(br#"{"max_tokens":5}"#), Some(5));
        assert_eq!(
            max_tokens(br#"{"max_completion_tokens":7,"max_tokens":5}"#),
            Some(7)
        );
        assert_eq!(max_tokens(br#"{"max_output_tokens":9}"#), Some(9));
        assert_eq!(max_tokens(br#"{"max_tokens":"x"}"#), None);
        assert_eq!(max_tokens(b"{}"), None);
    }
}
