//! Active probes (`[routing] probe_interval_secs`): every interval, each open upstream
//! gets one cheap request (`GET {base_url}/models`, or its `probe_path`); an answer
//! closes it, so recovery is seen without spending a client request. Closed upstreams
//! are never probed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::attempt::announce;
use crate::upstream::health::{clock, State};
use crate::upstream::Registry;

/// How often the loop looks again while probes are off (a reload may turn them on).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Probes open upstreams until `shutdown`.
pub async fn run(registry: Arc<Registry>, shutdown: CancellationToken) {
    loop {
        let interval = registry.routing().probe_interval_secs;
        let pause = match interval {
            0 => IDLE_CHECK,
            secs => {
                probe_open(&registry).await;
                Duration::from_secs(secs)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One round: every open upstream probed at once.
async fn probe_open(registry: &Registry) {
    let now = clock::now_ms();
    let open = registry
        .members()
        .into_iter()
        .filter(|(_, health)| health.state(now) != State::Closed);
    join_all(open.map(|(upstream, health)| async move {
        match upstream.probe().await {
            Ok(()) => {
                if let Some(transition) = health.probe_succeeded() {
                    announce(upstream.name(), transition);
                }
            }
            Err(err) => {
                tracing::debug!(upstream = upstream.name(), error = %err, "probe failed; still open");
            }
        }
    }))
    .await;
}
