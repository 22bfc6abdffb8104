//! `[server] trusted_proxies` and `forwarded_header`: which peers may name the client, and
//! in which header.

use std::net::IpAddr;

use ipnet::IpNet;

/// Which header a trusted proxy writes the client address into. Only that one is read:
/// proxies pass the *other* header through from the client untouched, so reading both
/// would let a client pick its own address (or fall back to the proxy's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx `$proxy_add_x_forwarded_for`, HAProxy, Envoy, Caddy,
    /// Traefik, cloud load balancers).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=…`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// `[server] trusted_proxies`: CIDRs (`10.0.0.0/8`) or single addresses (`::1`). A
/// prefix of length 0 would let every client name its own address, so it is refused.
pub fn parse_trusted(entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|entry| {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "[server] trusted_proxies entry {entry:?} is not a CIDR such as \
                         \"10.0.0.0/8\" or an address such as \"::1\""
                    )
                })?;
            if net.prefix_len() == 0 {
                return Err(format!(
                    "[server] trusted_proxies entry {entry:?} trusts every address, so any \
                     client could pick its own address with X-Forwarded-For. List only your \
                     proxies' addresses"
                ));
            }
            Ok(canonical(net).trunc())
        })
        .collect()
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it means,
/// since peers are compared in canonical form.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .addr()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(net, IpNet::V4),
        other => other,
    }
}
