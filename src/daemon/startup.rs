//! Opening the listeners (one set, or one per worker): the guard judges the host before any socket exists, then each bound address before listen().

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

use super::guard::{self, GuardError, Resolver};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Refused(#[from] GuardError),
    #[error("cannot bind {addr}: the address is already in use. Stop the other process or choose another --port")]
    AddressInUse { addr: SocketAddr },
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use the socket systemd passed at position {index}: {source}")]
    Inherited {
        index: usize,
        source: std::io::Error,
    },
}

impl StartupError {
    /// 78 (EX_CONFIG) for refusals, so systemd's RestartPreventExitStatus=78 stops a
    /// restart loop; 1 for runtime failures such as a port in use.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::Refused(_) => 78,
            _ => 1,
        }
    }
}

/// The addresses `serve` would bind, after the guard has accepted them. No socket is
/// created here; `check-config` uses exactly this.
pub fn plan(
    host: &str,
    port: u16,
    strong_key: bool,
    resolver: &dyn Resolver,
) -> Result<Vec<SocketAddr>, GuardError> {
    let addrs = guard::plan(host, port, resolver)?;
    guard::judge(&addrs, strong_key)?;
    Ok(addrs)
}

/// Binds every planned address. With port 0, the first bind picks the port and the rest
/// reuse it. `localhost`'s ::1 is skipped when the machine has no IPv6 loopback.
pub fn bind(addrs: &[SocketAddr], strong_key: bool) -> Result<Vec<TcpListener>, StartupError> {
    bind_with(addrs, strong_key, false)
}

/// `copies` sets of listeners on the planned addresses, one set per worker, all with
/// SO_REUSEPORT so the kernel spreads new connections over them. The first set is bound
/// as [`bind`] binds (port 0 picks the port); the others bind exactly what it got.
pub fn bind_copies(
    addrs: &[SocketAddr],
    strong_key: bool,
    copies: usize,
) -> Result<Vec<Vec<TcpListener>>, StartupError> {
    // SO_REUSEPORT would let this process share a port another gatewayd with workers
    // already serves; a plain bind first keeps "address already in use" as it was.
    for addr in addrs.iter().filter(|addr| addr.port() != 0) {
        match bind_probe(*addr) {
            Err(source) if source.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(StartupError::AddressInUse { addr: *addr });
            }
            _ => {}
        }
    }
    let first = bind_with(addrs, strong_key, true)?;
    let bound: Vec<SocketAddr> = first
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<_, _>>()
        .map_err(|source| StartupError::Bind {
            addr: addrs.first().copied().unwrap_or(([0, 0, 0, 0], 0).into()),
            source,
        })?;
    let mut sets = vec![first];
    for _ in 1..copies {
        let set = bound
            .iter()
            .map(|addr| bind_one(*addr, strong_key, true))
            .collect::<Result<Vec<_>, _>>()?;
        sets.push(set);
    }
    Ok(sets)
}

/// Binds `addr` without SO_REUSEPORT and lets it go (no listen, so nothing connects).
fn bind_probe(addr: SocketAddr) -> std::io::Result<()> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)
}

fn bind_with(
    addrs: &[SocketAddr],
    strong_key: bool,
    reuse_port: bool,
) -> Result<Vec<TcpListener>, StartupError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    let mut chosen_port = None;
    for planned in addrs {
        let mut addr = *planned;
        if let (0, Some(port)) = (addr.port(), chosen_port) {
            addr.set_port(port);
        }
        let listener = match bind_one(addr, strong_key, reuse_port) {
            Ok(listener) => listener,
            Err(StartupError::Bind { source, .. })
                if addrs.len() > 1
                    && addr.ip() == std::net::Ipv6Addr::LOCALHOST
                    && source.kind() == std::io::ErrorKind::AddrNotAvailable =>
            {
                continue;
            }
            Err(err) => return Err(err),
        };
        if let Ok(local) = listener.local_addr() {
            chosen_port.get_or_insert(local.port());
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

fn bind_one(
    addr: SocketAddr,
    strong_key: bool,
    reuse_port: bool,
) -> Result<TcpListener, StartupError> {
    let bind_err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            StartupError::AddressInUse { addr }
        } else {
            StartupError::Bind { addr, source }
        }
    };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(bind_err)?;
    socket.set_reuseaddr(true).map_err(bind_err)?;
    socket.set_nodelay(true).map_err(bind_err)?;
    if reuse_port {
        socket.set_reuseport(true).map_err(bind_err)?;
    }
    socket.bind(addr).map_err(bind_err)?;
    // Second line of defence: judge the address the kernel actually bound.
    let local = socket.local_addr().map_err(bind_err)?;
    guard::judge(&[local], strong_key)?;
    socket.listen(1024).map_err(bind_err)
}
