//! Upstreams: the provider trait, the model→upstream registry and its fallback order.

mod catalog;
mod echo;
pub mod headers;
mod http;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use http::HttpUpstream;

use crate::config::UpstreamConfig;
pub use crate::openai::Endpoint;
use crate::tls as tls_error;
pub use catalog::CatalogError;
pub use echo::EchoUpstream;

/// What went wrong talking to an upstream. Carries no URL and no key, so it is safe to
/// log; the HTTP layer turns it into a generic 502/504.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream's name, then its `host:port` and the OS error (never the URL or key).
    #[error("could not connect to upstream {0} at {1}")]
    Connect(Arc<str>, String),
    #[error("upstream {0} timed out")]
    Timeout(Arc<str>),
    #[error("upstream {0} broke the response: {1}")]
    Broken(Arc<str>, String),
    #[error("upstream {0} is misconfigured: {1}")]
    Config(Arc<str>, String),
    /// A stream that ended before the event that completes it.
    #[error("upstream {0} ended the stream before its final event")]
    Truncated(Arc<str>),
}

impl UpstreamError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout(_))
    }
}

pub type ByteStream = BoxStream<'static, Result<Bytes, UpstreamError>>;

/// One call to an upstream: the endpoint, the exact bytes to send and the client headers
/// that may be forwarded (already stripped of credentials; see [`headers::forwardable`]).
pub struct UpstreamRequest {
    pub endpoint: Endpoint,
    pub body: Bytes,
    pub client_headers: Arc<::http::HeaderMap>,
}

/// One model object as an upstream lists it (`id` is always a string); its other fields
/// (`created`, `owned_by`, vendor extras) are kept as they came.
pub type ModelObject = serde_json::Map<String, serde_json::Value>;

/// The upstream's answer, with its body still streaming.
pub struct UpstreamResponse {
    pub status: ::http::StatusCode,
    /// The headers a client may see (Content-Type included), already filtered by
    /// [`headers::pass_through`].
    pub headers: ::http::HeaderMap,
    pub body: ByteStream,
    /// The longest silence allowed between body chunks.
    pub idle_timeout: Duration,
    /// A complete event stream ends with `data: [DONE]` (`stream_end = "done"`).
    pub require_done: bool,
}

/// A read or delete of one response an upstream stores itself (`responses = "native"`):
/// `GET`/`DELETE responses/{id}`, or `GET responses/{id}/input_items` with the client's query.
pub struct StoredResponseCall {
    pub method: ::http::Method,
    /// An id [`crate::responses::native::is_native_id`] accepted: safe as a path segment.
    pub id: String,
    pub input_items: bool,
    pub query: Vec<(String, String)>,
    pub client_headers: Arc<::http::HeaderMap>,
}

/// An OpenAI-compatible provider. The built-in echo model is one too.
pub trait Upstream: Send + Sync {
    fn name(&self) -> &str;
    /// Serves `/v1/responses` itself: Responses requests are passed through, not translated.
    fn native_responses(&self) -> bool {
        false
    }
    /// Reads or deletes a response the upstream stores (native upstreams only).
    fn stored_response(
        &self,
        _call: StoredResponseCall,
    ) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        let name: Arc<str> = self.name().into();
        Box::pin(async move {
            Err(UpstreamError::Config(
                name,
                "does not serve the Responses API".into(),
            ))
        })
    }
    /// Sends the request and resolves once response headers have arrived.
    fn send(
        &self,
        request: UpstreamRequest,
    ) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>>;
    /// The upstream's own model list, for pattern upstreams.
    fn list_models(&self) -> BoxFuture<'_, Result<Arc<Vec<ModelObject>>, UpstreamError>>;
}

/// One way to serve a requested model: which upstream, and under which name.
#[derive(Clone)]
pub struct Candidate {
    pub upstream: Arc<dyn Upstream>,
    /// The model name the upstream expects (differs from the request for aliases).
    pub upstream_model: String,
    /// The configured name or pattern that matched: a bounded label for metrics.
    pub label: Arc<str>,
}

struct Entry {
    upstream: Arc<dyn Upstream>,
    exact: Vec<String>,
    prefixes: Vec<String>,
    aliases: Vec<(String, String)>,
    serves_any_listed: bool,
}

