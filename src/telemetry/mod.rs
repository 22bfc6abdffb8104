//! Metrics: the Prometheus recorder, the per-request metrics layer and what it measures.
//! The access log (`access_log.rs`) and the failed-auth log lines (`auth_log.rs`) read
//! the same per-request record.
//!
//! Gateway overhead is the time a request spends inside gatewayd until its response head
//! is ready, minus the time spent waiting on upstreams.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::StatusCode;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub mod access_log;
pub mod auth_log;
pub mod deferred;
mod handles;
pub mod logs;
pub mod traces;

pub const REQUESTS: &str = "gatewayd_requests_total";
pub const UPSTREAM_SECONDS: &str = "gatewayd_upstream_latency_seconds";
pub const OVERHEAD_SECONDS: &str = "gatewayd_gateway_overhead_seconds";
pub const ACTIVE_STREAMS: &str = "gatewayd_active_streams";
/// Tokens every turn spent, by key, model and kind (input, output, cached_input,
/// reasoning): the upstream's report, or gatewayd's estimate when a stream ended early.
pub const TOKENS: &str = "gatewayd_tokens_total";
pub const SESSIONS_STORED: &str = "gatewayd_sessions_stored";
pub const AUTH_FAILURES: &str = "gatewayd_auth_failures_total";
pub const RATE_LIMITED: &str = "gatewayd_rate_limited_total";
/// Redis calls of the shared limiter that failed or timed out.
pub const LIMIT_BACKEND_ERRORS: &str = "gatewayd_limit_backend_errors_total";
/// Threads a reload left behind, stuck reading a file past their deadline, still running.
pub const RELOAD_STUCK_THREADS: &str = "gatewayd_reload_stuck_threads";
/// Each upstream's breaker: 0 closed, 1 half-open, 2 open.
pub const UPSTREAM_STATE: &str = "gatewayd_upstream_state";
/// Each upstream's peak-EWMA time to first byte.
pub const UPSTREAM_EWMA_TTFB: &str = "gatewayd_upstream_ewma_ttfb_seconds";
/// Requests (streams included) each upstream is serving now.
pub const UPSTREAM_IN_FLIGHT: &str = "gatewayd_upstream_in_flight";
/// Times each upstream's breaker opened.
pub const UPSTREAM_OPENED: &str = "gatewayd_upstream_opened_total";
/// Retries, by the reason the attempt before failed.
pub const UPSTREAM_RETRIES: &str = "gatewayd_upstream_retries_total";
/// Retries not made because the pool's retry budget was spent.
pub const RETRY_BUDGET_EXHAUSTED: &str = "gatewayd_retry_budget_exhausted_total";
/// Access log lines dropped because the writer fell behind.
pub const ACCESS_LOG_DROPPED: &str = "gatewayd_access_log_dropped_total";
/// Idle connections closed to free slots when slots ran low, by reason.
pub const SLOT_RELIEF_CLOSED: &str = "gatewayd_connections_closed_for_slots_total";

/// Why an upstream attempt failed and the next was tried (the `reason` of [`UPSTREAM_RETRIES`]).
const RETRY_REASONS: [&str; 6] = [
    "rate_limited",
    "server_error",
    "connect_error",
    "timeout",
    "broken_response",
    "not_served",
];

/// Registers the error counters at zero, so a dashboard or an alert sees them (and
/// `rate()` works) before the first error happens.
fn register_error_counters() {
    for name in [
        AUTH_FAILURES,
        RATE_LIMITED,
        LIMIT_BACKEND_ERRORS,
        RETRY_BUDGET_EXHAUSTED,
        ACCESS_LOG_DROPPED,
    ] {
        metrics::counter!(name).absolute(0);
    }
    for reason in RETRY_REASONS {
        metrics::counter!(UPSTREAM_RETRIES, "reason" => reason).absolute(0);
    }
    for direction in ["input", "output"] {
        metrics::counter!(TOKENS, "direction" => direction).absolute(0);
    }
    for reason in [
        "unauthenticated",
        "unauthenticated_timeout",
        "idle_keepalive",
    ] {
        metrics::counter!(SLOT_RELIEF_CLOSED, "reason" => reason).absolute(0);
    }
    metrics::gauge!(ACTIVE_STREAMS).increment(0.0);
}

