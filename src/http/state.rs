//! `EdgeState`: what the edge (hardening, auth, limits, serving) needs, and nothing the
//! gateway behind it uses. Cloned into the edge service; every field is shared.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::tls::ListenerTls;
use crate::config::keys::KeySet;
use crate::config::Config;
use crate::limits::Limiter;

#[derive(Clone)]
pub struct EdgeState {
    pub config: Arc<Config>,
    /// Swapped whole on reload, read without locks on every request.
    pub keys: Arc<ArcSwap<KeySet>>,
    /// Per-caller rate and concurrency limits, and the failed-auth throttle.
    pub limiter: Arc<Limiter>,
    /// Fires when shutdown starts: /health/ready answers 503 while connections drain.
    pub draining: CancellationToken,
    /// Fires when the shutdown grace period is over: open streams end with an error event.
    pub hard_stop: CancellationToken,
    /// `[server.tls]`: the listeners terminate TLS with this (swapped on SIGHUP).
    pub tls: Option<Arc<ListenerTls>>,
}
