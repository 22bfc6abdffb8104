//! AppState: everything a handler needs, behind one Arc so a clone is one atomic increment.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::keys::KeySet;
use crate::ratelimit::Limiter;
use crate::sessions::SessionStore;
use crate::upstream::Registry;

/// Cloned into every handler and layer; derefs to [`SharedState`].
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

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
    pub tls: Option<Arc<crate::tls::ListenerTls>>,
}

impl Deref for AppState {
    type Target = SharedState;
    fn deref(&self) -> &SharedState {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, keys: KeySet, upstreams: Registry) -> Self {
        let limiter = Arc::new(Limiter::new(&config.limits));
        AppState(Arc::new(SharedState {
            config: Arc::new(config),
            keys: Arc::new(ArcSwap::from_pointee(keys)),
            upstreams: Arc::new(upstreams),
            sessions: None,
            hard_stop: CancellationToken::new(),
            limiter,
            draining: CancellationToken::new(),
            tls: None,
        }))
    }

    /// The session store, or a logged 500 if this state was built without one.
    pub fn session_store(&self) -> Result<&Arc<SessionStore>, crate::error::ApiError> {
        self.sessions.as_ref().ok_or_else(|| {
            tracing::error!("session storage is not configured");
            crate::error::ApiError::Internal
        })
    }

    /// Serves TLS on every TCP listener with `tls`.
    pub fn with_tls(self, tls: Arc<crate::tls::ListenerTls>) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.0);
        shared.tls = Some(tls);
        AppState(Arc::new(shared))
    }

    pub fn with_sessions(self, store: SessionStore) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.0);
        shared.sessions = Some(Arc::new(store));
        AppState(Arc::new(shared))
    }
}
