//! AppState: everything a handler needs, behind one Arc so a clone is one atomic increment.
//!
//! It also holds the two narrower views the layers below take: [`EdgeState`] for the edge
//! (`http/`) and [`Gateway`] for the gateway. Both share this state's Arcs, so there is one
//! limiter, one key set and one store.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::keys::KeySet;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::http::state::EdgeState;
use crate::http::tls::ListenerTls;
use crate::limits::Limiter;
use crate::store::SessionStore;
use crate::upstream::Registry;
use crate::wire::error::ApiError;

/// Cloned into every handler and layer; derefs to [`SharedState`].
#[derive(Clone)]
pub struct AppState(Arc<Views>);

#[derive(Clone)]
pub struct SharedState {
    pub config: Arc<Config>,
    /// Swapped whole on reload, read without locks on every request.
    pub keys: Arc<ArcSwap<KeySet>>,
    pub upstreams: Arc<Registry>,
    /// Conversation storage; `None` only in in-process tests that build state by hand.
    pub sessions: Option<Arc<SessionStore>>,
    /// Fires when the shutdown grace period is over: open streams end with an error event.
    pub hard_stop: CancellationToken,
    /// Per-caller rate and concurrency limits, and the failed-auth throttle.
    pub limiter: Arc<Limiter>,
    /// Fires when shutdown starts: /health/ready answers 503 while connections drain.
    pub draining: CancellationToken,
    /// `[server.tls]`: the listeners terminate TLS with this (swapped on SIGHUP).
    pub tls: Option<Arc<ListenerTls>>,
}

/// The shared state and the views built from it (rebuilt whenever it changes).
struct Views {
    shared: SharedState,
    edge: EdgeState,
    gateway: Gateway,
}

impl Deref for AppState {
    type Target = SharedState;
    fn deref(&self) -> &SharedState {
        &self.0.shared
    }
}

impl AppState {
    pub fn new(config: Config, keys: KeySet, upstreams: Registry) -> Self {
        let limiter = Arc::new(Limiter::new(&config.limits));
        AppState::from_shared(SharedState {
            config: Arc::new(config),
            keys: Arc::new(ArcSwap::from_pointee(keys)),
            upstreams: Arc::new(upstreams),
            sessions: None,
            hard_stop: CancellationToken::new(),
            limiter,
            draining: CancellationToken::new(),
            tls: None,
        })
    }

    fn from_shared(shared: SharedState) -> Self {
        let edge = EdgeState {
            config: shared.config.clone(),
            keys: shared.keys.clone(),
            limiter: shared.limiter.clone(),
            draining: shared.draining.clone(),
            hard_stop: shared.hard_stop.clone(),
            tls: shared.tls.clone(),
        };
        let gateway = Gateway {
            config: shared.config.clone(),
            upstreams: shared.upstreams.clone(),
            sessions: shared.sessions.clone(),
            hard_stop: shared.hard_stop.clone(),
            limiter: shared.limiter.clone(),
        };
        AppState(Arc::new(Views {
            shared,
            edge,
            gateway,
        }))
    }

    /// What the edge's layers (hardening, auth, limits, serving) take.
    pub fn edge(&self) -> &EdgeState {
        &self.0.edge
    }

    /// What a turn takes behind the edge.
    pub fn gateway(&self) -> &Gateway {
        &self.0.gateway
    }

    /// The session store, or a logged 500 if this state was built without one.
    pub fn session_store(&self) -> Result<&Arc<SessionStore>, ApiError> {
        self.0.gateway.session_store()
    }

    /// This state with another config, and the same keys, upstreams, store, limiter and
    /// TLS. A reload builds it for the requests that start afterwards; a request already
    /// running keeps the state (and so the config) it started with.
    pub fn with_config(&self, config: Config) -> Self {
        let mut shared = self.0.shared.clone();
        shared.config = Arc::new(config);
        AppState::from_shared(shared)
    }

    /// Serves TLS on every TCP listener with `tls`.
    pub fn with_tls(self, tls: Arc<ListenerTls>) -> Self {
        let mut shared = self.0.shared.clone();
        shared.tls = Some(tls);
        AppState::from_shared(shared)
    }

    pub fn with_sessions(self, store: SessionStore) -> Self {
        let mut shared = self.0.shared.clone();
        shared.sessions = Some(Arc::new(store));
        AppState::from_shared(shared)
    }
}
