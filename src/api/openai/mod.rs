//! The OpenAI chat protocol: /v1/chat/completions, /v1/completions and /v1/embeddings.

pub mod chat;
