//! Admitting connections: the global slot count, per-client-address counts, and asking idle connections to give way when slots run low.
//!
//! One client must not be able to take every slot. Each address (IPv4, or IPv6 /64) may
//! hold `max_connections_per_ip`; beyond that its new connections are closed at once.
//! Trusted proxies are exempt: they carry many clients. When fewer than 1/32 of the
//! global slots are left, idle connections are asked to close (`relief` picks which:
//! those that never passed auth first), so the slots go to clients with something to send.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::client_addr::is_trusted;
use super::relief::{Relief, MIN_SILENCE};
use super::watchdog::Activity;
use crate::limits::bucket;

pub struct Admission {
    slots: Arc<Semaphore>,
    /// Below this many free slots, idle connections are closed.
    low_water: usize,
    per_ip_max: usize,
    counts: DashMap<IpAddr, usize>,
    trusted: Vec<IpNet>,
    relief: Relief,
}

/// One admitted connection: its global slot, its count against its address and its
/// place in the relief list, all released when it is dropped (the connection has ended).
pub struct Admitted {
    admission: Arc<Admission>,
    bucket: Option<IpAddr>,
    relief_id: u64,
    activity: Arc<Activity>,
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
            relief: Relief::new(max_connections),
        })
    }

    /// Waits for a free slot. Beyond `max_connections`, new connections wait in the
    /// kernel backlog; the connections already open (and their streams) carry on.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                let free = self.slots.available_permits();
                if free < self.low_water {
                    let _ = self.relief.relieve(free, self.low_water);
                }
                return Some(slot);
            }
            // Full: ask idle connections to go, again while the wait lasts (a connection
            // too young to ask, or busy, at one sweep may be idle long enough by the next).
            let now = Instant::now();
            let again = match self.relief.relieve(0, self.low_water) {
                Some(old_enough) => old_enough.max(now + Duration::from_millis(1)),
                None => now + MIN_SILENCE,
            };
            tokio::select! {
                slot = self.slots.clone().acquire_owned() => return slot.ok(),
                _ = tokio::time::sleep_until(again) => {}
            }
        }
    }

    /// Counts a new connection from `peer` (`None` for a Unix socket) against its
    /// address and lists it for slot relief; `None` when that address already holds
    /// its share.
    pub fn admit(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        slot: OwnedSemaphorePermit,
        activity: &Arc<Activity>,
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
            relief_id: self.relief.register(activity.clone()),
            activity: activity.clone(),
            _slot: slot,
        })
    }
}

impl Admitted {
    /// The connection was asked to give way: true if it is still idle and should close
    /// now; false if a request has begun meanwhile, and it stays.
    pub fn gives_way(&self) -> bool {
        if self.activity.is_idle() {
            return true;
        }
        self.admission.relief.declined(&self.activity);
        false
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.relief.forget(self.relief_id);
        if let Some(bucket) = self.bucket {
            let counts = &self.admission.counts;
            if let Some(mut count) = counts.get_mut(&bucket) {
                *count = count.saturating_sub(1);
            }
            counts.remove_if(&bucket, |_, count| *count == 0);
        }
    }
}
