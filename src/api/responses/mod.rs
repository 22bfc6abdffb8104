//! The Responses API: /v1/responses (stored, translated or native) and /v1/conversations,
//! and the pure translations between it and chat completions. Declarations only.

pub mod conversations;
pub mod memory;
pub mod native;
pub mod routes;
pub mod translate;
pub mod turn;
