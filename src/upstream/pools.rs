//! Upstream connection pools: one pool shared by every thread, or, on a worker thread
//! (`[server] workers`), a pool of that thread's own, so a request and its upstream
//! connection stay on one thread.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Weak};

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The pooled client of one configuration; cloning it shares the pool.
pub type Client = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The pools of one upstream client configuration (connect timeout and TLS).
pub struct Pools {
    connect: u64,
    tls: rustls::ClientConfig,
    /// Used off the worker threads (the control thread's health probes, `workers = 0`).
    shared: Client,
    /// Identifies this configuration in each worker's own list; gone once it is dropped.
    alive: Arc<()>,
}

thread_local! {
    /// Set by [`enter_worker`] on a worker thread.
    static WORKER: Cell<bool> = const { Cell::new(false) };
    /// This worker's clients, one per live configuration.
    static OWN: RefCell<Vec<(Weak<()>, Client)>> = const { RefCell::new(Vec::new()) };
}

/// Marks the calling thread as a worker: upstream requests made on it use its own pools.
pub fn enter_worker() {
    WORKER.with(|worker| worker.set(true));
}

impl Pools {
    pub fn new(connect: u64, tls: rustls::ClientConfig) -> Arc<Pools> {
        let shared = client_with(connect, tls.clone());
        Arc::new(Pools {
            connect,
            tls,
            shared,
            alive: Arc::new(()),
        })
    }

    /// Runs `use_client` with the client this thread uses for this configuration.
    pub fn with<R>(&self, use_client: impl FnOnce(&Client) -> R) -> R {
        if !WORKER.with(Cell::get) {
            return use_client(&self.shared);
        }
        OWN.with(|own| {
            let mut own = own.borrow_mut();
            let found = own
                .iter()
                .position(|(id, _)| std::ptr::eq(id.as_ptr(), Arc::as_ptr(&self.alive)));
            let index = match found {
                Some(index) => index,
                None => {
                    // Configurations replaced by a reload leave with their connections.
                    own.retain(|(id, _)| id.strong_count() > 0);
                    let client = client_with(self.connect, self.tls.clone());
                    own.push((Arc::downgrade(&self.alive), client));
                    own.len() - 1
                }
            };
            use_client(&own[index].1)
        })
    }
}

/// A pooled client with this TLS configuration (TCP_NODELAY, keep-alive probes, HTTP/2 by ALPN).
pub fn client_with(connect: u64, tls: rustls::ClientConfig) -> Client {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(connect.max(1))));
    http.enforce_http(false);
    http.set_keepalive(Some(Duration::from_secs(15)));
    http.set_keepalive_interval(Some(Duration::from_secs(15)));
    http.set_keepalive_retries(Some(3));
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    // HTTP/1.1 buffer settings are hyper's defaults, measured with `bench/profile.sh rss`
    // (2,000 streams held through an HTTP/1.1 upstream): `http1_writev(false)` and
    // `http1_max_buf_size(8192)` changed nothing; `http1_read_buf_exact_size` saves per
    // stream only below 4 KiB (2 KiB: -2 kB, 1 KiB: -3.5 kB), and the exact size is also
    // the largest response head hyper then accepts, less than real upstreams can send.
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools() -> Arc<Pools> {
        let tls = crate::upstream::tls::default_config().unwrap();
        Pools::new(1, tls)
    }

    #[tokio::test]
    async fn a_worker_thread_keeps_its_own_client_and_drops_replaced_ones() {
        let first = pools();
        std::thread::spawn(move || {
            enter_worker();
            let count = || OWN.with(|own| own.borrow().len());
            first.with(|_| ());
            first.with(|_| ());
            assert_eq!(count(), 1);
            let second = pools();
            second.with(|_| ());
            assert_eq!(count(), 2);
            drop(first);
            let third = pools();
            third.with(|_| ());
            assert_eq!(count(), 2, "the dropped configuration's client is gone");
        })
        .join()
        .unwrap();
        // Off a worker thread nothing is kept.
        pools().with(|_| ());
        assert_eq!(OWN.with(|own| own.borrow().len()), 0);
    }
}
