//! systemd integration: readiness, stopping and watchdog notifications, and sockets handed over by socket activation.

use std::time::Duration;

use listenfd::ListenFd;
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use super::guard::{self, UnixSocketKind};
use super::startup::StartupError;
use crate::http::listener::Listener;

/// READY=1: sent only once the guard has passed and every listener accepts connections.
pub fn notify_ready() {
    if let Err(err) = sd_notify::notify(false, &[NotifyState::Ready]) {
        tracing::warn!(error = %err, "could not notify systemd of readiness");
    }
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// When systemd set WATCHDOG_USEC, pings it at half that interval until shutdown.
pub fn spawn_watchdog(shutdown: CancellationToken) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let interval = Duration::from_micros(usec / 2).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {
                    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                }
            }
        }
    });
}

/// A socket systemd passed, judged but not yet handed to the runtime.
pub enum Inherited {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Inherited {
    /// The address, for check-config's output.
    pub fn describe(&self) -> String {
        match self {
            Inherited::Tcp(tcp) => tcp
                .local_addr()
                .map_or_else(|_| "tcp:?".into(), |a| a.to_string()),
            Inherited::Unix(unix) => match unix.local_addr() {
                Ok(addr) => match addr.as_pathname() {
                    Some(path) => format!("unix:{}", path.display()),
                    None => "unix:(abstract)".into(),
                },
                Err(_) => "unix:?".into(),
            },
        }
    }

    /// A second handle on the same socket (dup), for another worker to accept on.
    pub fn try_clone(&self) -> std::io::Result<Inherited> {
        Ok(match self {
            Inherited::Tcp(tcp) => Inherited::Tcp(tcp.try_clone()?),
            Inherited::Unix(unix) => Inherited::Unix(unix.try_clone()?),
        })
    }

    /// The socket as a tokio listener; needs a running runtime.
    pub fn into_listener(self, index: usize) -> Result<Listener, StartupError> {
        let inherited = |source| StartupError::Inherited { index, source };
        match self {
            Inherited::Tcp(tcp) => {
                tcp.set_nonblocking(true).map_err(inherited)?;
                let tcp = tokio::net::TcpListener::from_std(tcp).map_err(inherited)?;
                Ok(Listener::Tcp(tcp))
            }
            Inherited::Unix(unix) => {
                unix.set_nonblocking(true).map_err(inherited)?;
                let unix = tokio::net::UnixListener::from_std(unix).map_err(inherited)?;
                Ok(Listener::Unix(unix))
            }
        }
    }
}

/// Sockets passed by systemd (LISTEN_FDS, honoured only when LISTEN_PID is unset or is
/// this process), each judged by the guard on its real address (getsockname) before
/// gatewayd serves on it. `None` when no socket was passed.
pub fn inherited_sockets(strong_key: bool) -> Result<Option<Vec<Inherited>>, StartupError> {
    let mut fds = ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut sockets = Vec::with_capacity(fds.len());
    for index in 0..fds.len() {
        let inherited = |source| StartupError::Inherited { index, source };
        if let Ok(Some(tcp)) = fds.take_tcp_listener(index) {
            let local = tcp.local_addr().map_err(inherited)?;
            guard::judge(&[local], strong_key)?;
            sockets.push(Inherited::Tcp(tcp));
            continue;
        }
        let unix = fds
            .take_unix_listener(index)
            .map_err(inherited)?
            .ok_or_else(|| inherited(std::io::Error::other("not a stream socket")))?;
        let local = unix.local_addr().map_err(inherited)?;
        let (kind, name) = match local.as_pathname() {
            Some(path) => (UnixSocketKind::Path, path.display().to_string()),
            None => (UnixSocketKind::Abstract, format!("(fd {})", index + 3)),
        };
        guard::judge_unix(kind, &name, strong_key)?;
        sockets.push(Inherited::Unix(unix));
    }
    Ok(Some(sockets))
}
