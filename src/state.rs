//! AppState: everything a handler needs, as one cheaply cloneable struct of Arcs.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::keys::KeySet;
use crate::upstream::Registry;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Swapped whole on reload, read without locks on every request.
    pub keys: Arc<ArcSwap<KeySet>>,
    pub upstreams: Arc<Registry>,
    /// Fires when the shutdown grace period is over: open streams end with an error event.
    pub hard_stop: CancellationToken,
}

impl AppState {
    pub fn new(config: Config, keys: KeySet, upstreams: Registry) -> Self {
        AppState {
            config: Arc::new(config),
            keys: Arc::new(ArcSwap::from_pointee(keys)),
            upstreams: Arc::new(upstreams),
            hard_stop: CancellationToken::new(),
        }
    }
}
