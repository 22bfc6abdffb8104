//! The model→upstream registry: every configured upstream in config order with its
//! health, the candidates for a model, and the pools they route in. Swapped whole on
//! reload, keeping the health of upstreams whose name is unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::echo::EchoUpstream;
use super::health::{Health, HealthBook, Pool};
use super::http::{self, HttpUpstream};
use super::pools::Pools;
use super::tls;
use super::types::{Upstream, UpstreamError};
use crate::config::tls::TlsError;
use crate::config::{BreakerPolicy, RoutingSection, Strategy, UpstreamConfig};

/// One way to serve a requested model: which upstream, under which name, and how
/// routing treats it.
#[derive(Clone)]
pub struct Candidate {
    pub upstream: Arc<dyn Upstream>,
    /// The model name the upstream expects (differs from the request for aliases).
    pub upstream_model: String,
    /// The configured name or pattern that matched: a bounded label for metrics.
    pub label: Arc<str>,
    /// Its breaker, requests in flight and latency (kept across reloads).
    pub health: Arc<Health>,
    pub placement: Placement,
}

/// Where an upstream stands in its pools (`weight`, `priority`, `max_in_flight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub weight: u32,
    pub priority: u32,
    /// 0 = no limit.
    pub max_in_flight: u32,
}

impl Placement {
    fn of(config: &UpstreamConfig) -> Placement {
        Placement {
            weight: config.weight.max(1),
            priority: config.priority,
            max_in_flight: config.max_in_flight,
        }
    }
}

/// One configured upstream and the model names it serves (the catalog reads it too).
pub(super) struct Entry {
    pub(super) upstream: Arc<dyn Upstream>,
    pub(super) exact: Vec<String>,
    pub(super) prefixes: Vec<String>,
    pub(super) aliases: Vec<(String, String)>,
    pub(super) serves_any_listed: bool,
    health: Arc<Health>,
    placement: Placement,
}

/// Everything one config built: the upstreams in config order, how models map to them,
/// and the routing settings. Swapped whole on reload.
pub(super) struct Table {
    pub(super) entries: Vec<Entry>,
    /// Upstreams with their own `ca_file` or client certificate, reloaded on SIGHUP.
    tls: Vec<Arc<tls::UpstreamTls>>,
    routing: RoutingSection,
    /// Each configured model name, alias and pattern's pool.
    pools: HashMap<Arc<str>, Arc<Pool>>,
}

/// Upstreams and pools built by [`Registry::prepare`], not yet in force.
pub struct NextUpstreams(Table);

/// All configured upstreams, how models map to them and how each pool routes.
pub struct Registry {
    table: ArcSwap<Table>,
    /// Health by upstream name, kept across reloads.
    book: HealthBook,
    /// Unix time the registry was built: the `created` of configured model names.
    pub(super) created: u64,
}

impl Registry {
    /// Builds the registry with the default routing; with no upstream configured, the
    /// built-in `echo` model.
    pub fn from_config(configs: &[UpstreamConfig]) -> Result<Registry, UpstreamError> {
        Registry::with_routing(configs, &RoutingSection::default())
    }

    /// Builds the registry with these routing settings.
    pub fn with_routing(
        configs: &[UpstreamConfig],
        routing: &RoutingSection,
    ) -> Result<Registry, UpstreamError> {
        let book = HealthBook::default();
        let table = Table::build(configs, routing, &book)?;
        Ok(Registry {
            table: ArcSwap::from_pointee(table),
            book,
            created: unix_now(),
        })
    }

    pub fn echo_only() -> Registry {
        let book = HealthBook::default();
        let table = Table::echo(&RoutingSection::default(), &book);
        Registry {
            table: ArcSwap::from_pointee(table),
            book,
            created: unix_now(),
        }
    }

    /// SIGHUP, first half: builds the upstreams and pools anew (reading their files,
    /// blocking) without putting them in force. Upstreams whose name is unchanged keep
    /// their health. On error nothing changes.
    pub fn prepare(
        &self,
        configs: &[UpstreamConfig],
        routing: &RoutingSection,
    ) -> Result<NextUpstreams, UpstreamError> {
        Ok(NextUpstreams(Table::build(configs, routing, &self.book)?))
    }

    /// Puts prepared upstreams in force for the next request.
    pub fn install(&self, next: NextUpstreams) {
        self.table.store(Arc::new(next.0));
    }

    pub(super) fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// The configured upstream called `name`.
    pub fn by_name(&self, name: &str) -> Option<Arc<dyn Upstream>> {
        let table = self.table.load();
        let entry = table.entries.iter().find(|e| e.upstream.name() == name)?;
        Some(entry.upstream.clone())
    }

    /// SIGHUP: re-reads every upstream's `ca_file` and client certificate (blocking).
    /// Each upstream keeps its previous TLS settings when its files are bad.
    /// The upstreams with TLS files of their own, for a reload that reads them all first
    /// and installs them only if it finishes within its deadline.
    pub fn tls_settings(&self) -> Vec<Arc<tls::UpstreamTls>> {
        self.table.load().tls.clone()
    }

    pub fn reload_tls(&self) -> Vec<(String, Result<(), TlsError>)> {
        self.table
            .load()
            .tls
            .iter()
            .map(|tls| (tls.name().to_string(), tls.reload()))
            .collect()
    }

