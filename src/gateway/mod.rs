//! The turn pipeline, protocol-neutral: one path from a parsed request to a stored turn, for every client protocol. Declarations and re-exports only.

pub mod budget;
pub mod decode;
pub mod meter;
pub mod native_record;
pub mod pipeline;
pub mod relay;
pub mod resolve;
pub mod route;
pub mod routing;
pub mod settle;
pub mod state;
pub mod tokens;
pub mod turn;

pub use pipeline::{append, run};
pub use state::Gateway;
pub use turn::{
    Complete, Encoder, Native, NativeApi, Passthrough, Protocol, Record, Stored, Turn, UpstreamCall,
};
