//! Serving: accept loops over the listeners, connection admission, TLS handshakes, per-connection timeouts, graceful drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::admission::{Admission, Admitted};
use super::auth::Authenticated;
use super::body_deadline::DeadlineBody;
use super::hold::HoldBody;
use super::listener::Listener;
pub use super::peer::Peer;
use super::preface::{self, Protocol};
use super::watchdog::{Activity, Ending, Timeouts, Tracked};
use crate::config::Limits;

/// The router in force: swapped whole by a reload. Each request takes the one in force
/// when it arrives and keeps it (and the state inside it) until its response has ended.
pub type LiveRouter = Arc<ArcSwap<Router>>;

pub struct ServeOptions {
    pub limits: Limits,
    /// How long in-flight requests may run after shutdown starts.
    pub grace: Duration,
    /// Cancelled when the grace period is over, so streams can end with an error event.
    pub hard_stop: CancellationToken,
    /// `[server] trusted_proxies`: exempt from the per-address connection limit.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `[server.tls]`: every TCP connection starts with a TLS handshake.
    pub tls: Option<TlsAcceptor>,
    /// Connection slots shared with other workers; `None`: this call's own.
    pub admission: Option<Arc<Admission>>,
    /// Which worker serves (`[server] workers`), counted per accepted connection.
    pub worker: Option<usize>,
}

