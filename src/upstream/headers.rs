//! Which headers cross the gateway: client → upstream (a safe list, per-upstream extras,
//! static and auth headers), and the lists both directions share. Upstream → client is
//! [`response`].
//!
//! Every decision is made once per upstream at startup; per request it is one pass over
//! the headers.

use std::collections::BTreeMap;

use ::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::file_read::{read_text, FileKind};
use crate::config::{HeaderSource, UpstreamApi, UpstreamConfig};

pub mod response;

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

/// Headers a reverse proxy, CDN or tunnel adds to name the client, the original host or
/// the original URL. Anyone can also forge them. So the edge reads their presence as
/// "proxied" (keyless mode refuses such a request), no client's copy is ever forwarded
/// upstream (not even under `forward_headers = ["*"]`), and no upstream's copy is passed
/// back to a client. Every `x-forwarded-*` header is treated the same way.
pub const PROXY_HEADERS: [&str; 13] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-original-url",
    "x-rewrite-url",
    "via",
];
/// The prefix of the proxy headers [`PROXY_HEADERS`] cannot list one by one.
const PROXY_HEADER_PREFIX: &str = "x-forwarded-";

/// The hop-by-hop headers of RFC 9110 §7.6.1 (plus the obsolete `keep-alive` and
/// `proxy-connection`): they describe one connection, never the message. Any header a
/// `Connection` header names is hop-by-hop too ([`named_in_connection`]).
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// Client headers never forwarded, whatever `forward_headers` says, besides the proxy
/// and hop-by-hop lists: credentials meant for gatewayd, cookies, account selectors of
/// the caller's own OpenAI account, gatewayd's own session header, and what gatewayd
/// sets itself (the W3C trace context names gatewayd's own span, when traces are on).
/// Also checked per request, so no `forward_headers` prefix can let one through.
const NEVER_FORWARD: [&str; 13] = [
    "authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "cookie2",
    "openai-organization",
    "openai-project",
    "x-session-id",
    "host",
    "content-length",
    "content-type",
    "traceparent",
    "tracestate",
];
const NEVER_FORWARD_PREFIXES: [&str; 2] = [PROXY_HEADER_PREFIX, "proxy-"];

/// Is `name` (lowercase) one of [`PROXY_HEADERS`] or an `x-forwarded-*` header?
pub fn is_proxy_header(name: &str) -> bool {
    PROXY_HEADERS.contains(&name) || name.starts_with(PROXY_HEADER_PREFIX)
}

/// Does a `Connection` header of `headers` list `name` (lowercase)? No allocation: the
/// few `Connection` values are split in place.
pub fn named_in_connection(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// The client headers that may leave gatewayd at all, for any upstream: the never-lists
/// removed, every header the client's `Connection` names (hop-by-hop, RFC 9110 §7.6.1),
/// and any header whose value contains the caller's own key (`client_token`).
pub fn forwardable(client: &HeaderMap, client_token: Option<&[u8]>) -> HeaderMap {
    forwardable_with(client, || client_token)
}

/// [`forwardable`], with the caller's key found only when a header passes the lists:
/// most requests carry no such header and never look for it.
pub fn forwardable_with<'a>(
    client: &'a HeaderMap,
    client_token: impl FnOnce() -> Option<&'a [u8]>,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    let has_connection = client.contains_key(header::CONNECTION);
    let mut client_token = Some(client_token);
    let mut token: Option<&[u8]> = None;
    for (name, value) in client {
        let n = name.as_str();
        if is_never_forwarded(n) || (has_connection && named_in_connection(client, n)) {
            continue;
        }
        if let Some(find) = client_token.take() {
            token = find();
        }
        let names_key = token.is_some_and(|t| !t.is_empty() && contains(value.as_bytes(), t));
        if !names_key {
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
    /// The upstream key and the static values read from `env:`/`file:` (the config's
    /// place for secrets): no response header containing one reaches a client.
    secrets: Vec<Box<[u8]>>,
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
                            "forward_headers entry {entry:?} is never forwarded (credentials, cookies, proxy, hop-by-hop and trace-context headers stay at the gateway)"
                        ));
                    }
                    extra_exact.push(name);
                }
            }
        }
        let mut fixed = static_headers(&config.headers)?;
        let mut secrets: Vec<Box<[u8]>> = secret_static_values(&config.headers, &fixed);
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
            secrets.push(key.as_bytes().into());
        }
        Ok(RequestHeaders {
            extra_exact,
            extra_prefixes,
            fixed,
            secrets,
        })
    }

    /// The secret values this upstream is sent: its key, and static values read from
    /// `env:`/`file:` of at least [`MIN_STATIC_SECRET`] bytes.
    pub fn secrets(&self) -> impl Iterator<Item = &[u8]> {
        self.secrets.iter().map(|s| &s[..])
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
    NEVER_FORWARD.contains(&name)
        || HOP_BY_HOP.contains(&name)
        || is_proxy_header(name)
        || NEVER_FORWARD_PREFIXES.iter().any(|p| name.starts_with(p))
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

/// Shorter static values are not treated as secrets: matching them would drop unrelated
/// response headers (a `Retry-After: 42` for an `x-org: env:ORG` of "42").
const MIN_STATIC_SECRET: usize = 8;

/// The resolved values of the static headers given as `env:NAME` or `file:PATH`.
fn secret_static_values(
    headers: &BTreeMap<String, HeaderSource>,
    fixed: &[(HeaderName, HeaderValue)],
) -> Vec<Box<[u8]>> {
    let from_secret_source = |name: &HeaderName| {
        headers.iter().any(|(configured, source)| {
            configured.eq_ignore_ascii_case(name.as_str())
                && (source.0.starts_with("env:") || source.0.starts_with("file:"))
        })
    };
    fixed
        .iter()
        .filter(|(name, value)| from_secret_source(name) && value.len() >= MIN_STATIC_SECRET)
        .map(|(_, value)| value.as_bytes().into())
        .collect()
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn headers_the_client_connection_names_stay_here() {
        let mut client = HeaderMap::new();
        client.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Stainless-Internal ,x-trace"),
        );
        client.insert("x-stainless-internal", HeaderValue::from_static("1"));
        client.insert("x-stainless-os", HeaderValue::from_static("Linux"));
        client.insert("x-trace", HeaderValue::from_static("t"));
        client.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        let out = forwardable(&client, None);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-stainless-os"]);
    }

    #[test]
    fn a_wildcard_forwards_no_spoofable_header() {
        let config: UpstreamConfig =
            toml::from_str("name = \"u\"\nbase_url = \"http://h/v1\"\nforward_headers = [\"*\"]\n")
                .unwrap();
        let policy = RequestHeaders::new(&config, Some("sk-up")).unwrap();
        let mut client = HeaderMap::new();
        for name in PROXY_HEADERS.into_iter().chain([
            "cookie2",
            "x-forwarded-anything",
            "traceparent",
            "tracestate",
        ]) {
            client.insert(name, HeaderValue::from_static("1.2.3.4"));
        }
        client.insert("x-my-custom", HeaderValue::from_static("yes"));
        let mut out = HeaderMap::new();
        policy.apply(&forwardable(&client, None), &mut out);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["accept", "authorization", "user-agent", "x-my-custom"]
        );
        assert_eq!(policy.secrets().collect::<Vec<_>>(), [b"sk-up"]);
    }
}