/// The process-wide recorder, installed on first use.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            register_error_counters();
            handle
        })
        .clone()
}

/// Histogram samples wait in a per-metric queue until the exporter's upkeep folds them
/// into buckets. Without a periodic upkeep they pile up between scrapes (a slow leak when
/// nobody scrapes), so one task per process runs it. Must be called inside a runtime.
pub fn start_upkeep() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let handle = handle();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                ticks.tick().await;
                handle.run_upkeep();
            }
        });
    });
}

/// Connections accepted by worker `worker` (`[server] workers`): a counter handle, taken
/// once per accept loop.
pub fn worker_connections(worker: usize) -> metrics::Counter {
    metrics::counter!("gatewayd_worker_connections_total", "worker" => worker.to_string())
}

/// What the handler learned about a request, for its metrics and its access log line.
#[derive(Default)]
pub struct RequestTiming {
    upstream_nanos: AtomicU64,
    model: OnceLock<Arc<str>>,
    /// The route pattern, recorded inside the router (the edge runs before routing).
    route: OnceLock<MatchedPath>,
    /// The name of the caller's key (set by the auth boundary).
    caller: OnceLock<Arc<str>>,
    /// The model as the client named it, for the access log only (unbounded, so never a
    /// metric label).
    requested_model: OnceLock<Arc<str>>,
    /// The configured name of the upstream that answered.
    upstream: OnceLock<Arc<str>>,
    /// Input and output tokens, when the upstream reported them and gatewayd read them.
    tokens: OnceLock<(u64, u64)>,
}

impl RequestTiming {
    pub fn start() -> Arc<RequestTiming> {
        Arc::new(RequestTiming::default())
    }

    /// The route pattern the router matched, once it has.
    pub fn route(&self) -> Option<&str> {
        self.route.get().map(|p| p.as_str())
    }

    /// Notes the tokens of this request's reply (the first report counts).
    pub fn set_tokens(&self, input: u64, output: u64) {
        let _ = self.tokens.set((input, output));
    }
}

/// The current request's record, for work that outlives the handler (a stream's end),
/// when the access log will read it.
pub fn current() -> Option<Arc<RequestTiming>> {
    match access_log::enabled() {
        true => TIMING.try_with(Arc::clone).ok(),
        false => None,
    }
}

tokio::task_local! {
    static TIMING: Arc<RequestTiming>;
}

/// Adds time spent waiting on an upstream to the current request (no-op outside one).
pub fn record_upstream(started: Instant, upstream: &str) {
    let elapsed = started.elapsed();
    handles::upstream_latency(upstream).record(elapsed.as_secs_f64());
    let _ = TIMING.try_with(|t| {
        t.upstream_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed)
    });
}

/// `[telemetry] token_metrics_by_key`: whether [`TOKENS`] carries the `key` label.
static TOKENS_BY_KEY: AtomicBool = AtomicBool::new(true);

/// Sets whether [`TOKENS`] is labelled by key (from the config, at start and on reload).
pub fn set_tokens_by_key(by_key: bool) {
    TOKENS_BY_KEY.store(by_key, Ordering::Relaxed);
}

/// One turn's tokens, by what they bill.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenKinds {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub reasoning: u64,
}

/// Counts one turn's tokens under its key (if it has one, and the label is on) and the
/// configured model name or pattern that routed it (a bounded label).
pub fn record_tokens(key: Option<&str>, model: &str, tokens: TokenKinds) {
    let key = key.filter(|_| TOKENS_BY_KEY.load(Ordering::Relaxed));
    let counts = [
        tokens.input,
        tokens.output,
        tokens.cached_input,
        tokens.reasoning,
    ];
    // Handles resolved once per label set and thread: no label strings per turn.
    handles::count_tokens(key, model, counts);
}

/// Labels the current request with the routed model. Callers pass a configured name
/// (never raw client input), so the label set stays bounded.
pub fn record_model(model: &Arc<str>) {
    let _ = TIMING.try_with(|t| t.model.set(model.clone()));
}

/// Names the caller's key on the current request, for the access log (no-op outside a
/// request or with the access log off, like the other `record_*` that only it reads).
pub fn record_caller(name: &Arc<str>) {
    if access_log::enabled() {
        let _ = TIMING.try_with(|t| t.caller.set(name.clone()));
    }
}

