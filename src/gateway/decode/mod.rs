//! Reading an upstream's reply once: SSE lines, where a chat stream ends, the chat deltas and `Reply` in between, and each API's usage (and the usage chunk a client did not ask for).

mod chat;
mod completion;
mod end;
pub mod sse;
mod strip;
mod usage;

pub use chat::{ChatDecoder, Delta, Reply};
pub use strip::UsageChunkStrip;
pub use usage::{NativeUsage, Shape, Usage};
