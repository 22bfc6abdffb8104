//! The `[telemetry]` section as written: what gatewayd reports about its own traffic
//! beyond `/metrics` (access log, traces). Plain data with its defaults.

use serde::Deserialize;

/// `[telemetry]`: per-request reporting an operator can switch on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {}
