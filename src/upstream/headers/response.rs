//! Upstream → client headers: the end-to-end headers an upstream answers with, minus what
//! is hop-by-hop, sets state, names the upstream's host or a proxy's, or carries a secret.
//!
//! Built once per upstream; per response it is one pass that allocates only the client's
//! header map (no header on its own costs an allocation, dropped or kept).

use ::http::header::{HeaderMap, HeaderName, HeaderValue};
use memchr::memmem::Finder;

use super::{is_proxy_header, named_in_connection, HOP_BY_HOP};

/// Upstream response headers never passed to the client, besides the hop-by-hop and
/// proxy lists: framing gatewayd sets itself, state and identity of the upstream, and
/// policies that are gatewayd's own (its `Cache-Control: no-store`, CORS, HSTS, session
/// header).
const NEVER_PASS: [&str; 15] = [
    "content-length",
    "set-cookie",
    "set-cookie2",
    "server",
    "alt-svc",
    "date",
    "cache-control",
    "strict-transport-security",
    "www-authenticate",
    "x-session-id",
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
    "x-request-id",
    "proxy-authentication-info",
];

/// Headers holding a URI reference, passed on only when it is relative (no scheme, no
/// authority): an absolute one names the upstream's host, or a host behind it.
const URI_HEADERS: [&str; 2] = ["location", "content-location"];
/// Headers gatewayd adds to an upstream answer on its way out: request id, three
/// security headers, cache control, session id, and a spare.
const ADDED_ON_THE_WAY_OUT: usize = 7;

/// The upstream's request id, renamed so gatewayd's own `X-Request-Id` stays.
pub const UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// One upstream's response-header policy.
pub struct ResponseHeaders {
    /// The upstream's host, lowercase: a header whose value names it is not passed.
    host: Box<[u8]>,
    /// The upstream's key and other secrets it is sent: a header whose value contains
    /// one is not passed. (Not `Debug`: the finders hold the secrets.)
    secrets: Vec<Finder<'static>>,
}

impl ResponseHeaders {
    /// `host` is the upstream's host name; empty secrets are ignored.
    pub fn new<'a>(host: &str, secrets: impl IntoIterator<Item = &'a [u8]>) -> Self {
        ResponseHeaders {
            host: host.to_ascii_lowercase().into_bytes().into(),
            secrets: secrets
                .into_iter()
                .filter(|s| !s.is_empty())
                .map(|s| Finder::new(s).into_owned())
                .collect(),
        }
    }

    /// The upstream response headers a client sees.
    pub fn pass_through(&self, upstream: &HeaderMap) -> HeaderMap {
        // Room for what is added on the way out (request id, security headers, cache
        // control, session id): the map is not grown again.
        let mut out = HeaderMap::with_capacity(upstream.len() + ADDED_ON_THE_WAY_OUT);
        let has_connection = upstream.contains_key(::http::header::CONNECTION);
        for (name, value) in upstream {
            let n = name.as_str();
            if n == "x-request-id" {
                out.append(UPSTREAM_REQUEST_ID, value.clone());
                continue;
            }
            let dropped = NEVER_PASS.contains(&n)
                || HOP_BY_HOP.contains(&n)
                || is_proxy_header(n)
                || n.starts_with("access-control-")
                || (has_connection && named_in_connection(upstream, n))
                || (URI_HEADERS.contains(&n) && !is_relative_reference(value.as_bytes()))
                || self.leaks(value);
            if !dropped {
                out.append(name.clone(), value.clone());
            }
        }
        out
    }

    /// Does `value` contain a secret, or name the upstream's host?
    fn leaks(&self, value: &HeaderValue) -> bool {
        let value = value.as_bytes();
        self.secrets.iter().any(|s| s.find(value).is_some())
            || contains_ignoring_case(value, &self.host)
    }
}

/// A relative reference (RFC 3986 §4.2) a browser also reads as one: no scheme before
/// the first `/`, `?` or `#`, no `//` authority, and no byte a browser strips or folds
/// into a slash (whitespace, controls, `\`) that could make it one.
fn is_relative_reference(value: &[u8]) -> bool {
    let plain = value.iter().all(|&b| b > b' ' && b != 0x7f && b != b'\\');
    let no_authority = !value.starts_with(b"//");
    let no_scheme = value
        .iter()
        .find(|&&b| matches!(b, b':' | b'/' | b'?' | b'#'))
        .is_none_or(|&b| b != b':');
    plain && no_authority && no_scheme
}

/// `needle` (lowercase) in `haystack`, ASCII case ignored, without a lowercased copy.
fn contains_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && needle.len() <= haystack.len()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(out: &HeaderMap) -> Vec<&str> {
        out.keys().map(|k| k.as_str()).collect()
    }

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
            "x-where",
            HeaderValue::from_static("https://API.example.net/v1/x"),
        );
        upstream.insert("content-type", HeaderValue::from_static("application/json"));
        let policy = ResponseHeaders::new("api.example.net", []);
        assert_eq!(
            names(&policy.pass_through(&upstream)),
            [
                "retry-after",
                "x-ratelimit-remaining-requests",
                "x-upstream-request-id",
                "content-type"
            ]
        );
    }

    #[test]
    fn secrets_proxies_and_absolute_locations_stay_behind() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("x-upstream-key-echo", "Bearer sk-upstream-123"),
            ("x-basic-echo", "dXNlcjpwYXNz"),
            ("x-forwarded-host", "internal.example"),
            ("x-forwarded-anything", "1"),
            ("forwarded", "for=10.0.0.1"),
            ("x-real-ip", "10.0.0.1"),
            ("via", "1.1 internal"),
            ("content-location", "https://other.example/x"),
            ("x-kept", "sk-upstream"),
        ] {
            upstream.append(name, HeaderValue::from_static(value));
        }
        upstream.append(
            "location",
            HeaderValue::from_static("http://localhost:19002/v1"),
        );
        let policy = ResponseHeaders::new("127.0.0.1", [&b"sk-upstream-123"[..], b"dXNlcjpwYXNz"]);
        assert_eq!(names(&policy.pass_through(&upstream)), ["x-kept"]);
    }

    #[test]
    fn relative_references() {
        for relative in ["/v1/responses/r1", "r1", "?page=2", "#x", "a/b:c", "/a:b"] {
            assert!(is_relative_reference(relative.as_bytes()), "{relative}");
        }
        for absolute in [
            "http://localhost:19002/v1",
            "HTTPS://h/x",
            "//evil.example/x",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            " //evil.example",
            "javascript:alert(1)",
            "mailto:x@y",
        ] {
            assert!(!is_relative_reference(absolute.as_bytes()), "{absolute:?}");
        }
    }
}
