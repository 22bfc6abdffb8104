//! `[server] workers`: N single-threaded runtimes, each on its own thread, accepting on its own listening sockets, while the control runtime runs everything shared.
//!
//! Bound addresses get one SO_REUSEPORT socket per worker, so the kernel spreads new
//! connections over the workers; a socket systemd passed is shared (each worker accepts
//! on its own handle of it). A connection, its requests, its upstream connection and their
//! tasks stay on the worker that accepted it. Connection slots stay global: every worker
//! admits through one `Admission`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::startup::{self, StartupError};
use super::systemd::Inherited;
use crate::api::state::AppState;
use crate::http::admission::Admission;
use crate::http::listener::Listener;
use crate::http::server::LiveRouter;

/// The main listening sockets, for one runtime or for each worker.
pub enum MainSockets {
    /// `workers = 0`: served on the runtime that runs the daemon.
    One(Vec<Listener>),
    /// One set per worker, not yet handed to its runtime.
    PerWorker(Vec<Vec<Inherited>>),
}

impl MainSockets {
    /// Takes the sockets systemd passed, or binds the planned addresses (the guard judges
    /// each one bound); with `workers > 0`, a set for each worker.
    pub fn open(
        inherited: Option<Vec<Inherited>>,
        planned: Option<&Vec<SocketAddr>>,
        strong_key: bool,
        workers: usize,
    ) -> Result<MainSockets, StartupError> {
        if workers == 0 {
            let listeners = match (inherited, planned) {
                (Some(sockets), _) => sockets
                    .into_iter()
                    .enumerate()
                    .map(|(index, socket)| socket.into_listener(index))
                    .collect::<Result<Vec<_>, _>>()?,
                (None, Some(addrs)) => startup::bind(addrs, strong_key)?
                    .into_iter()
                    .map(Listener::Tcp)
                    .collect(),
                (None, None) => Vec::new(),
            };
            return Ok(MainSockets::One(listeners));
        }
        let sets = match (inherited, planned) {
            (Some(sockets), _) => {
                let mut sets = Vec::with_capacity(workers);
                for _ in 1..workers {
                    let copies = sockets.iter().enumerate().map(|(index, socket)| {
                        socket
                            .try_clone()
                            .map_err(|source| StartupError::Inherited { index, source })
                    });
                    sets.push(copies.collect::<Result<Vec<_>, _>>()?);
                }
                sets.insert(0, sockets);
                sets
            }
            (None, Some(addrs)) => {
                let mut sets = Vec::with_capacity(workers);
                for set in startup::bind_copies(addrs, strong_key, workers)? {
                    let set = set.into_iter().map(|listener| {
                        let addr = listener.local_addr();
                        listener.into_std().map(Inherited::Tcp).map_err(|source| {
                            StartupError::Bind {
                                addr: addr.unwrap_or(([0, 0, 0, 0], 0).into()),
                                source,
                            }
                        })
                    });
                    sets.push(set.collect::<Result<Vec<_>, _>>()?);
                }
                sets
            }
            (None, None) => (0..workers).map(|_| Vec::new()).collect(),
        };
        Ok(MainSockets::PerWorker(sets))
    }

    /// The addresses served, for the startup log line (each once).
    pub fn describe(&self) -> Vec<String> {
        match self {
            MainSockets::One(listeners) => listeners.iter().map(Listener::describe).collect(),
            MainSockets::PerWorker(sets) => sets
                .first()
                .map(|set| set.iter().map(Inherited::describe).collect())
                .unwrap_or_default(),
        }
    }
}

/// Running workers: each has said when it has drained, and waits to be released.
pub struct Workers {
    drained: Vec<oneshot::Receiver<()>>,
    threads: Vec<JoinHandle<()>>,
    release: CancellationToken,
}

impl Workers {
    /// Starts one thread per socket set, each with its own runtime, serving `router`
    /// until `shutdown` fires and its connections have drained (the same drain as with
    /// one runtime). Every worker admits connections through `admission`.
    pub fn start(
        sets: Vec<Vec<Inherited>>,
        state: &AppState,
        router: &LiveRouter,
        admission: &Arc<Admission>,
        shutdown: &CancellationToken,
    ) -> std::io::Result<Workers> {
        let release = CancellationToken::new();
        let mut workers = Workers {
            drained: Vec::with_capacity(sets.len()),
            threads: Vec::with_capacity(sets.len()),
            release: release.clone(),
        };
        for (worker, set) in sets.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let listeners = {
                // The sockets join this worker's reactor.
                let _entered = runtime.enter();
                set.into_iter()
                    .enumerate()
                    .map(|(index, socket)| socket.into_listener(index))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(std::io::Error::other)?
            };
            let (done, drained) = oneshot::channel();
            let serve = crate::serve_worker(
                state.clone(),
                router.clone(),
                listeners,
                shutdown.clone(),
                admission.clone(),
                worker,
            );
            let release = release.clone();
            let thread = std::thread::Builder::new()
                .name(format!("gatewayd-worker-{worker}"))
                .spawn(move || {
                    crate::upstream::pools::enter_worker();
                    runtime.block_on(async move {
                        serve.await;
                        let _ = done.send(());
                        // Kept running until the control thread's last writes are done:
                        // connections this worker opened (to the store, to Redis) are
                        // driven by its runtime.
                        release.cancelled().await;
                    });
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })?;
            workers.drained.push(drained);
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Waits until every worker has stopped accepting and its connections have drained.
    pub async fn drained(&mut self) {
        for drained in self.drained.drain(..) {
            // A worker that ended without saying so (a panic) has nothing left to drain.
            let _ = drained.await;
        }
    }

    /// Lets the workers end and waits for their threads.
    pub async fn stop(self) {
        self.release.cancel();
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a worker thread panicked");
                }
            }
        });
        let _ = joined.await;
    }
}
