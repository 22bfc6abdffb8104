//! `Listener`: a socket that is already bound (by the daemon, or passed by systemd); the
//! server only accepts on it.

use tokio::net::TcpListener;

/// A listening socket gatewayd serves on: bound by itself, or inherited from systemd.
pub enum Listener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// The address for the startup log line, with the real port.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(tcp) => tcp
                .local_addr()
                .map_or_else(|_| "tcp:?".into(), |a| a.to_string()),
            Listener::Unix(unix) => match unix.local_addr() {
                Ok(addr) => match addr.as_pathname() {
                    Some(path) => format!("unix:{}", path.display()),
                    None => "unix:(abstract)".into(),
                },
                Err(_) => "unix:?".into(),
            },
        }
    }
}
