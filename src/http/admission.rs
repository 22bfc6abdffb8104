//! Admitting connections: the global slot count, per-client-address counts, and closing idle keep-alive connections when slots run low.
//!
//! One client must not be able to take every slot. Each address (IPv4, or IPv6 /64) may
//! hold `max_connections_per_ip`; beyond that its new connections are closed at once.
//! Trusted proxies are exempt: they carry many clients. When fewer than 1/32 of the
//! global slots are left, connections that sit idle between requests are asked to close,
//! so the slots go to clients with something to send.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ipnet::IpNet;
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::client_addr::is_trusted;
use crate::limits::bucket;

/// How often idle connections are asked to close while slots stay low: each request
/// wakes every connection, so it is rate-limited.
const PRESSURE_EVERY: Duration = Duration::from_millis(100);

pub struct Admission {
    slots: Arc<Semaphore>,
    /// Below this many free slots, idle connections are closed.
    low_water: usize,
    per_ip_max: usize,
    counts: DashMap<IpAddr, usize>,
    trusted: Vec<IpNet>,
    pressure: Notify,
    started: Instant,
    /// Milliseconds since `started` of the last pressure signal.
    last_pressure: AtomicU64,
}

/// One admitted connection: its global slot and its count against its address, both
/// released when it is dropped (the connection has ended).
pub struct Admitted {
    admission: Arc<Admission>,
    bucket: Option<IpAddr>,
    _slot: OwnedSemaphorePermit,
}

impl Admission {
    /// `max_connections` slots; `per_ip_max` per address (0 = unlimited).
    pub fn new(max_connections: usize, per_ip_max: usize, trusted: Vec<IpNet>) -> Arc<Self> {
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(max_connections)),
            low_water: (max_connections / 32).max(1),
            per_ip_max,
            counts: DashMap::new(),
            trusted,
            pressure: Notify::new(),
            started: Instant::now(),
            last_pressure: AtomicU64::new(0),
        })
    }

    /// Waits for a free slot. Beyond `max_connections`, new connections wait in the
    /// kernel backlog; the connections already open (and their streams) carry on.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                if self.slots.available_permits() < self.low_water {
                    self.signal_pressure();
                }
                return Some(slot);
            }
            // Full: ask idle connections to go, again while the wait lasts (connections
            // busy at the first signal may be idle by the next).
            self.signal_pressure();
            tokio::select! {
                slot = self.slots.clone().acquire_owned() => return slot.ok(),
                _ = tokio::time::sleep(PRESSURE_EVERY) => {}
            }
        }
    }

    fn signal_pressure(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_pressure.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= PRESSURE_EVERY.as_millis() as u64 || last == 0 {
            self.last_pressure.store(now.max(1), Ordering::Relaxed);
            self.pressure.notify_waiters();
        }
    }

    /// Resolves when slots run low; an idle connection should then close.
    pub fn pressure(&self) -> Notified<'_> {
        self.pressure.notified()
    }

    /// Counts a new connection from `peer` (`None` for a Unix socket) against its
    /// address; `None` when that address already holds its share.
    pub fn admit(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        slot: OwnedSemaphorePermit,
    ) -> Option<Admitted> {
        let counted = peer.filter(|ip| self.per_ip_max > 0 && !is_trusted(*ip, &self.trusted));
        let bucket = match counted {
            Some(ip) => {
                let bucket = bucket(ip);
                let mut count = self.counts.entry(bucket).or_insert(0);
                if *count >= self.per_ip_max {
                    return None;
                }
                *count += 1;
                Some(bucket)
            }
            None => None,
        };
        Some(Admitted {
            admission: self.clone(),
            bucket,
            _slot: slot,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(bucket) = self.bucket {
            let counts = &self.admission.counts;
            if let Some(mut count) = counts.get_mut(&bucket) {
                *count = count.saturating_sub(1);
            }
            counts.remove_if(&bucket, |_, count| *count == 0);
        }
    }
}
