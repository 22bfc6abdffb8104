//! Upstreams: the provider trait, the model→upstream registry with each upstream's health,
//! the HTTP client, the built-in `echo` model, which headers cross the gateway and the model
//! catalog. Declarations and re-exports only.

mod catalog;
mod echo;
pub mod headers;
pub mod health;
mod http;
pub mod pools;
mod registry;
pub mod tls;
mod types;

pub use crate::config::UpstreamApi;
pub use crate::wire::openai::Endpoint;
pub use catalog::CatalogError;
pub use echo::EchoUpstream;
pub use registry::{Candidate, NextUpstreams, Placement, Registry};
pub use types::{
    ByteStream, ModelObject, StoredResponseCall, TraceHeaders, Upstream, UpstreamError,
    UpstreamRequest, UpstreamResponse,
};
