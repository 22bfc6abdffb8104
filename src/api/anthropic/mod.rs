//! The Anthropic Messages API (`/v1/messages`): an adapter on the turn pipeline. Declarations only.

pub mod reply;
pub mod request;
pub mod routes;
pub mod stream;
pub mod tokens;
