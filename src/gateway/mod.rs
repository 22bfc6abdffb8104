//! The turn pipeline, protocol-neutral: one path from a parsed request to a stored turn, for every client protocol.

pub mod decode;
pub mod native_record;
pub mod pipeline;
pub mod resolve;
pub mod settle;
pub mod turn;

pub use pipeline::{append, run};
pub use turn::{Complete, Encoder, Passthrough, Protocol, Record, Stored, Turn, UpstreamCall};
