//! Metric handles resolved once per label set and per thread, so a request records its
//! metrics with a small map lookup instead of building labels and searching the registry.
//!
//! The label sets are bounded: routes are the router's patterns, models are configured
//! names, upstreams are configured names and statuses are HTTP codes.

use std::cell::RefCell;
use std::collections::HashMap;

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram};

use super::{ACTIVE_STREAMS, OVERHEAD_SECONDS, REQUESTS, TOKENS, UPSTREAM_SECONDS};

/// One route's handles: its overhead histogram and its request counters by status and model.
struct RouteHandles {
    overhead: Histogram,
    requests: HashMap<u16, HashMap<Box<str>, Counter>>,
}

/// The `kind` labels of the token counter, in the order of [`count_tokens`]'s counts.
const TOKEN_KINDS: [&str; 4] = ["input", "output", "cached_input", "reasoning"];

#[derive(Default)]
struct Handles {
    routes: HashMap<Box<str>, RouteHandles>,
    upstreams: HashMap<Box<str>, Histogram>,
    /// Token counters by model, without the key label.
    tokens: HashMap<Box<str>, [Counter; 4]>,
    /// Token counters by key name, then model.
    tokens_by_key: HashMap<Box<str>, HashMap<Box<str>, [Counter; 4]>>,
}

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
}

/// Counts one finished request and records the gateway's own time on it (nanoseconds).
pub fn record_request(route: &str, status: u16, model: &str, overhead_nanos: u64) {
    HANDLES.with_borrow_mut(|handles| {
        if !handles.routes.contains_key(route) {
            // A handle taken before the recorder exists would count nowhere, forever.
            super::handle();
            let overhead = metrics::histogram!(OVERHEAD_SECONDS, "route" => route.to_string());
            let entry = RouteHandles {
                overhead,
                requests: HashMap::new(),
            };
            handles.routes.insert(route.into(), entry);
        }
        let Some(handles) = handles.routes.get_mut(route) else {
            return;
        };
        handles.overhead.record(overhead_nanos as f64 / 1e9);
        let by_model = handles.requests.entry(status).or_default();
        match by_model.get(model) {
            Some(counter) => counter.increment(1),
            None => {
                super::handle();
                let counter = metrics::counter!(REQUESTS, "route" => route.to_string(), "status" => status.to_string(), "model" => model.to_string());
                counter.increment(1);
                by_model.insert(model.into(), counter);
            }
        }
    });
}

/// Adds one turn's token counts (input, output, cached input, reasoning) under the key's
/// name (when given) and the model.
pub fn count_tokens(key: Option<&str>, model: &str, counts: [u64; 4]) {
    HANDLES.with_borrow_mut(|handles| {
        let by_model = match key {
            Some(key) => {
                if !handles.tokens_by_key.contains_key(key) {
                    handles.tokens_by_key.insert(key.into(), HashMap::new());
                }
                match handles.tokens_by_key.get_mut(key) {
                    Some(by_model) => by_model,
                    None => return,
                }
            }
            None => &mut handles.tokens,
        };
        if !by_model.contains_key(model) {
            super::handle();
            let counters = TOKEN_KINDS.map(|kind| match key {
                Some(key) => metrics::counter!(TOKENS, "key" => key.to_string(), "model" => model.to_string(), "kind" => kind),
                None => metrics::counter!(TOKENS, "model" => model.to_string(), "kind" => kind),
            });
            by_model.insert(model.into(), counters);
        }
        if let Some(counters) = by_model.get(model) {
            for (counter, n) in counters.iter().zip(counts) {
                counter.increment(n);
            }
        }
    });
}

/// The latency histogram of one upstream.
pub fn upstream_latency(upstream: &str) -> Histogram {
    HANDLES.with_borrow_mut(|handles| {
        if let Some(histogram) = handles.upstreams.get(upstream) {
            return histogram.clone();
        }
        super::handle();
        let histogram = metrics::histogram!(UPSTREAM_SECONDS, "upstream" => upstream.to_string());
        handles.upstreams.insert(upstream.into(), histogram.clone());
        histogram
    })
}

/// The gauge of open streams.
pub fn active_streams() -> &'static Gauge {
    static GAUGE: OnceLock<Gauge> = OnceLock::new();
    GAUGE.get_or_init(|| {
        super::handle();
        metrics::gauge!(ACTIVE_STREAMS)
    })
}