/// Notes the model the client asked for, when the access log will print it.
pub fn record_requested_model(model: &str) {
    if access_log::enabled() {
        let _ = TIMING.try_with(|t| t.requested_model.set(Arc::from(model)));
    }
}

/// Names the upstream that answered the current request (a configured name).
pub fn record_answered_by(upstream: &str) {
    if access_log::enabled() {
        let _ = TIMING.try_with(|t| t.upstream.set(Arc::from(upstream)));
    }
}

/// Runs a request's handling with its timing in scope, so handlers can add to it.
pub fn scope<F: std::future::Future>(
    timing: Arc<RequestTiming>,
    handling: F,
) -> impl std::future::Future<Output = F::Output> {
    TIMING.scope(timing, handling)
}

/// Labels the current request with its route pattern (called inside the router).
pub fn record_route(route: Option<&MatchedPath>) {
    if let Some(route) = route {
        let _ = TIMING.try_with(|t| t.route.set(route.clone()));
    }
}

/// Counts a finished request by route, status and model, and records the gateway's own
/// overhead: the time until the response head, minus the time spent on upstreams.
pub fn record(timing: &RequestTiming, started: Instant, status: StatusCode) {
    let upstream = timing.upstream_nanos.load(Ordering::Relaxed);
    let overhead = (started.elapsed().as_nanos() as u64).saturating_sub(upstream);
    let route = timing.route.get().map_or("unmatched", |p| p.as_str());
    let model = timing.model.get().map_or("", |m| m.as_ref());
    handles::record_request(route, status.as_u16(), model, overhead);
}

/// Counts a request the gateway itself refused: failed authentication or a rate limit.
pub fn count_refusal(error: &crate::wire::error::ApiError) {
    match error {
        crate::wire::error::ApiError::Unauthorized { .. } => {
            metrics::counter!(AUTH_FAILURES).increment(1)
        }
        crate::wire::error::ApiError::RateLimited { .. }
        | crate::wire::error::ApiError::AuthThrottled { .. } => {
            metrics::counter!(RATE_LIMITED).increment(1)
        }
        _ => {}
    }
}

/// Counts an idle connection closed to free its slot (`reason`: why it was chosen).
pub fn count_slot_relief(reason: &'static str) {
    metrics::counter!(SLOT_RELIEF_CLOSED, "reason" => reason).increment(1);
}

/// Publishes how many threads hung file reads have left behind.
pub fn set_reload_stuck_threads(count: usize) {
    handle();
    metrics::gauge!(RELOAD_STUCK_THREADS).set(count as f64);
}

/// Counts one retry; `reason` is one of a fixed few words.
pub fn count_retry(reason: &'static str) {
    metrics::counter!(UPSTREAM_RETRIES, "reason" => reason).increment(1);
}

/// Counts a retry the retry budget refused.
pub fn count_retry_refused() {
    metrics::counter!(RETRY_BUDGET_EXHAUSTED).increment(1);
}

/// Counts an upstream's breaker opening (`upstream` is a configured name).
pub fn count_upstream_opened(upstream: &str) {
    metrics::counter!(UPSTREAM_OPENED, "upstream" => upstream.to_string()).increment(1);
}

/// Sets one upstream's health gauges (`upstream` is a configured name).
pub fn set_upstream_health(upstream: String, state: f64, ewma_ttfb: f64, in_flight: f64) {
    handle();
    metrics::gauge!(UPSTREAM_STATE, "upstream" => upstream.clone()).set(state);
    metrics::gauge!(UPSTREAM_EWMA_TTFB, "upstream" => upstream.clone()).set(ewma_ttfb);
    metrics::gauge!(UPSTREAM_IN_FLIGHT, "upstream" => upstream.clone()).set(in_flight);
    // At zero until the breaker first opens, so the series exists for dashboards.
    metrics::counter!(UPSTREAM_OPENED, "upstream" => upstream).increment(0);
}

/// Counts a stream while it is open.
pub struct StreamGauge;

impl StreamGauge {
    pub fn open() -> StreamGauge {
        handles::active_streams().increment(1.0);
        StreamGauge
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        handles::active_streams().decrement(1.0);
    }
}