    pub fn upstream_names(&self) -> Vec<String> {
        let table = self.table.load();
        table
            .entries
            .iter()
            .map(|e| e.upstream.name().to_string())
            .collect()
    }

    /// Every upstream with its health, in config order.
    pub fn members(&self) -> Vec<(Arc<dyn Upstream>, Arc<Health>)> {
        let table = self.table.load();
        let members = table.entries.iter();
        members
            .map(|e| (e.upstream.clone(), e.health.clone()))
            .collect()
    }

    /// The routing settings in force.
    pub fn routing(&self) -> RoutingSection {
        self.table.load().routing.clone()
    }

    /// How a request for `model` picks among its candidates: the model's strategy and
    /// the pool of `label` (its first candidate's), whose retry budget it spends.
    pub fn strategy(&self, model: &str, label: &str) -> (Strategy, Arc<Pool>) {
        let table = self.table.load();
        let pool = table.pools.get(label).cloned();
        let pool = pool.unwrap_or_else(|| Arc::new(Pool::new(table.routing.retry_budget_percent)));
        (table.routing.strategy_for(model), pool)
    }

    /// Every upstream that serves `model`: exact names and aliases first, then
    /// patterns, each in config order.
    pub fn candidates(&self, model: &str) -> Vec<Candidate> {
        let table = self.table.load();
        let exact = table.entries.iter().filter_map(|e| {
            if e.exact.iter().any(|m| m == model) {
                return Some(e.candidate(model, model));
            }
            e.aliases
                .iter()
                .find(|(alias, _)| alias == model)
                .map(|(alias, target)| e.candidate(target, alias))
        });
        let patterns = table.entries.iter().filter_map(|e| {
            let prefix = e.prefixes.iter().find(|p| model.starts_with(p.as_str()))?;
            Some(e.candidate(model, &format!("{prefix}*")))
        });
        let mut out: Vec<Candidate> = exact.collect();
        out.extend(patterns);
        out
    }
}

impl Table {
    fn build(
        configs: &[UpstreamConfig],
        routing: &RoutingSection,
        book: &HealthBook,
    ) -> Result<Table, UpstreamError> {
        if configs.is_empty() {
            return Ok(Table::echo(routing, book));
        }
        let client = http::shared_client(configs)?;
        let named: Vec<(&str, BreakerPolicy)> = configs
            .iter()
            .map(|c| (c.name.as_str(), routing.breaker_for(c)))
            .collect();
        let mut entries = Vec::with_capacity(configs.len());
        let mut reloadable = Vec::new();
        let mut upstreams = Vec::with_capacity(configs.len());
        for config in configs {
            let tls_error =
                |e: TlsError| UpstreamError::Config(config.name.as_str().into(), e.to_string());
            let client = match tls::UpstreamTls::load(config).map_err(tls_error)? {
                Some(own) => {
                    let tls = own.client_config().map_err(tls_error)?;
                    reloadable.push(own);
                    Pools::new(config.connect_timeout_secs, tls)
                }
                None => client.clone(),
            };
            let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(config, client)?);
            upstreams.push(upstream);
        }
        // Health is renewed only once every upstream built: a failed reload changes nothing.
        let healths = book.renew(&named);
        for ((config, upstream), health) in configs.iter().zip(upstreams).zip(healths) {
            let mut entry = Entry::new(upstream, &config.models, &config.aliases, health);
            entry.placement = Placement::of(config);
            entries.push(entry);
        }
        Ok(Table::new(entries, reloadable, routing))
    }

    fn echo(routing: &RoutingSection, book: &HealthBook) -> Table {
        let echo: Arc<dyn Upstream> = Arc::new(EchoUpstream);
        let healths = book.renew(&[("echo", routing.default_breaker())]);
        let health = healths
            .into_iter()
            .next()
            .unwrap_or_else(|| Arc::new(Health::new("echo", routing.default_breaker())));
        let entry = Entry::new(echo, &["echo".to_string()], &Default::default(), health);
        Table::new(vec![entry], Vec::new(), routing)
    }

    fn new(
        entries: Vec<Entry>,
        tls: Vec<Arc<tls::UpstreamTls>>,
        routing: &RoutingSection,
    ) -> Table {
        let mut pools: HashMap<Arc<str>, Arc<Pool>> = HashMap::new();
        for entry in &entries {
            let labels = entry.exact.iter().cloned();
            let labels = labels.chain(entry.aliases.iter().map(|(alias, _)| alias.clone()));
            let labels = labels.chain(entry.prefixes.iter().map(|p| format!("{p}*")));
            for label in labels {
                pools
                    .entry(label.into())
                    .or_insert_with(|| Arc::new(Pool::new(routing.retry_budget_percent)));
            }
        }
        Table {
            entries,
            tls,
            routing: routing.clone(),
            pools,
        }
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
        health: Arc<Health>,
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
            health,
            placement: Placement {
                weight: 1,
                priority: 0,
                max_in_flight: 0,
            },
        }
    }

    fn candidate(&self, upstream_model: &str, label: &str) -> Candidate {
        Candidate {
            upstream: self.upstream.clone(),
            upstream_model: upstream_model.to_string(),
            label: label.into(),
            health: self.health.clone(),
            placement: self.placement,
        }
    }
}
