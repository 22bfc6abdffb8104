//! The log subscriber: text or JSON lines on standard error, behind a filter a reload can replace.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use super::deferred::Deferred;

/// Replaces the filter of the installed subscriber; set once by [`init`].
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The environment variable that, when set, is the filter, whatever the config says.
const ENV_FILTER: &str = "RUST_LOG";

/// Installs the subscriber for the process: `filter` (the config's `[server]
/// log_filter`) unless RUST_LOG is set. An unparsable RUST_LOG falls back to `info`.
pub fn init(json: bool, filter: &str) {
    let filter = match std::env::var_os(ENV_FILTER) {
        Some(_) => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::builder()
            .parse(filter)
            .unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let installed = match json {
        // The request span's fields are formatted only for the lines written inside it.
        true => tracing_subscriber::registry()
            .with(filter)
            .with(Deferred::new(lines.json().flatten_event(true)))
            .try_init(),
        false => tracing_subscriber::registry()
            .with(filter)
            .with(Deferred::new(lines))
            .try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// What a new `[server] log_filter` did.
#[derive(Debug, PartialEq, Eq)]
pub enum FilterChange {
    Applied,
    /// RUST_LOG is set and stays the filter.
    OverriddenByEnv,
}

/// Puts `filter` (already checked by the config) in force for the lines logged from now on.
pub fn set_filter(filter: &str) -> Result<FilterChange, String> {
    if std::env::var_os(ENV_FILTER).is_some() {
        return Ok(FilterChange::OverriddenByEnv);
    }
    let parsed = EnvFilter::builder()
        .parse(filter)
        .map_err(|e| e.to_string())?;
    if let Some(handle) = FILTER.get() {
        handle.reload(parsed).map_err(|e| e.to_string())?;
    }
    Ok(FilterChange::Applied)
}
