//! A whole-config reload: prepare the new state from the files (blocking, installs nothing), check it as startup would, then swap it all in at once.
//!
//! What a request uses lives in one `AppState` behind the router in force. A reload builds
//! a new state (new config; the same key set, upstreams, store and limiter, each updated
//! in place) and a new router around it, then swaps the router: requests that started
//! before keep the old state until their response ends, new ones get the new state.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::key_book::KeyBook;
use super::verdict::{auth_mode, check_key_required};
use crate::api::router::{app, metrics_app};
use crate::api::state::AppState;
use crate::config::changes::{self, Changes};
use crate::config::cli::ServeArgs;
use crate::config::keys::{self, Env, KeySet};
use crate::config::{self as config_file, Config};
use crate::http::hardening::check_cors_origins;
use crate::http::server::LiveRouter;
use crate::telemetry::logs::{self, FilterChange};
use crate::upstream::NextUpstreams;

/// What a reload swaps, and what it needs to read the files again.
pub struct Running {
    /// The flags and environment the daemon started with; a reload merges them over
    /// the file again, exactly as at start.
    pub args: ServeArgs,
    state: ArcSwap<AppState>,
    main: LiveRouter,
    metrics: Option<LiveRouter>,
    /// Config keys and runtime keys; a reload replaces only the config half.
    book: Arc<KeyBook>,
}

impl Running {
    pub fn new(
        args: ServeArgs,
        state: AppState,
        main: LiveRouter,
        metrics: Option<LiveRouter>,
        book: Arc<KeyBook>,
    ) -> Running {
        Running {
            args,
            state: ArcSwap::from_pointee(state),
            main,
            metrics,
            book,
        }
    }

    /// The state new requests get.
    pub fn state(&self) -> AppState {
        AppState::clone(&self.state.load())
    }
}

/// Why a reload changed nothing. Each message is the one `check-config` would print.
#[derive(Debug)]
pub enum Rejection {
    /// The config file (or what it names) does not load, or breaks a policy.
    Config(String),
    /// A key source does not load, or the new key set would turn authentication off.
    Keys(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Config(reason) | Rejection::Keys(reason) => f.write_str(reason),
        }
    }
}

/// A new state, read and checked, not yet in force.
pub struct Prepared {
    config: Config,
    keys: KeySet,
    upstreams: NextUpstreams,
    pub changes: Changes,
}

/// Reads the config file, every key source and the upstreams' files again, and checks
/// them as startup does. Blocking; installs nothing.
pub fn prepare(running: &Running, env: &dyn Env) -> Result<Prepared, Rejection> {
    let state = running.state();
    let cors = env.var("API_SERVER_CORS_ORIGINS");
    let read = config_file::reread(&state.config, &running.args, cors)
        .map_err(|e| Rejection::Config(e.to_string()))?;
    let keys = keys::load(env, &read.key_entries).map_err(|e| Rejection::Keys(e.to_string()))?;
    let old_keys = running.book.config_keys();
    if keys.is_empty() && !old_keys.is_empty() {
        return Err(Rejection::Keys(
            "the new key set is empty; a reload never turns authentication off".into(),
        ));
    }
    let (config, mut changes) = changes::apply(&state.config, read);
    let keyless = keys.is_empty();
    check_cors_origins(&config.cors_origins, keyless).map_err(Rejection::Config)?;
    check_key_required(&config, !keyless).map_err(|e| Rejection::Config(e.to_string()))?;
    let upstreams = state
        .upstreams
        .prepare(&config.upstreams, &config.routing)
        .map_err(|e| Rejection::Config(e.to_string()))?;
    if keys_differ(&old_keys, &keys) && !changes.live.contains(&"keys") {
        changes.live.insert(0, "keys");
    }
    Ok(Prepared {
        config,
        keys,
        upstreams,
        changes,
    })
}

/// Whether two key sets accept different keys, or give them other names, limits or policies.
fn keys_differ(old: &KeySet, new: &KeySet) -> bool {
    let list = |set: &KeySet| -> Vec<_> {
        set.keys
            .iter()
            .map(|k| {
                let limits = (k.requests_per_minute, k.concurrent_requests);
                (k.name.clone(), k.digest, limits, k.policy.clone())
            })
            .collect()
    };
    list(old) != list(new)
}

/// Puts `prepared` in force for the requests that start from now on, all of it at once.
pub fn install(running: &Running, prepared: Prepared) {
    let Prepared {
        config,
        keys,
        upstreams,
        changes: _,
    } = prepared;
    let old = running.state();
    for warning in &keys.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(keys = keys.keys.len(), auth = %auth_mode(&keys), "keys reloaded");
    // The runtime keys stay in force: the book publishes them with the new config keys.
    running.book.set_config(keys);
    old.upstreams.install(upstreams);
    tracing::info!("upstreams and routing reloaded");
    old.limiter.set_defaults(&config.limits);
    if let Some(store) = &old.sessions {
        store.set_limits(config.sessions.limits());
    }
    if config.log_filter != old.config.log_filter {
        match logs::set_filter(&config.log_filter) {
            Ok(FilterChange::Applied) => {}
            Ok(FilterChange::OverriddenByEnv) => tracing::warn!(
                "[server] log_filter changed, but RUST_LOG is set and stays the filter"
            ),
            Err(error) => tracing::error!(%error, "the new log filter could not be applied"),
        }
    }
    let state = old.with_config(config);
    running.main.store(Arc::new(app(state.clone())));
    if let Some(metrics) = &running.metrics {
        metrics.store(Arc::new(metrics_app(state.clone())));
    }
    running.state.store(Arc::new(state));
}