/// All configured upstreams in config order, plus how models map to them.
pub struct Registry {
    entries: Vec<Entry>,
    /// Upstreams with their own `ca_file` or client certificate, reloaded on SIGHUP.
    tls: Vec<Arc<tls::UpstreamTls>>,
    /// Unix time the registry was built: the `created` of configured model names.
    created: u64,
}

impl Registry {
    /// Builds the registry; with no upstream configured, the built-in `echo` model.
    pub fn from_config(configs: &[UpstreamConfig]) -> Result<Registry, UpstreamError> {
        if configs.is_empty() {
            return Ok(Registry::echo_only());
        }
        let client = http::shared_client(configs)?;
        let mut entries = Vec::with_capacity(configs.len());
        let mut reloadable = Vec::new();
        for config in configs {
            let tls_error = |e: tls_error::TlsError| {
                UpstreamError::Config(config.name.as_str().into(), e.to_string())
            };
            let client = match tls::UpstreamTls::load(config).map_err(tls_error)? {
                Some(own) => {
                    let tls = own.client_config().map_err(tls_error)?;
                    reloadable.push(own);
                    http::client_with(config.connect_timeout_secs, tls)
                }
                None => client.clone(),
            };
            let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(config, client)?);
            entries.push(Entry::new(upstream, &config.models, &config.aliases));
        }
        Ok(Registry {
            entries,
            tls: reloadable,
            created: unix_now(),
        })
    }

    pub fn echo_only() -> Registry {
        let echo: Arc<dyn Upstream> = Arc::new(EchoUpstream);
        Registry {
            entries: vec![Entry::new(echo, &["echo".to_string()], &Default::default())],
            tls: Vec::new(),
            created: unix_now(),
        }
    }

    /// The configured upstream called `name`.
    pub fn by_name(&self, name: &str) -> Option<Arc<dyn Upstream>> {
        let entry = self.entries.iter().find(|e| e.upstream.name() == name)?;
        Some(entry.upstream.clone())
    }

    /// SIGHUP: re-reads every upstream's `ca_file` and client certificate (blocking).
    /// Each upstream keeps its previous TLS settings when its files are bad.
    pub fn reload_tls(&self) -> Vec<(String, Result<(), tls_error::TlsError>)> {
        self.tls
            .iter()
            .map(|tls| (tls.name().to_string(), tls.reload()))
            .collect()
    }

    pub fn upstream_names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.upstream.name()).collect()
    }

    /// Every upstream that serves `model`: exact names and aliases first, then
    /// patterns, each in config order.
    pub fn candidates(&self, model: &str) -> Vec<Candidate> {
        let exact = self.entries.iter().filter_map(|e| {
            if e.exact.iter().any(|m| m == model) {
                return Some(e.candidate(model, model));
            }
            e.aliases
                .iter()
                .find(|(alias, _)| alias == model)
                .map(|(alias, target)| e.candidate(target, alias))
        });
        let patterns = self.entries.iter().filter_map(|e| {
            let prefix = e.prefixes.iter().find(|p| model.starts_with(p.as_str()))?;
            Some(e.candidate(model, &format!("{prefix}*")))
        });
        let mut out: Vec<Candidate> = exact.collect();
        out.extend(patterns);
        out
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Entry {
    fn new(
        upstream: Arc<dyn Upstream>,
        models: &[String],
        aliases: &std::collections::BTreeMap<String, String>,
    ) -> Entry {
        let (prefixes, exact): (Vec<&String>, Vec<&String>) =
            models.iter().partition(|m| m.ends_with('*'));
        Entry {
            upstream,
            exact: exact.into_iter().cloned().collect(),
            serves_any_listed: !prefixes.is_empty(),
            prefixes: prefixes
                .into_iter()
                .map(|p| p.trim_end_matches('*').to_string())
                .collect(),
            aliases: aliases
                .iter()
                .map(|(a, t)| (a.clone(), t.clone()))
                .collect(),
        }
    }

    fn candidate(&self, upstream_model: &str, label: &str) -> Candidate {
        Candidate {
            upstream: self.upstream.clone(),
            upstream_model: upstream_model.to_string(),
            label: label.into(),
        }
    }
}
