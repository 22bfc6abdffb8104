//! The `[telemetry]` section as written: what gatewayd reports about its own traffic
//! beyond `/metrics` (access log, traces). Plain data with its defaults.

use std::path::PathBuf;

use serde::Deserialize;

/// `[telemetry]`: per-request reporting an operator can switch on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// One JSON line per finished request (route, status, key name, model, upstream,
    /// tokens, timings; never content or keys). Off by default: the journal of a busy
    /// gateway would otherwise grow by a line per request.
    #[serde(default)]
    pub access_log: bool,
    /// Where the access log goes instead of standard output (appended to, created if
    /// missing). Only read when `access_log = true`.
    #[serde(default)]
    pub access_log_file: Option<PathBuf>,
}
