//! The `[telemetry]` section as written: what gatewayd reports about its own traffic
//! beyond `/metrics` (access log, traces). Plain data with its defaults.

use std::path::PathBuf;
use std::time::Duration;

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
    // Traces (OTLP over HTTP/protobuf).
    /// Where spans go: an OTLP/HTTP collector's base URL (`http://collector:4318`, to
    /// which `/v1/traces` is added) or its full traces URL. Unset (and no
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` in the environment): no traces, at no cost.
    pub otlp_endpoint: Option<String>,
    /// `service.name` on every span, so one collector can tell gateways apart.
    /// Defaults to `OTEL_SERVICE_NAME`, then "gatewayd".
    pub service_name: Option<String>,
    /// How long finished spans wait to be sent together (milliseconds); defaults to
    /// `OTEL_BSP_SCHEDULE_DELAY`, then 5000.
    pub export_delay_ms: Option<u64>,
    /// Label `gatewayd_tokens_total` with the key's name (default true). With many keys
    /// every key adds series; false keeps only `model` and `kind` (usage per key stays
    /// in the store).
    pub token_metrics_by_key: Option<bool>,
}

/// Where and how traces are exported, once the file and the environment are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub url: String,
    pub service_name: String,
    pub delay: Duration,
}

const DEFAULT_DELAY_MS: u64 = 5000;
const TRACES_PATH: &str = "/v1/traces";

impl TelemetrySection {
    /// Whether the token metric carries the `key` label.
    pub fn tokens_by_key(&self) -> bool {
        self.token_metrics_by_key.unwrap_or(true)
    }

    /// The trace export, if any: `otlp_endpoint`, else the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is) or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (a base URL). `env` reads one variable (empty counts as unset).
    pub fn trace_export(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TraceExport>, String> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let (endpoint, whole) = match (
            &self.otlp_endpoint,
            env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ) {
            (Some(endpoint), _) => (endpoint.clone(), false),
            (None, Some(traces)) => (traces, true),
            (None, None) => match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(base) => (base, false),
                None => return Ok(None),
            },
        };
        let url = traces_url(endpoint.trim(), whole)?;
        let service_name = self
            .service_name
            .clone()
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "gatewayd".into());
        let delay_ms = match (self.export_delay_ms, env("OTEL_BSP_SCHEDULE_DELAY")) {
            (Some(ms), _) => ms,
            (None, Some(text)) => text.trim().parse().map_err(|_| {
                format!("OTEL_BSP_SCHEDULE_DELAY must be a number of milliseconds, not {text:?}")
            })?,
            (None, None) => DEFAULT_DELAY_MS,
        };
        Ok(Some(TraceExport {
            url,
            service_name,
            delay: Duration::from_millis(delay_ms.clamp(1, 60_000)),
        }))
    }
}

/// The URL spans are sent to: `endpoint` itself when it is a whole traces URL (or
/// already ends in `/v1/traces`), else `endpoint` + `/v1/traces`.
fn traces_url(endpoint: &str, whole: bool) -> Result<String, String> {
    let bad = || {
        format!(
            "[telemetry] otlp_endpoint must be an http:// or https:// URL of an OTLP/HTTP collector, like \"http://collector:4318\" (got {:?})",
            shown(endpoint)
        )
    };
    let parsed = url::Url::parse(endpoint).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "[telemetry] otlp_endpoint must not carry credentials in the URL; put the collector behind a local agent".into(),
        );
    }
    let trimmed = endpoint.trim_end_matches('/');
    if whole || parsed.path().trim_end_matches('/').ends_with(TRACES_PATH) {
        return Ok(endpoint.to_string());
    }
    Ok(format!("{trimmed}{TRACES_PATH}"))
}

/// An endpoint as an error may show it: without anything that looks like credentials.
fn shown(endpoint: &str) -> &str {
    match endpoint.split_once('@') {
        Some(_) => "<a URL with credentials>",
        None => endpoint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(endpoint: Option<&str>) -> TelemetrySection {
        TelemetrySection {
            otlp_endpoint: endpoint.map(String::from),
            ..Default::default()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn unset_means_no_traces() {
        assert_eq!(section(None).trace_export(env(&[])), Ok(None));
        let empty = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]);
        assert_eq!(section(None).trace_export(empty), Ok(None));
    }

    #[test]
    fn the_config_beats_the_environment_and_the_path_is_added_once() {
        let export = section(Some("http://collector:4318"))
            .trace_export(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318")]))
            .unwrap()
            .unwrap();
        assert_eq!(export.url, "http://collector:4318/v1/traces");
        assert_eq!(export.service_name, "gatewayd");
        assert_eq!(export.delay, Duration::from_secs(5));
        let full = section(Some("https://c.example/v1/traces")).trace_export(env(&[]));
        assert_eq!(full.unwrap().unwrap().url, "https://c.example/v1/traces");
    }

    #[test]
    fn the_standard_variables_are_the_fallback() {
        let base = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_SERVICE_NAME", "gw-eu"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ]);
        let export = section(None).trace_export(base).unwrap().unwrap();
        assert_eq!(export.url, "http://c:4318/v1/traces");
        assert_eq!(export.service_name, "gw-eu");
        assert_eq!(export.delay, Duration::from_millis(200));
        let traces = env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9/custom")]);
        let export = section(None).trace_export(traces).unwrap().unwrap();
        assert_eq!(export.url, "http://c:9/custom");
    }

    #[test]
    fn bad_endpoints_name_the_fix_and_never_show_credentials() {
        let err = section(Some("collector:4318")).trace_export(env(&[]));
        assert!(err.unwrap_err().contains("http://collector:4318"));
        let err = section(Some("http://user:s3cret@c:4318"))
            .trace_export(env(&[]))
            .unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        let err = section(Some("ftp://u:s3cret@c"))
            .trace_export(env(&[]))
            .unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
