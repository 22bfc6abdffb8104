//! Which headers cross the gateway: client → upstream (a safe list, per-upstream extras,
//! static and auth headers) and upstream → client (end-to-end headers, minus what is
//! hop-by-hop, sets state, or names the upstream).
//!
//! Every decision is made once per upstream at startup; per request it is one pass over
//! the headers.

use std::collections::BTreeMap;

use ::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::file_read::{read_text, FileKind};
use crate::config::{HeaderSource, UpstreamApi, UpstreamConfig};

/// gatewayd's product token, appended to the client's `User-Agent`.
pub const PRODUCT: &str = concat!("gatewayd/", env!("CARGO_PKG_VERSION"));

/// Client headers forwarded to every upstream unless it says otherwise.
const DEFAULT_FORWARD: [&str; 4] = ["user-agent", "openai-beta", "idempotency-key", "accept"];
const DEFAULT_FORWARD_PREFIXES: [&str; 1] = ["x-stainless-"];
/// Forwarded to an `api = "anthropic"` upstream besides the default list.
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// The Messages API version an `api = "anthropic"` upstream is sent unless its static
/// `headers` name another; the client's own `anthropic-version` is never forwarded.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
const ANTHROPIC_VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");

/// Client headers never forwarded, whatever `forward_headers` says: credentials meant
/// for gatewayd, account selectors of the caller's own OpenAI account, gatewayd's own
/// session header, proxy and hop-by-hop headers, and what gatewayd sets itself. Also
/// checked per request, so no `forward_headers` prefix can let one through.
const NEVER_FORWARD: [&str; 19] = [
    "authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "openai-organization",
    "openai-project",
    "x-session-id",
    "forwarded",
    "x-real-ip",
    "via",
    "host",
    "content-length",
    "content-type",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
const NEVER_FORWARD_PREFIXES: [&str; 2] = ["x-forwarded-", "proxy-"];

/// Upstream response headers never passed to the client: hop-by-hop (RFC 9110 §7.6.1),
/// framing gatewayd sets itself, state and identity of the upstream, and policies that
/// are gatewayd's own (its `Cache-Control: no-store`, CORS, HSTS, session header).
const NEVER_PASS: [&str; 23] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "set-cookie",
    "set-cookie2",
    "server",
    "alt-svc",
    "via",
    "date",
    "cache-control",
    "strict-transport-security",
    "www-authenticate",
    "x-session-id",
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
    "x-request-id",
];

