//! The routing work that runs beside requests, started once per served gateway and
//! ended by shutdown: active probes of open upstreams.

use tokio_util::sync::CancellationToken;

use super::probe;
use crate::gateway::Gateway;

/// Starts the background routing tasks of `gateway` (must be called inside a runtime).
pub fn start(gateway: &Gateway, shutdown: CancellationToken) {
    tokio::spawn(probe::run(gateway.upstreams.clone(), shutdown));
}
