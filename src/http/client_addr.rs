//! Who the client is: the TCP peer, or, only when that peer is a trusted proxy, the address the proxy forwarded.
//!
//! The result ([`ClientAddr`]) is what the failed-auth throttle counts, and what request
//! logs show. Forwarding headers from any other peer are ignored here (and keyless mode
//! refuses them outright, see `hardening`).

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use super::peer::Peer;
use crate::config::ForwardedHeader;

/// The client's address, put into every request's extensions by the edge (`edge.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Is `ip` (IPv4-mapped IPv6 counts as IPv4) inside one of `trusted`?
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client address for a request from `peer`. Behind a trusted proxy it is the
/// right-most address in the configured forwarding header that is not itself a trusted
/// proxy. When the chain cannot be read where it matters, the proxy's own address is
/// used: a client must never get to pick its address. Pure; never panics.
pub fn resolve(
    peer: Option<Peer>,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ForwardedHeader,
) -> IpAddr {
    let peer_ip = match peer {
        Some(Peer::Tcp(addr)) => addr.ip().to_canonical(),
        Some(Peer::Unix) | None => return IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    if !is_trusted(peer_ip, trusted) {
        return peer_ip;
    }
    let chain = match header {
        ForwardedHeader::XForwardedFor => chain(headers, "x-forwarded-for", whole),
        ForwardedHeader::Forwarded => chain(headers, "forwarded", forwarded_for),
    };
    chain
        .and_then(|c| rightmost_untrusted(&c, trusted))
        .unwrap_or(peer_ip)
}

/// Every item of every `name` header, in order, each mapped by `item` and parsed as an
/// address (`None` where it is not one). Items are split on the raw bytes, so bytes a
/// client put into its own item (non-UTF-8 included) spoil only that item, never the
/// address its proxy appended. `None` when the header is absent.
fn chain(
    headers: &HeaderMap,
    name: &str,
    item: impl Fn(&str) -> Option<&str>,
) -> Option<Vec<Option<IpAddr>>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut addrs = Vec::new();
    for value in values {
        addrs.extend(value.as_bytes().split(|b| *b == b',').map(|part| {
            std::str::from_utf8(part)
                .ok()
                .and_then(&item)
                .and_then(parse_node)
        }));
    }
    Some(addrs)
}

/// An X-Forwarded-For item is the address itself.
fn whole(item: &str) -> Option<&str> {
    Some(item)
}

/// The `for=` value of one Forwarded element (RFC 7239), if it has one.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`,
/// `[2001:db8::1]:443`, optionally in double quotes. `unknown` and `_hidden` are not.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    node.parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

/// Walking from the right (the hop nearest us), the first address that is not a trusted
/// proxy. `None` if an entry on the way cannot be read; the left-most entry if every
/// entry is trusted.
fn rightmost_untrusted(chain: &[Option<IpAddr>], trusted: &[IpNet]) -> Option<IpAddr> {
    for entry in chain.iter().rev() {
        let ip = (*entry)?;
        if !is_trusted(ip, trusted) {
            return Some(ip);
        }
    }
    chain.first().copied().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_trusted;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn from(ip: &str) -> Option<Peer> {
        Some(Peer::Tcp(std::net::SocketAddr::new(
            ip.parse().unwrap(),
            5000,
        )))
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_peers() {
        let trusted = parse_trusted(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            resolve(from("203.0.113.1"), &h, &trusted, XFF),
            ip("203.0.113.1")
        );
        assert_eq!(
            resolve(from("10.1.2.3"), &h, &trusted, XFF),
            ip("198.51.100.7")
        );
        assert_eq!(resolve(from("::1"), &h, &trusted, XFF), ip("198.51.100.7"));
        assert_eq!(
            resolve(from("10.1.2.3"), &headers(&[]), &trusted, XFF),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn the_rightmost_untrusted_address_wins_so_spoofed_entries_are_skipped() {
        let trusted = parse_trusted(&["10.0.0.0/8".into()]).unwrap();
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 198.51.100.7"),
            ("x-forwarded-for", "10.0.0.5"),
        ]);
        assert_eq!(
            resolve(from("10.0.0.9"), &h, &trusted, XFF),
            ip("198.51.100.7")
        );
        let garbage_left = headers(&[("x-forwarded-for", "not-an-ip, 198.51.100.7")]);
        assert_eq!(
            resolve(from("10.0.0.9"), &garbage_left, &trusted, XFF),
            ip("198.51.100.7")
        );
        let garbage_right = headers(&[("x-forwarded-for", "198.51.100.7, junk")]);
        assert_eq!(
            resolve(from("10.0.0.9"), &garbage_right, &trusted, XFF),
            ip("10.0.0.9")
        );
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.1, 10.0.0.2")]);
        assert_eq!(
            resolve(from("10.0.0.9"), &all_trusted, &trusted, XFF),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_header_forms() {
        let trusted = parse_trusted(&["10.0.0.0/8".into()]).unwrap();
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, For=\"[2001:db8:cafe::17]:4711\";by=10.0.0.1",
        )]);
        assert_eq!(
            resolve(from("10.0.0.9"), &h, &trusted, FWD),
            ip("2001:db8:cafe::17")
        );
        let v4_port = headers(&[("forwarded", "for=\"192.0.2.43:47011\"")]);
        assert_eq!(
            resolve(from("10.0.0.9"), &v4_port, &trusted, FWD),
            ip("192.0.2.43")
        );
        let hidden = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(
            resolve(from("10.0.0.9"), &hidden, &trusted, FWD),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn only_the_configured_header_counts_so_a_client_cannot_pick_its_bucket() {
        let trusted = parse_trusted(&["10.0.0.0/8".into()]).unwrap();
        // The proxy maintains X-Forwarded-For; the client's own Forwarded passes through.
        let both = headers(&[
            ("forwarded", "for=192.0.2.1"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(
            resolve(from("10.0.0.9"), &both, &trusted, XFF),
            ip("198.51.100.7")
        );
        // And the other way round for a proxy that writes Forwarded.
        assert_eq!(
            resolve(from("10.0.0.9"), &both, &trusted, FWD),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn bytes_a_client_adds_spoil_only_its_own_item() {
        let trusted = parse_trusted(&["10.0.0.0/8".into()]).unwrap();
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff, 198.51.100.7").unwrap(),
        );
        assert_eq!(
            resolve(from("10.0.0.9"), &h, &trusted, XFF),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn trusted_proxy_entries() {
        assert!(parse_trusted(&["0.0.0.0/0".into()]).is_err());
        assert!(parse_trusted(&["::/0".into()]).is_err());
        assert!(parse_trusted(&["10.0.0.0/33".into()]).is_err());
        assert!(parse_trusted(&["proxy.local".into()]).is_err());
        let nets = parse_trusted(&["10.1.2.3/8".into(), "::ffff:127.0.0.1".into()]).unwrap();
        assert_eq!(nets[0].to_string(), "10.0.0.0/8");
        assert!(!is_trusted(ip("11.0.0.1"), &nets));
        assert!(is_trusted(ip("::ffff:10.9.9.9"), &nets));
        assert!(is_trusted(ip("127.0.0.1"), &nets));
    }
}