/// The upstream's request id, renamed so gatewayd's own `X-Request-Id` stays.
pub const UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// The client headers that may leave gatewayd at all, for any upstream: the never-list
/// removed, and any header whose value contains the caller's own key (`client_token`).
pub fn forwardable(client: &HeaderMap, client_token: Option<&[u8]>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in client {
        let n = name.as_str();
        let never =
            NEVER_FORWARD.contains(&n) || NEVER_FORWARD_PREFIXES.iter().any(|p| n.starts_with(p));
        let names_key =
            client_token.is_some_and(|t| !t.is_empty() && contains(value.as_bytes(), t));
        if !never && !names_key {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// One upstream's request-header policy, built at startup.
pub struct RequestHeaders {
    extra_exact: Vec<HeaderName>,
    extra_prefixes: Vec<String>,
    /// Static headers, then the auth header; all sensitive, so never in debug output.
    fixed: Vec<(HeaderName, HeaderValue)>,
}

impl RequestHeaders {
    /// Checks names, reads `env:`/`file:` values and builds the auth header for `key`.
    /// An `api = "anthropic"` upstream gets the key in `x-api-key` (bare) unless
    /// `auth_header`/`auth_scheme` say otherwise, `anthropic-version` unless its static
    /// `headers` set it, and the client's `anthropic-beta`.
    pub fn new(config: &UpstreamConfig, key: Option<&str>) -> Result<Self, String> {
        let anthropic = config.api == UpstreamApi::Anthropic;
        let mut extra_exact = Vec::new();
        if anthropic {
            extra_exact.push(ANTHROPIC_BETA);
        }
        let mut extra_prefixes = Vec::new();
        for entry in &config.forward_headers {
            let lower = entry.to_ascii_lowercase();
            match lower.strip_suffix('*') {
                Some(prefix) => {
                    if !prefix.is_empty() && HeaderName::try_from(prefix).is_err() {
                        return Err(format!(
                            "forward_headers entry {entry:?} is not a header name or prefix*"
                        ));
                    }
                    extra_prefixes.push(prefix.to_string());
                }
                None => {
                    let name = HeaderName::try_from(lower.as_str()).map_err(|_| {
                        format!("forward_headers entry {entry:?} is not a header name")
                    })?;
                    if is_never_forwarded(name.as_str()) {
                        return Err(format!(
                            "forward_headers entry {entry:?} is never forwarded (credentials, cookies, proxy and hop-by-hop headers stay at the gateway)"
                        ));
                    }
                    extra_exact.push(name);
                }
            }
        }
        let mut fixed = static_headers(&config.headers)?;
        if anthropic && !fixed.iter().any(|(n, _)| *n == ANTHROPIC_VERSION_HEADER) {
            let version = HeaderValue::from_static(ANTHROPIC_VERSION);
            fixed.push((ANTHROPIC_VERSION_HEADER, version));
        }
        if let Some(key) = key {
            let (default_header, default_scheme) = match anthropic {
                true => ("x-api-key", ""),
                false => ("authorization", "Bearer"),
            };
            let name = config.auth_header.as_deref().unwrap_or(default_header);
            let name = HeaderName::try_from(name)
                .map_err(|_| format!("auth_header {name:?} is not a header name"))?;
            let value = match config.auth_scheme.as_deref().unwrap_or(default_scheme) {
                "" => key.to_string(),
                scheme => format!("{scheme} {key}"),
            };
            let value = sensitive(value).ok_or("the API key is not a valid header value")?;
            fixed.retain(|(n, _)| *n != name);
            fixed.push((name, value));
        }
        Ok(RequestHeaders {
            extra_exact,
            extra_prefixes,
            fixed,
        })
    }

    /// Adds the forwarded client headers, `User-Agent` with gatewayd's token, and the
    /// static and auth headers to an outgoing request.
    pub fn apply(&self, client: &HeaderMap, out: &mut HeaderMap) {
        for (name, value) in client {
            if !self.forwards(name) {
                continue;
            }
            if *name == header::USER_AGENT {
                let mut agent = value.as_bytes().to_vec();
                agent.push(b' ');
                agent.extend_from_slice(PRODUCT.as_bytes());
                if let Ok(agent) = HeaderValue::from_bytes(&agent) {
                    out.insert(header::USER_AGENT, agent);
                }
            } else {
                out.append(name.clone(), value.clone());
            }
        }
        if !out.contains_key(header::USER_AGENT) {
            out.insert(header::USER_AGENT, HeaderValue::from_static(PRODUCT));
        }
        if !out.contains_key(header::ACCEPT) {
            out.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        }
        for (name, value) in &self.fixed {
            out.insert(name.clone(), value.clone());
        }
    }

    fn forwards(&self, name: &HeaderName) -> bool {
        let n = name.as_str();
        let allowed = DEFAULT_FORWARD.contains(&n)
            || DEFAULT_FORWARD_PREFIXES.iter().any(|p| n.starts_with(p))
            || self.extra_exact.contains(name)
            || self
                .extra_prefixes
                .iter()
                .any(|p| n.starts_with(p.as_str()));
        allowed && !is_never_forwarded(n)
    }
}

fn is_never_forwarded(name: &str) -> bool {
    NEVER_FORWARD.contains(&name) || NEVER_FORWARD_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn static_headers(
    headers: &BTreeMap<String, HeaderSource>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut fixed = Vec::with_capacity(headers.len() + 1);
    for (name, source) in headers {
        let header = HeaderName::try_from(name.as_str())
            .map_err(|_| format!("headers: {name:?} is not a header name"))?;
        if [
            "host",
            "content-length",
            "content-type",
            "transfer-encoding",
            "connection",
            "te",
            "upgrade",
            "keep-alive",
            "trailer",
        ]
        .contains(&header.as_str())
        {
            return Err(format!("headers: {name:?} is set by gatewayd itself"));
        }
        let value = resolve(name, &source.0)?;
        let value = sensitive(value)
            .ok_or_else(|| format!("headers: the value of {name:?} is not a valid header value"))?;
        fixed.push((header, value));
    }
    Ok(fixed)
}

/// A static header value: literal, `env:NAME` or `file:PATH` (one trailing newline
/// stripped). Errors name the variable or file, never the value.
fn resolve(name: &str, source: &str) -> Result<String, String> {
    if let Some(var) = source.strip_prefix("env:") {
        return match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(value),
            _ => Err(format!(
                "headers: {name:?} reads env {var}, which is not set"
            )),
        };
    }
    if let Some(path) = source.strip_prefix("file:") {
        let content = read_text(std::path::Path::new(path), FileKind::Secret)
            .map_err(|e| format!("headers: {name:?} cannot read file {e}"))?;
        return Ok(content.strip_suffix('\n').unwrap_or(&content).to_string());
    }
    Ok(source.to_string())
}

/// A header value kept out of debug output and HPACK tables.
pub fn sensitive(value: String) -> Option<HeaderValue> {
    let mut value = HeaderValue::try_from(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The upstream response headers a client sees. `upstream_host` is lowercase.
pub fn pass_through(upstream: HeaderMap, upstream_host: &str) -> HeaderMap {
    let listed_in_connection: Vec<String> = upstream
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(upstream.len());
    let mut current: Option<HeaderName> = None;
    for (name, value) in upstream {
        let name = match name {
            Some(name) => {
                current = Some(name.clone());
                name
            }
            None => match &current {
                Some(name) => name.clone(),
                None => continue,
            },
        };
        let n = name.as_str();
        if n == "x-request-id" {
            out.append(UPSTREAM_REQUEST_ID, value);
            continue;
        }
        let dropped = NEVER_PASS.contains(&n)
            || n.starts_with("access-control-")
            || listed_in_connection.iter().any(|c| c == n)
            || (!upstream_host.is_empty()
                && contains(
                    &value.as_bytes().to_ascii_lowercase(),
                    upstream_host.as_bytes(),
                ));
        if !dropped {
            out.append(name, value);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_filter() {
        let mut upstream = HeaderMap::new();
        upstream.insert("retry-after", HeaderValue::from_static("2"));
        upstream.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
        upstream.insert("x-request-id", HeaderValue::from_static("req_up"));
        upstream.insert("set-cookie", HeaderValue::from_static("a=b"));
        upstream.insert("connection", HeaderValue::from_static("x-hop"));
        upstream.insert("x-hop", HeaderValue::from_static("1"));
        upstream.insert(
            "location",
            HeaderValue::from_static("https://API.example.net/v1/x"),
        );
        upstream.insert("content-type", HeaderValue::from_static("application/json"));
        let out = pass_through(upstream, "api.example.net");
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "retry-after",
                "x-ratelimit-remaining-requests",
                "x-upstream-request-id",
                "content-type"
            ]
        );
    }

    #[test]
    fn the_caller_key_never_leaves() {
        let mut client = HeaderMap::new();
        client.insert("authorization", HeaderValue::from_static("Bearer k3y"));
        client.insert("x-stainless-os", HeaderValue::from_static("Linux"));
        client.insert("x-custom", HeaderValue::from_static("has k3y inside"));
        client.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let out = forwardable(&client, Some(b"k3y"));
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-stainless-os"]);
    }
}
