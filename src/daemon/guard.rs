//! The startup guard: which addresses a host string means, and whether gatewayd may serve on them.
//!
//! Pure logic, no sockets. Startup calls [`plan`] before it creates any socket, and
//! [`judge`] again on every socket's real `local_addr()` before it listens.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Resolves a host name. Behind a trait so tests inject answers and no test needs DNS.
pub trait Resolver {
    fn resolve(&self, name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system resolver (getaddrinfo), used once at startup.
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        Ok((name, port).to_socket_addrs()?.collect())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("--host {host:?} is not a valid address: {reason}. Use a dotted-quad IPv4 address, an IPv6 address, 'localhost' or a host name")]
    InvalidHost { host: String, reason: &'static str },
    #[error("--host {host:?} could not be resolved; refusing to start rather than guess")]
    Unresolvable { host: String },
    #[error("refusing to serve on the abstract or unnamed Unix socket {name}: any process in this network namespace can reach it and no strong API key is configured. Fix: set API_SERVER_KEY to a key from `gatewayd keygen`, or use a Unix socket with a filesystem path")]
    AbstractUnixWithoutKey { name: String },
    #[error("refusing to serve on {addr}: it is reachable from the network and no strong API key is configured. Anyone who can reach it could use your upstream credentials. Fix: set API_SERVER_KEY to a key from `gatewayd keygen`, or bind to 127.0.0.1")]
    NetworkWithoutKey { addr: String },
}

/// How the guard sees an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Reachable only from this machine.
    Local,
    /// Reachable from some network: wildcard, private, link-local or public.
    Network,
}

/// Local means loopback after unwrapping IPv4-mapped IPv6, and no IPv6 scope id.
pub fn exposure(addr: &SocketAddr) -> Exposure {
    if let SocketAddr::V6(v6) = addr {
        if v6.scope_id() != 0 {
            return Exposure::Network;
        }
    }
    if addr.ip().to_canonical().is_loopback() {
        Exposure::Local
    } else {
        Exposure::Network
    }
}

/// The addresses a `--host` value stands for, with `port`. Never resolves `localhost`
/// or IP literals; any other name is resolved exactly once.
pub fn plan(host: &str, port: u16, resolver: &dyn Resolver) -> Result<Vec<SocketAddr>, GuardError> {
    let invalid = |reason| GuardError::InvalidHost {
        host: host.to_string(),
        reason,
    };
    if host.is_empty() {
        return Err(invalid("it is empty"));
    }
    if let Some(addr) = parse_ip_literal(host).map_err(invalid)? {
        return Ok(vec![addr_with_port(addr, port)]);
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.eq_ignore_ascii_case("localhost") {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    if !is_valid_hostname(name) {
        return Err(invalid("it is neither an IP address nor a valid DNS name"));
    }
    if ends_in_number(name) {
        return Err(invalid(
            "shorthand or numeric IPv4 forms like '127.1', '0x7f.1' or '2130706433' are ambiguous",
        ));
    }
    let mut addrs = resolver
        .resolve(name, port)
        .map_err(|_| GuardError::Unresolvable {
            host: host.to_string(),
        })?;
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(GuardError::Unresolvable {
            host: host.to_string(),
        });
    }
    Ok(addrs)
}

/// The guard's verdict over every address gatewayd would serve on.
pub fn judge(addrs: &[SocketAddr], strong_key_configured: bool) -> Result<(), GuardError> {
    if strong_key_configured {
        return Ok(());
    }
    match addrs.iter().find(|a| exposure(a) == Exposure::Network) {
        Some(addr) => Err(GuardError::NetworkWithoutKey {
            addr: addr.to_string(),
        }),
        None => Ok(()),
    }
}

/// How a Unix domain socket is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixSocketKind {
    /// A filesystem path: file permissions decide who may connect. Local.
    Path,
    /// An abstract name (or unnamed): no permissions at all, so it needs a key.
    Abstract,
}

/// The guard's verdict on an inherited Unix socket.
pub fn judge_unix(
    kind: UnixSocketKind,
    name: &str,
    strong_key_configured: bool,
) -> Result<(), GuardError> {
    match kind {
        UnixSocketKind::Path => Ok(()),
        UnixSocketKind::Abstract if strong_key_configured => Ok(()),
        UnixSocketKind::Abstract => Err(GuardError::AbstractUnixWithoutKey {
            name: name.to_string(),
        }),
    }
}

/// An IPv4 dotted quad, or an IPv6 address with or without brackets and an optional
/// `%scope`. `Ok(None)` means "not an IP literal"; `Err` means a malformed literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpLiteral {
    pub ip: IpAddr,
    pub scope_id: Option<ScopeId>,
}

/// An IPv6 zone: numeric ids bind; interface names are recognised only to judge them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeId {
    Numeric(u32),
    Named,
}

fn parse_ip_literal(host: &str) -> Result<Option<IpLiteral>, &'static str> {
    let bracketed = host.strip_prefix('[').map(|h| h.strip_suffix(']'));
    let inner = match bracketed {
        Some(Some(inner)) => inner,
        Some(None) => return Err("an opening '[' has no closing ']'"),
        None => host,
    };
    if !inner.contains(':') {
        if bracketed.is_some() {
            return Err("brackets may only hold an IPv6 address");
        }
        return Ok(inner.parse::<Ipv4Addr>().ok().map(|v4| IpLiteral {
            ip: IpAddr::V4(v4),
            scope_id: None,
        }));
    }
    let (addr, zone) = match inner.split_once('%') {
        Some((addr, zone)) => (addr, Some(zone)),
        None => (inner, None),
    };
    let v6: Ipv6Addr = addr.parse().map_err(|_| "it is not a valid IPv6 address")?;
    let scope_id = match zone {
        None => None,
        Some("") => return Err("its IPv6 zone is empty"),
        Some(z) => Some(match z.parse::<u32>() {
            Ok(n) => ScopeId::Numeric(n),
            Err(_)
                if z.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                ScopeId::Named
            }
            Err(_) => return Err("its IPv6 zone is malformed"),
        }),
    };
    Ok(Some(IpLiteral {
        ip: IpAddr::V6(v6),
        scope_id,
    }))
}

fn addr_with_port(literal: IpLiteral, port: u16) -> SocketAddr {
    match (literal.ip, literal.scope_id) {
        (IpAddr::V6(v6), Some(scope)) => {
            // A named zone cannot be bound without an interface lookup; u32::MAX marks it
            // as scoped so the guard still sees it as network-reachable, and bind fails loudly.
            let id = match scope {
                ScopeId::Numeric(0) | ScopeId::Named => u32::MAX,
                ScopeId::Numeric(n) => n,
            };
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, id))
        }
        (ip, _) => SocketAddr::new(ip, port),
    }
}

/// RFC 1123 host name: labels of letters, digits and hyphens, 1..=63 bytes, total <= 253.
fn is_valid_hostname(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// WHATWG's "ends in a number": a last label of digits or 0x-hex means the name is an
/// attempt at an IPv4 address, which getaddrinfo would read in inet_aton's loose forms.
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()),
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
