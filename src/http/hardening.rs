//! Request hardening before auth: header count, keyless loopback mode's defences against
//! browsers and proxies (DNS rebinding, CSRF, exposure), and the CORS policy.
//!
//! Keyless mode trusts "whoever can reach 127.0.0.1". A web page in the operator's
//! browser can reach it too — by rebinding its own name to 127.0.0.1, or by a cross-site
//! POST — and so can anyone a local reverse proxy forwards. Each check below closes one
//! of those doors; a gateway with a key does not need them (the key is the defence).

use std::net::IpAddr;
use std::time::Duration;

use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::body::require_json;
use super::peer::Peer;
use super::state::EdgeState;
use crate::wire::error::ApiError;

/// Headers a reverse proxy, CDN or tunnel adds. Their presence means the peer address is
/// not the client. (A proxy that adds none cannot be detected: see the README.) The one
/// list the upstream header policy also uses: none of them is ever forwarded upstream.
pub use crate::upstream::headers::PROXY_HEADERS;

/// The edge's check before routing: the header count, and keyless mode's refusals. Its
/// refusals still get the security headers (the edge adds them to every response).
pub fn refuse(state: &EdgeState, request: &Request) -> Option<ApiError> {
    if request.headers().len() > state.config.limits.max_headers {
        return Some(ApiError::HeadersTooLarge);
    }
    if state.keys.load().is_empty() {
        let bound = bound_loopback(&state.config.host);
        if let Err(refused) = check_keyless(request, &state.config.cors_origins, bound) {
            return Some(refused);
        }
    }
    None
}

/// tower-http's CORS layer adds Expose-Headers (and preflight Allow-*) even for an origin
/// it does not allow; an origin that is not allowed gets no Access-Control-* at all.
pub fn strip_cors_unless_allowed(response: &mut Response) {
    let headers = response.headers_mut();
    if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        return;
    }
    let cors: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
}

/// Keyless loopback mode: only a direct, local, non-browser-forged request gets through.
fn check_keyless(
    request: &Request,
    cors_origins: &[String],
    bound: Option<IpAddr>,
) -> Result<(), ApiError> {
    // Fail closed: a request without a recorded peer did not come through our server.
    let local_peer = match request.extensions().get::<Peer>() {
        Some(Peer::Tcp(addr)) => addr.ip().to_canonical().is_loopback(),
        Some(Peer::Unix) => true,
        None => false,
    };
    if !local_peer {
        return Err(ApiError::Forbidden(
            "This gatewayd has no API key, so it serves only clients on this machine. \
             To serve other machines, configure a key (API_SERVER_KEY)."
                .into(),
        ));
    }
    let headers = request.headers();
    if PROXY_HEADERS.iter().any(|name| headers.contains_key(*name)) {
        return Err(ApiError::Forbidden(
            "This request came through a proxy (it carries a Forwarded, X-Forwarded-*, \
             X-Real-IP, X-Client-IP, True-Client-IP, CF-Connecting-IP, X-Original-URL, \
             X-Rewrite-URL or Via header). A gatewayd without an API key serves only direct \
             local clients; a proxied or exposed gatewayd needs a key (API_SERVER_KEY)."
                .into(),
        ));
    }
    if !host_is_local(request, bound) {
        return Err(ApiError::Forbidden(
            "This gatewayd has no API key and answers only to the Host names localhost, \
             127.0.0.1 and [::1] (a defence against DNS rebinding). To use another name, \
             configure a key (API_SERVER_KEY)."
                .into(),
        ));
    }
    let origin_allowed = headers.get_all(header::ORIGIN).iter().all(|origin| {
        cors_origins
            .iter()
            .any(|o| o.as_bytes() == origin.as_bytes())
    });
    if !origin_allowed {
        return Err(ApiError::Forbidden(
            "Requests from this browser origin are refused: it is not listed in \
             [server] cors_origins."
                .into(),
        ));
    }
    // A cross-site form or `fetch(..., {mode: "no-cors"})` can only send text/plain,
    // form or multipart bodies; insisting on JSON for every body stops them all.
    let may_carry_body = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    );
    if may_carry_body && !request.body().is_end_stream() {
        require_json(headers)?;
    }
    Ok(())
}

/// Every authority the request names (Host headers and, for HTTP/2 or absolute-form
/// requests, the URI authority) must be local; naming none is refused.
fn host_is_local(request: &Request, bound: Option<IpAddr>) -> bool {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return false;
    }
    let host = first.map(|v| v.to_str().is_ok_and(|v| is_local_authority(v, bound)));
    let uri = request
        .uri()
        .authority()
        .map(|a| is_local_authority(a.as_str(), bound));
    match (host, uri) {
        (None, None) => false,
        (host, uri) => host.unwrap_or(true) && uri.unwrap_or(true),
    }
}

