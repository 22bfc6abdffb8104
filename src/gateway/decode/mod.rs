//! Reading an upstream's reply once: SSE lines, where a chat stream ends, the chat deltas and `Reply` in between, and each API's usage.

mod chat;
mod end;
pub mod sse;
mod usage;

pub use chat::{ChatDecoder, Delta, Reply, Usage};
pub use usage::{NativeUsage, Shape};
