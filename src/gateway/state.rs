//! `Gateway`: what a turn needs behind the edge (config, upstreams, storage, limits, the
//! hard stop), and nothing the edge alone uses. Every field is shared with `AppState`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::limits::Limiter;
use crate::store::SessionStore;
use crate::upstream::Registry;
use crate::wire::error::ApiError;

#[derive(Clone)]
pub struct Gateway {
    pub config: Arc<Config>,
    pub upstreams: Arc<Registry>,
    /// Conversation storage; `None` only in in-process tests that build state by hand.
    pub sessions: Option<Arc<SessionStore>>,
    /// Fires when the shutdown grace period is over: open streams end with an error event.
    pub hard_stop: CancellationToken,
    /// Per-caller rate and concurrency limits (the same limiter the edge holds).
    pub limiter: Arc<Limiter>,
}

impl Gateway {
    /// The session store, or a logged 500 if this state was built without one.
    pub fn session_store(&self) -> Result<&Arc<SessionStore>, ApiError> {
        self.sessions.as_ref().ok_or_else(|| {
            tracing::error!("session storage is not configured");
            ApiError::Internal
        })
    }
}
