//! The guard matrix: every host form the issue names, with an injected resolver.

use super::*;
use std::cell::Cell;

/// Answers from a fixed table and counts calls, so tests prove when no lookup happened.
struct FakeResolver {
    answers: Vec<(&'static str, Vec<IpAddr>)>,
    calls: Cell<usize>,
}

impl FakeResolver {
    fn new(answers: Vec<(&'static str, Vec<IpAddr>)>) -> Self {
        FakeResolver {
            answers,
            calls: Cell::new(0),
        }
    }
}

impl Resolver for FakeResolver {
    fn resolve(&self, name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.calls.set(self.calls.get() + 1);
        self.answers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, ips)| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host"))
    }
}

fn verdict(host: &str) -> Result<Vec<Exposure>, GuardError> {
    let resolver = FakeResolver::new(vec![]);
    let addrs = plan(host, 8642, &resolver)?;
    assert_eq!(resolver.calls.get(), 0, "{host} should not need a resolver");
    Ok(addrs.iter().map(exposure).collect())
}

#[test]
fn loopback_literals_are_local() {
    for host in [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "[::1]",
        "0:0:0:0:0:0:0:1",
        "::ffff:127.0.0.1",
        "[::ffff:127.0.0.1]",
    ] {
        assert_eq!(verdict(host).unwrap(), vec![Exposure::Local], "{host}");
        assert!(judge(&plan(host, 1, &FakeResolver::new(vec![])).unwrap(), false).is_ok());
    }
}

#[test]
fn everything_else_is_network() {
    for host in [
        "0.0.0.0",
        "::",
        "[::]",
        "::ffff:0.0.0.0",
        "10.0.0.1",
        "192.168.1.10",
        "8.8.8.8",
        "fe80::1%eth0",
        "fe80::1%2",
        "::1%1",
        "169.254.1.1",
        "2001:db8::1",
    ] {
        assert_eq!(verdict(host).unwrap(), vec![Exposure::Network], "{host}");
        let addrs = plan(host, 1, &FakeResolver::new(vec![])).unwrap();
        assert!(matches!(
            judge(&addrs, false),
            Err(GuardError::NetworkWithoutKey { .. })
        ));
        assert!(judge(&addrs, true).is_ok());
    }
}

#[test]
fn localhost_is_local_without_a_resolver() {
    for host in ["localhost", "LOCALHOST.", "LocalHost", "localhost."] {
        let exposures = verdict(host).unwrap();
        assert!(!exposures.is_empty());
        assert!(exposures.iter().all(|e| *e == Exposure::Local), "{host}");
    }
}

#[test]
fn a_name_is_network_if_any_address_is() {
    let resolver = FakeResolver::new(vec![(
        "api.internal",
        vec!["127.0.0.1".parse().unwrap(), "203.0.113.5".parse().unwrap()],
    )]);
    let addrs = plan("api.internal", 8642, &resolver).unwrap();
    assert_eq!(resolver.calls.get(), 1);
    assert_eq!(addrs.len(), 2);
    assert!(matches!(
        judge(&addrs, false),
        Err(GuardError::NetworkWithoutKey { addr }) if addr == "203.0.113.5:8642"
    ));
}

#[test]
fn a_name_resolving_only_to_loopback_is_local() {
    let resolver = FakeResolver::new(vec![("me.test", vec!["127.0.0.2".parse().unwrap()])]);
    let addrs = plan("me.test", 8642, &resolver).unwrap();
    assert!(judge(&addrs, false).is_ok());
}

#[test]
fn unresolvable_name_is_refused() {
    let resolver = FakeResolver::new(vec![]);
    assert!(matches!(
        plan("nowhere.invalid", 8642, &resolver),
        Err(GuardError::Unresolvable { .. })
    ));
    let empty = FakeResolver::new(vec![("empty.test", vec![])]);
    assert!(matches!(
        plan("empty.test", 8642, &empty),
        Err(GuardError::Unresolvable { .. })
    ));
}

#[test]
fn shorthand_ipv4_is_invalid_and_never_resolved() {
    for host in [
        "0",
        "127.1",
        "2130706433",
        "0x7f.1",
        "0x7f000001",
        "127.0.0.1.",
        "017700000001",
        "1.2.3.4.5",
        "127.0.0.01",
    ] {
        let resolver = FakeResolver::new(vec![]);
        assert!(
            matches!(
                plan(host, 1, &resolver),
                Err(GuardError::InvalidHost { .. })
            ),
            "{host}"
        );
        assert_eq!(resolver.calls.get(), 0, "{host} reached the resolver");
    }
}

#[test]
fn malformed_hosts_are_invalid() {
    for host in [
        "",
        "[::1",
        "[127.0.0.1]",
        "::1%",
        "fe80::1%e/th0",
        "exa mple.com",
        "-bad.example",
        "a..b",
        ":::1",
        "host:8080",
    ] {
        assert!(
            matches!(
                plan(host, 1, &FakeResolver::new(vec![])),
                Err(GuardError::InvalidHost { .. })
            ),
            "{host}"
        );
    }
}

#[test]
fn ports_are_kept() {
    let addrs = plan("127.0.0.1", 0, &FakeResolver::new(vec![])).unwrap();
    assert_eq!(addrs, vec!["127.0.0.1:0".parse::<SocketAddr>().unwrap()]);
}

#[test]
fn unix_sockets_with_paths_are_local_and_abstract_ones_need_a_key() {
    assert!(judge_unix(UnixSocketKind::Path, "/run/gatewayd.sock", false).is_ok());
    assert!(matches!(
        judge_unix(UnixSocketKind::Abstract, "@gatewayd", false),
        Err(GuardError::AbstractUnixWithoutKey { .. })
    ));
    assert!(judge_unix(UnixSocketKind::Abstract, "@gatewayd", true).is_ok());
}
