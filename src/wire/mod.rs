//! The wire: what clients see and send. `ApiError` in the OpenAI error shape (and the
//! Anthropic one made from it), and the few request fields the gateway reads. The bottom
//! layer: it imports no other module.

pub mod anthropic;
pub mod error;
pub mod openai;
pub mod time;
