//! The startup guard: `plan` on an arbitrary `--host` string with a fake resolver, then
//! `judge` on whatever it planned. The whole input (if UTF-8) is the host; the port is 8080.
#![no_main]

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use gatewayd::guard::{judge, plan, GuardError, Resolver};
use libfuzzer_sys::fuzz_target;

const PORT: u16 = 8080;

/// Answers without DNS and records what it was asked. Which answer depends on the
/// name's length, so every branch of `judge` is reachable from resolved names too.
#[derive(Default)]
struct FakeResolver {
    calls: Cell<usize>,
    asked: RefCell<Option<String>>,
}

impl Resolver for FakeResolver {
    fn resolve(&self, name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.calls.set(self.calls.get() + 1);
        *self.asked.borrow_mut() = Some(name.to_string());
        let v4 = |ip: Ipv4Addr| SocketAddr::new(IpAddr::V4(ip), port);
        let v6 = |ip: Ipv6Addr, scope| SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope));
        Ok(match name.len() % 5 {
            0 => vec![v4(Ipv4Addr::LOCALHOST), v4(Ipv4Addr::new(203, 0, 113, 5))],
            1 => vec![
                v6(Ipv6Addr::LOCALHOST, 0),
                v6(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 0),
                v4(Ipv4Addr::LOCALHOST),
                v4(Ipv4Addr::LOCALHOST),
            ],
            2 => return Err(std::io::Error::other("fake resolver: no such host")),
            3 => vec![],
            _ => vec![v6(Ipv6Addr::LOCALHOST, 3)],
        })
    }
}

fn network_reachable(a: &SocketAddr) -> bool {
    let scoped = matches!(a, SocketAddr::V6(v6) if v6.scope_id() != 0);
    scoped || !a.ip().to_canonical().is_loopback()
}

fuzz_target!(|data: &[u8]| {
    let Ok(host) = std::str::from_utf8(data) else {
        return;
    };
    let resolver = FakeResolver::default();
    let result = plan(host, PORT, &resolver);
    let calls = resolver.calls.get();
    assert!(calls <= 1, "resolver called {calls} times for {host:?}");

    // IP literals never reach the resolver and mean exactly themselves.
    if let Ok(ip) = host.parse::<IpAddr>() {
        assert_eq!(calls, 0, "resolver called for IP literal {host:?}");
        assert_eq!(result, Ok(vec![SocketAddr::new(ip, PORT)]), "{host:?}");
    }

    // Loose numeric IPv4 forms ("127.1", "2130706433", "127.0.0.01") are refused.
    let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if numeric && host.parse::<Ipv4Addr>().is_err() {
        assert!(
            result.is_err(),
            "numeric non-dotted-quad {host:?} planned as {result:?}"
        );
        assert_eq!(calls, 0, "resolver asked about numeric {host:?}");
    }

    // Whatever reaches the resolver is a plain RFC 1123 name, never an IP-ish string.
    if let Some(name) = resolver.asked.borrow().as_deref() {
        assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
            "resolver asked about {name:?}"
        );
        assert!(
            !name.eq_ignore_ascii_case("localhost"),
            "resolved localhost"
        );
        assert!(
            name.parse::<IpAddr>().is_err(),
            "resolved IP literal {name:?}"
        );
        let last = name.rsplit('.').next().unwrap_or(name);
        assert!(
            !last.bytes().all(|b| b.is_ascii_digit()),
            "resolved numeric name {name:?}"
        );
        assert_eq!(host.strip_suffix('.').unwrap_or(host), name);
    }

    match &result {
        Ok(addrs) => {
            assert!(!addrs.is_empty(), "empty plan for {host:?}");
            assert!(addrs.iter().all(|a| a.port() == PORT), "{addrs:?}");
            let exposed = addrs.iter().any(network_reachable);
            let verdict = judge(addrs, false);
            if exposed {
                assert!(
                    matches!(verdict, Err(GuardError::NetworkWithoutKey { .. })),
                    "{host:?}: network-reachable {addrs:?} judged {verdict:?}"
                );
            } else {
                assert_eq!(verdict, Ok(()), "{host:?}: loopback-only {addrs:?} refused");
            }
            assert_eq!(judge(addrs, true), Ok(()));
        }
        Err(GuardError::Unresolvable { .. }) => assert_eq!(calls, 1, "{host:?}"),
        Err(GuardError::InvalidHost { .. }) => assert_eq!(calls, 0, "{host:?}"),
        // Verdicts belong to judge/judge_unix, never to plan.
        Err(other) => panic!("plan returned a verdict error for {host:?}: {other:?}"),
    }
});