/// Serves `app` (the router in force at each request) on every listener until
/// `shutdown` fires, then drains.
///
/// Shutdown phases:
/// 1. `shutdown` fires: every accept loop stops; no new connection is taken.
/// 2. Open connections finish their in-flight requests; keep-alive connections close.
/// 3. After `grace`, `hard_stop` fires: streams still open send a final error event.
/// 4. One more second for those events to flush, then remaining connections are dropped.
pub async fn serve(
    listeners: Vec<Listener>,
    app: LiveRouter,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let limits = &options.limits;
    let admission = options.admission.clone().unwrap_or_else(|| {
        Admission::new(
            limits.max_connections,
            limits.max_connections_per_ip,
            options.trusted_proxies.clone(),
        )
    });
    let secs = |value: u64| Duration::from_secs(value.max(1));
    let timeouts = Timeouts {
        header_read: secs(limits.header_read_timeout_secs),
        keepalive_idle: secs(limits.keepalive_idle_secs),
        unauthenticated_idle: secs(limits.unauthenticated_idle_secs),
        send: secs(limits.send_timeout_secs),
    };
    let body_read_timeout = secs(limits.body_read_timeout_secs);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Other buffer settings were measured with `bench/profile.sh rss` (2,000 held streams)
    // and left at hyper's defaults: HTTP/1.1 `writev`, HTTP/2 window sizes, the HTTP/2
    // send buffer and the concurrent-stream limit each moved RSS per stream by less than
    // the run-to-run spread (±0.7 kB). What a held HTTP/1.1 connection keeps is hyper's
    // fixed 8 KiB read and write buffers, which no setting lowers (`max_buf_size` is a
    // ceiling, at least 8 KiB, and here also the request head limit).
    // hyper's header timeout is off: it would also cut idle keep-alive connections at
    // the header timeout. The watchdog keeps both clocks (see `watchdog`).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(options.limits.max_headers.max(1))
        .max_buf_size(options.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(timeouts.keepalive_idle))
        .max_header_list_size(options.limits.max_header_bytes as u32);
    let builders = Arc::new(Builders {
        http1: builder.clone().http1_only(),
        http2: builder.http2_only(),
    });

    let mut loops = Vec::new();
    for listener in listeners {
        loops.push(tokio::spawn(accept_loop(
            listener,
            Shared {
                app: app.clone(),
                builders: builders.clone(),
                connections: connections.clone(),
                admission: admission.clone(),
                timeouts,
                body_read_timeout,
                shutdown: shutdown.clone(),
                tls: options.tls.clone(),
                accepted: options.worker.map(crate::telemetry::worker_connections),
            },
        )));
    }
    shutdown.cancelled().await;
    for handle in loops {
        let _ = handle.await;
    }
    connections.close();
    tokio::select! {
        _ = connections.wait() => {}
        _ = async {
            tokio::time::sleep(options.grace).await;
            options.hard_stop.cancel();
            tokio::time::sleep(Duration::from_secs(1)).await;
        } => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

/// hyper's connection settings, one for each protocol a connection's first bytes tell.
struct Builders {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

/// What every accept loop shares.
struct Shared {
    app: LiveRouter,
    builders: Arc<Builders>,
    connections: TaskTracker,
    admission: Arc<Admission>,
    timeouts: Timeouts,
    body_read_timeout: Duration,
    shutdown: CancellationToken,
    tls: Option<TlsAcceptor>,
    /// Connections accepted by this worker (`[server] workers`).
    accepted: Option<metrics::Counter>,
}

async fn accept_loop(listener: Listener, shared: Shared) {
    let shutdown = &shared.shutdown;
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => return,
            slot = shared.admission.slot() => match slot {
                Some(slot) => slot,
                None => return,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = accept(&listener) => accepted,
        };
        if let (Ok(_), Some(counter)) = (&accepted, &shared.accepted) {
            counter.increment(1);
        }
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                let activity = Activity::new();
                // Over its per-address share: closed before hyper sees a byte.
                let Some(admitted) = shared.admission.admit(Some(peer.ip()), slot, &activity)
                else {
                    tracing::debug!(%peer, "connection refused: max_connections_per_ip");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let tls = shared.tls.clone();
                let connection = Connection {
                    peer: Peer::Tcp(peer),
                    activity,
                    admitted,
                };
                spawn_connection(stream, connection, &shared, tls);
            }
            Ok(Accepted::Unix(stream)) => {
                let activity = Activity::new();
                if let Some(admitted) = shared.admission.admit(None, slot, &activity) {
                    let connection = Connection {
                        peer: Peer::Unix,
                        activity,
                        admitted,
                    };
                    spawn_connection(stream, connection, &shared, None);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(tcp) => tcp.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
        Listener::Unix(unix) => unix.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// An admitted connection before it is served.
struct Connection {
    peer: Peer,
    activity: Arc<Activity>,
    admitted: Admitted,
}

/// Whether the connection's watchdog ending closes it: a deadline always does; a request
/// to give way its slot does only while the connection is still idle (counted by reason).
fn closes(ending: Ending, admitted: &Admitted) -> bool {
    match ending {
        Ending::Overstayed => true,
        Ending::GiveWay(why) => {
            let closing = admitted.gives_way();
            if closing {
                crate::telemetry::count_slot_relief(why.label());
            }
            closing
        }
    }
}

/// Serves one connection (TCP or Unix, with TLS when `tls` is set) until it ends,
/// drains, its watchdog fires, or it gives its slot up while idle. The watchdog sees the
/// raw bytes, so a handshake that stalls is closed like a slow request head.
fn spawn_connection<IO>(
    stream: IO,
    connection: Connection,
    shared: &Shared,
    tls: Option<TlsAcceptor>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Connection {
        peer,
        activity,
        admitted,
    } = connection;
    let app = shared.app.clone();
    let requests = activity.clone();
    let body_read_timeout = shared.body_read_timeout;
    let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        let mut request = request.map(|body| DeadlineBody::wrap(body, body_read_timeout));
        request.extensions_mut().insert(peer);
        let busy = requests.begin();
        let activity = requests.clone();
        let app = Router::clone(&app.load());
        async move {
            let response = app.oneshot(request).await?;
            if response.extensions().get::<Authenticated>().is_some() {
                activity.mark_authenticated();
            }
            Ok::<_, Infallible>(response.map(|body| HoldBody::wrap(body, busy)))
        }
    });
    let builders = shared.builders.clone();
    let timeouts = shared.timeouts;
    let shutdown = shared.shutdown.clone();
    shared.connections.spawn(async move {
        let tracked = Tracked::new(stream, activity.clone());
        let io: Box<dyn Io> = match tls {
            None => Box::new(tracked),
            Some(acceptor) => {
                let handshake = acceptor.accept(tracked);
                let mut handshake = std::pin::pin!(handshake);
                // Before any request passed auth: the unauthenticated bound, bytes or not.
                let bound = tokio::time::sleep(timeouts.unauthenticated_idle);
                let mut bound = std::pin::pin!(bound);
                let handshake = loop {
                    tokio::select! {
                        biased;
                        handshake = handshake.as_mut() => break handshake,
                        ending = activity.expired(timeouts) => if closes(ending, &admitted) {
                            return;
                        },
                        _ = bound.as_mut() => return,
                        _ = shutdown.cancelled() => return,
                    }
                };
                match handshake {
                    Ok(mut stream) => {
                        // Plaintext that arrived with the handshake's last flight is the
                        // start of a request; otherwise the connection is silent now.
                        let (_, tls) = stream.get_mut();
                        let begun = tls
                            .process_new_packets()
                            .map_or(true, |state| state.plaintext_bytes_to_read() > 0);
                        activity.handshake_done(begun);
                        Box::new(stream)
                    }
                    // Not TLS, or a client that refused the certificate.
                    Err(_) => return,
                }
            }
        };
        // HTTP/1.1 or h2c (prior knowledge), by the first bytes (see `preface`). In a
        // block of its own, so the task does not keep room for it while serving.
        let (protocol, io) = {
            let sniffing = preface::sniff(io);
            let mut sniffing = std::pin::pin!(sniffing);
            loop {
                tokio::select! {
                    biased;
                    sniffed = sniffing.as_mut() => match sniffed {
                        Ok(sniffed) => break sniffed,
                        Err(_) => return,
                    },
                    _ = shutdown.cancelled() => return,
                    ending = activity.expired(timeouts) => if closes(ending, &admitted) {
                        return;
                    },
                }
            }
        };
        let builder = match protocol {
            Protocol::Http1 => &builders.http1,
            Protocol::Http2 => &builders.http2,
        };
        let connection =
            builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let mut connection = std::pin::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                // The connection first: bytes that have arrived are read (and mark it
                // busy) before a request to give way is weighed.
                biased;
                _ = connection.as_mut() => break,
                _ = shutdown.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                // Silent, too slow with its headers, idle too long, or not reading: drop
                // it. Asked to give its slot up while idle: close.
                ending = activity.expired(timeouts) => if closes(ending, &admitted) {
                    break;
                },
            }
        }
        drop(admitted);
    });
}

/// A connection's byte stream, plain or TLS, behind one type.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
