//! The health gauges, set from the registry when `/metrics` is scraped (nothing is
//! recorded per request): `gatewayd_upstream_state`, `gatewayd_upstream_ewma_ttfb_seconds`
//! and `gatewayd_upstream_in_flight`, one series per upstream.

use crate::telemetry;
use crate::upstream::health::clock;
use crate::upstream::Registry;

/// Sets every upstream's health gauges to what they are now.
pub fn export_metrics(registry: &Registry) {
    let now = clock::now_ms();
    for (upstream, health) in registry.members() {
        let name = upstream.name().to_string();
        let state = health.state(now) as u8;
        telemetry::set_upstream_health(
            name,
            f64::from(state),
            health.latency.seconds(),
            f64::from(health.in_flight()),
        );
    }
}
