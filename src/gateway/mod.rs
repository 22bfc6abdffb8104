//! The gateway: one request turn behind the edge, protocol by protocol for now. Routing
//! across upstreams with fallback (`route.rs`), the byte-faithful relay, stored sessions,
//! the Responses turn and native passthrough. It never imports `http` (they are siblings);
//! the `// LAYERING:` comments mark what the turn-pipeline rewrite removes. Declarations and
//! re-exports only.

pub mod assemble;
pub mod conversation;
pub mod native;
pub mod relay;
pub mod responses_turn;
pub mod route;
pub mod state;

pub use state::Gateway;
