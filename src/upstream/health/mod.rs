//! Upstream health: each upstream's circuit breaker, requests in flight and peak-EWMA
//! time to first byte (`breaker.rs`, `latency.rs`), kept by name across reloads
//! (`book.rs`), and each pool's retry budget (`budget.rs`). Declarations and re-exports only.

mod book;
mod breaker;
pub mod budget;
pub mod clock;
mod latency;

pub use book::HealthBook;
pub use breaker::{Cause, Claim, Health, State, Transition};
pub use budget::Pool;
pub use latency::PeakEwma;
