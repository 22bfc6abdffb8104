//! The API: one module per resource or protocol, each a table of paths → thin handlers,
//! plus `AppState` and `app(state)`, which puts the routes behind the edge's layers.
//! Handlers parse and shape; a turn is the gateway's. Declarations only.

pub mod admin;
pub mod anthropic;
pub mod health;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod paging;
pub mod responses;
pub mod router;
pub mod sessions;
pub mod state;
pub mod unsupported;
