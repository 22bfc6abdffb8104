//! AppState: everything a handler needs, as one cheaply cloneable struct of Arcs.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::keys::KeySet;
use crate::ratelimit::Limiter;
use crate::sessions::SessionStore;
use crate::upstream::Registry;

#[derive(Clone)]
pub struct AppState {
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
}

impl AppState {
    pub fn new(config: Config, keys: KeySet, upstreams: Registry) -> Self {
        let limiter = Arc::new(Limiter::new(&config.limits));
        AppState {
            config: Arc::new(config),
            keys: Arc::new(ArcSwap::from_pointee(keys)),
            upstreams: Arc::new(upstreams),
            sessions: None,
            hard_stop: CancellationToken::new(),
            limiter,
        }
    }

    pub fn with_sessions(mut self, store: SessionStore) -> Self {
        self.sessions = Some(Arc::new(store));
        self
    }
}
