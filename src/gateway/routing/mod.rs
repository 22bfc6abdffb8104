//! Routing with the upstreams' health: the order a request tries a pool in (`order.rs`),
//! one attempt's claim and verdict (`attempt.rs`), `Retry-After` (`retry_after.rs`), the
//! health metrics (`report.rs`), what a trace learns (`trace.rs`) and the background work (`background.rs`: active probes
//! in `probe.rs`, health shared through Redis in `shared.rs`). Declarations and re-exports only.

mod attempt;
mod background;
mod order;
mod probe;
mod report;
mod retry_after;
mod shared;
pub mod trace;

pub use attempt::{announce, claim, Attempt, Skipped};
pub use background::start;
pub use order::attempt_order;
pub use report::export_metrics;