/// The configured bind host, when it is a loopback address literal (e.g. 127.0.0.2).
fn bound_loopback(host: &str) -> Option<IpAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().ok().filter(IpAddr::is_loopback)
}

/// Is `authority` (`host[:port]`) `localhost`, `127.0.0.1`, `[::1]` or `bound`? Any
/// port; case-insensitive; one trailing dot allowed. Pure; never panics.
pub fn is_local_authority(authority: &str, bound: Option<IpAddr>) -> bool {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        let Ok(ip) = inside.parse::<std::net::Ipv6Addr>() else {
            return false;
        };
        return (after.is_empty() || after.strip_prefix(':').is_some_and(is_port))
            && (ip.is_loopback() || bound == Some(IpAddr::V6(ip)));
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if !port.is_none_or(is_port) {
        return false;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => ip == std::net::Ipv4Addr::LOCALHOST || bound == Some(IpAddr::V4(ip)),
        Err(_) => false,
    }
}

/// RFC 3986 `port = *DIGIT`, bounded to what a port can be.
fn is_port(port: &str) -> bool {
    port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// The CORS layer, or `None` (no Access-Control-* header at all) when no origin is
/// configured. Exact origins only; `*` is refused at startup without a key.
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-session-id"),
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                HeaderName::from_static("x-session-id"),
                HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The startup check of `[server] cors_origins` (exit 78 when refused). Each entry is
/// an exact origin `scheme://host[:port]`; `*` alone is allowed only with a key.
pub fn check_cors_origins(origins: &[String], keyless: bool) -> Result<(), String> {
    if origins.iter().any(|o| o == "*") {
        if keyless {
            return Err(
                "cors_origins contains \"*\" but no API key is configured: every web \
                        page the operator opens could then call this gatewayd. List exact \
                        origins (e.g. \"http://localhost:3000\") or configure a key"
                    .into(),
            );
        }
        if origins.len() > 1 {
            return Err("cors_origins: \"*\" already allows every origin; use it alone".into());
        }
        return Ok(());
    }
    for origin in origins {
        if !is_origin(origin) {
            return Err(format!(
                "cors_origins entry {origin:?} is not an origin: write scheme://host[:port] \
                 with no path, trailing slash, or \"null\" (browsers send exactly that form)"
            ));
        }
    }
    Ok(())
}

/// `scheme://host[:port]` as a browser serialises it in the Origin header.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    let rest_ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    scheme_ok && rest_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_authorities() {
        for ok in [
            "localhost",
            "LOCALHOST:8642",
            "localhost.",
            "localhost.:1",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.0.0.1.",
            "[::1]",
            "[::1]:8642",
            "localhost:",
        ] {
            assert!(is_local_authority(ok, None), "{ok}");
        }
        for bad in [
            "",
            "evil.com",
            "evil.com:8642",
            "0.0.0.0",
            "0.0.0.0:8642",
            "127.0.0.1.nip.io",
            "localhost.evil.com",
            "127.0.0.2",
            "127.1",
            "::1",
            "[::1",
            "[::1]x",
            "[::2]",
            "localhost:99999999",
            "localhost:80:80",
            "localhost/x",
            "localhost?x",
            "localhost..",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(!is_local_authority(bad, None), "{bad}");
        }
    }

    #[test]
    fn the_bound_loopback_address_is_local() {
        let bound = bound_loopback("127.0.0.2");
        assert!(is_local_authority("127.0.0.2:9", bound));
        assert_eq!(bound_loopback("0.0.0.0"), None);
        assert_eq!(bound_loopback("192.168.1.2"), None);
        assert_eq!(bound_loopback("[::1]"), Some("::1".parse().unwrap()));
    }

    #[test]
    fn cors_origin_rules() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_cors_origins(&list(&["*"]), true).is_err());
        assert!(check_cors_origins(&list(&["*"]), false).is_ok());
        assert!(check_cors_origins(&list(&["*", "http://a.b"]), false).is_err());
        assert!(check_cors_origins(&list(&["http://localhost:3000"]), true).is_ok());
        assert!(check_cors_origins(&list(&["https://app.example.org"]), false).is_ok());
        for bad in [
            "null",
            "http://a.b/",
            "a.b",
            "http://a.b/path",
            "http:// a.b",
            "",
        ] {
            assert!(check_cors_origins(&list(&[bad]), false).is_err(), "{bad}");
        }
        assert!(check_cors_origins(&[], true).is_ok());
    }
}
