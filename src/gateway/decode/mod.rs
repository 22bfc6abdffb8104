//! Reading an upstream's reply once: SSE lines, where a chat stream ends, and the chat deltas and `Reply` in between.

mod chat;
mod end;
pub mod sse;

pub use chat::{ChatDecoder, Delta, Reply, Usage};
