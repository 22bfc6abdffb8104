//! Serving: accept loops over the listeners, per-connection limits and timeouts, graceful drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::Limits;

/// The peer of a connection, put into every request's extensions.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A Unix domain socket: only processes on this machine can connect.
    Unix,
}

pub struct ServeOptions {
    pub limits: Limits,
    /// How long in-flight requests may run after shutdown starts.
    pub grace: Duration,
    /// Cancelled when the grace period is over, so streams can end with an error event.
    pub hard_stop: CancellationToken,
}

/// Serves `app` on every listener until `shutdown` fires, then drains.
///
/// Shutdown phases:
/// 1. `shutdown` fires: every accept loop stops; no new connection is taken.
/// 2. Open connections finish their in-flight requests; keep-alive connections close.
/// 3. After `grace`, `hard_stop` fires: streams still open send a final error event.
/// 4. One more second for those events to flush, then remaining connections are dropped.
pub async fn serve(
    listeners: Vec<TcpListener>,
    app: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let permits = Arc::new(Semaphore::new(options.limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(
            options.limits.header_read_timeout_secs.max(1),
        ))
        .max_buf_size(options.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(
            options.limits.keepalive_idle_secs.max(1),
        )))
        .max_header_list_size(options.limits.max_header_bytes as u32);
    let builder = Arc::new(builder);

    let mut loops = Vec::new();
    for listener in listeners {
        loops.push(tokio::spawn(accept_loop(
            listener,
            app.clone(),
            builder.clone(),
            graceful.clone(),
            permits.clone(),
            shutdown.clone(),
        )));
    }
    shutdown.cancelled().await;
    for handle in loops {
        let _ = handle.await;
    }
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = async {
            tokio::time::sleep(options.grace).await;
            options.hard_stop.cancel();
            tokio::time::sleep(Duration::from_secs(1)).await;
        } => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        // Beyond max_connections, new connections wait in the kernel backlog.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |request: Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(Peer::Tcp(peer));
                request
            });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
}
