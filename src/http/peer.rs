//! `Peer`: who is at the other end of a connection, put into every request's extensions.

use std::net::SocketAddr;

/// The peer of a connection, put into every request's extensions.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A Unix domain socket: only processes on this machine can connect.
    Unix,
}
