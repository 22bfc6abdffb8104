//! Traces: each request's server span, its upstream attempts and its store commit,
//! exported over OTLP/HTTP with the OpenTelemetry GenAI conventions. Off (one atomic
//! load per request) unless an endpoint is configured. Declarations and re-exports only.

mod export;
mod ids;
mod proto;
mod record;
mod request;
mod span;

pub use export::{enabled, shutdown, start, Settings};
pub use ids::{parse_traceparent, traceparent, SpanIds};
pub use record::{Kind, Value};
pub use request::{current, scope, start as start_request, RequestTrace};
pub use span::Span;
