//! Routing with the upstreams' health: the order a request tries a pool in (`order.rs`),
//! one attempt's claim and verdict (`attempt.rs`), `Retry-After` (`retry_after.rs`) and
//! the health metrics (`report.rs`). Declarations and re-exports only.

mod attempt;
mod order;
mod report;
mod retry_after;

pub use attempt::{announce, claim, Attempt, Skipped};
pub use order::attempt_order;
pub use report::export_metrics;
