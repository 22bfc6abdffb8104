//! Metric handles resolved once per label set and per thread, so a request records its
//! metrics with a small map lookup instead of building labels and searching the registry.
//!
//! The label sets are bounded: routes are the router's patterns, models are configured
//! names, upstreams are configured names and statuses are HTTP codes.

use std::cell::RefCell;
use std::collections::HashMap;

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram};

use super::{ACTIVE_STREAMS, OVERHEAD_SECONDS, REQUESTS, UPSTREAM_SECONDS};

/// One route's handles: its overhead histogram and its request counters by status and model.
struct RouteHandles {
    overhead: Histogram,
    requests: HashMap<u16, HashMap<Box<str>, Counter>>,
}

#[derive(Default)]
struct Handles {
    routes: HashMap<Box<str>, RouteHandles>,
    upstreams: HashMap<Box<str>, Histogram>,
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
