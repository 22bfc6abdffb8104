//! The routing work that runs beside requests, started once per served gateway and
//! ended by shutdown: active probes of open upstreams, and health shared through Redis.

use tokio_util::sync::CancellationToken;

use super::{probe, shared};
use crate::gateway::Gateway;

/// Starts the background routing tasks of `gateway` (must be called inside a runtime).
pub fn start(gateway: &Gateway, shutdown: CancellationToken) {
    tokio::spawn(probe::run(gateway.upstreams.clone(), shutdown.clone()));
    if let Some(redis) = gateway.limiter.shared_redis() {
        tokio::spawn(shared::run(gateway.upstreams.clone(), redis, shutdown));
    }
}
