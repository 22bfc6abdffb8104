//! Upstream connection pools: one pool shared by every thread, or, on a worker thread
//! (`[server] workers`), a pool of that thread's own, so a request and its upstream
//! connection stay on one thread.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Weak};

use super::http::{client_with, Client};

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
