//! The model→upstream registry: every configured upstream in config order, and the
//! fallback order of the candidates for a model.

use std::sync::Arc;

use super::echo::EchoUpstream;
use super::http::{self, HttpUpstream};
use super::tls;
use super::types::{Upstream, UpstreamError};
use crate::config::tls::TlsError;
use crate::config::UpstreamConfig;

/// One way to serve a requested model: which upstream, and under which name.
#[derive(Clone)]
pub struct Candidate {
    pub upstream: Arc<dyn Upstream>,
    /// The model name the upstream expects (differs from the request for aliases).
    pub upstream_model: String,
    /// The configured name or pattern that matched: a bounded label for metrics.
    pub label: Arc<str>,
}

/// One configured upstream and the model names it serves (the catalog reads it too).
pub(super) struct Entry {
    pub(super) upstream: Arc<dyn Upstream>,
    pub(super) exact: Vec<String>,
    pub(super) prefixes: Vec<String>,
    pub(super) aliases: Vec<(String, String)>,
    pub(super) serves_any_listed: bool,
}

/// All configured upstreams in config order, plus how models map to them.
pub struct Registry {
    pub(super) entries: Vec<Entry>,
    /// Upstreams with their own `ca_file` or client certificate, reloaded on SIGHUP.
    tls: Vec<Arc<tls::UpstreamTls>>,
    /// Unix time the registry was built: the `created` of configured model names.
    pub(super) created: u64,
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
            let tls_error =
                |e: TlsError| UpstreamError::Config(config.name.as_str().into(), e.to_string());
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
    pub fn reload_tls(&self) -> Vec<(String, Result<(), TlsError>)> {
        self.tls
            .iter()
            .map(|tls| (tls.name().to_string(), tls.reload()))
            .collect()
    }

    /// The upstreams with TLS files of their own, for a reload that reads them all first
    /// and installs them only if it finishes within its deadline.
    pub fn tls_settings(&self) -> &[Arc<tls::UpstreamTls>] {
        &self.tls
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
