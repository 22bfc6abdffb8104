//! Who the limits count: the caller (a key's name, with its per-key overrides) and the
//! client-address bucket that per-address limits and the failed-auth throttle use.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::keys::ClientKey;

/// Who is calling: the key's name, or "local" in keyless loopback mode. Sessions and
/// rate limits are scoped by this name.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: Arc<str>,
    /// Position of the key in the key set at the time of the request (None when keyless).
    pub key: Option<Arc<ClientKey>>,
}

/// The unit per-address limits count in: one IPv4 address, or one IPv6 /64 (a single
/// host usually holds a whole /64, so counting single v6 addresses would be no limit).
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => match ipnet::Ipv6Net::new(v6, 64) {
            Ok(net) => IpAddr::V6(net.network()),
            Err(_) => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn v6_addresses_share_their_64_prefix() {
        let a = ip("2001:db8:1:2:aaaa::1");
        assert_eq!(bucket(a), bucket(ip("2001:db8:1:2:bbbb::2")));
        assert_ne!(bucket(a), bucket(ip("2001:db8:1:3::1")));
        assert_eq!(bucket(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }
}
