//! Token estimates for the Anthropic Messages API: the request as a chat upstream sees it, counted by the gateway's BPE counter.

pub use crate::gateway::tokens::{estimate, rough};
