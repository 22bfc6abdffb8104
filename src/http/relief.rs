//! Slot relief: which open connections are asked to close when connection slots run low, and in what order.
//!
//! Every admitted connection is listed here (a sharded map: no global lock on the accept
//! path). While slots are short, the accept loop calls [`Relief::relieve`], which asks:
//! 1. every connection that has not passed auth and has been silent for
//!    [`PRESSURE_UNAUTHENTICATED_IDLE`] (the unauthenticated timeout, shortened while
//!    pressure lasts);
//! 2. then the oldest connections that have not passed auth and have been silent for at
//!    least [`MIN_SILENCE`] (one that just connected is about to send);
//! 3. only when no unauthenticated connection is silent at all: the connections idle
//!    longest between requests that passed auth.
//!
//! A connection with a request in flight, or with bytes of a request head arriving, is
//! never asked, and checks again in its own task before it closes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::watchdog::{Activity, GiveWay, Standing};

/// A connection silent for less than this is never asked to give way: it may have just
/// connected, or just had its answer, and be about to send.
pub const MIN_SILENCE: Duration = Duration::from_millis(10);

/// While slots are short, an unauthenticated connection silent this long is closed.
pub const PRESSURE_UNAUTHENTICATED_IDLE: Duration = Duration::from_secs(1);

/// How often the shortened timeout is applied while slots stay short and no other need
/// calls for a sweep; also how close together two needs must come for the second to
/// count as the same spell of pressure.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

pub struct Relief {
    /// `max_connections`: no batch is larger.
    capacity: usize,
    /// How many slots the current spell of pressure aims to have free (or freeing): it
    /// doubles while the need comes back within [`SWEEP_EVERY`] (a backlog that refills
    /// every freed slot), and starts again from `2 × low_water` after a calm.
    target: AtomicUsize,
    /// Milliseconds since `started` of the last sweep called for by a shortage.
    last_need: AtomicU64,
    /// Every open connection, by accept order (ids only grow).
    open: DashMap<u64, Arc<Activity>>,
    next_id: AtomicU64,
    /// Connections asked to give way that have neither closed nor declined yet.
    pending: AtomicUsize,
    /// One sweep at a time; another caller skips (never waits).
    sweeping: AtomicBool,
    started: Instant,
    /// Milliseconds since `started` of the last sweep.
    last_sweep: AtomicU64,
}

impl Relief {
    pub fn new(capacity: usize) -> Self {
        Relief {
            capacity,
            target: AtomicUsize::new(0),
            last_need: AtomicU64::new(0),
            open: DashMap::new(),
            next_id: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            sweeping: AtomicBool::new(false),
            started: Instant::now(),
            last_sweep: AtomicU64::new(0),
        }
    }

    /// Lists an admitted connection; returns the id to [`Relief::forget`] it by.
    pub fn register(&self, activity: Arc<Activity>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open.insert(id, activity);
        id
    }

    /// The connection has ended.
    pub fn forget(&self, id: u64) {
        if let Some((_, activity)) = self.open.remove(&id) {
            self.settle(&activity);
        }
    }

    /// A connection asked to give way turned out busy (a request began): it stays.
    pub fn declined(&self, activity: &Activity) {
        self.settle(activity);
    }

    fn settle(&self, activity: &Activity) {
        if activity.clear_give_way() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Called while fewer than `low_water` slots are free (`free` of them). Once the free
    /// and pending ones fall below `low_water`, asks enough connections to give way that
    /// the spell's target will be free: `2 × low_water` at first, doubling while the
    /// shortage keeps coming back (a flood that refills every freed slot from the
    /// backlog). Also applies the shortened unauthenticated timeout every
    /// [`SWEEP_EVERY`]. Returns when a connection too young to ask now becomes old
    /// enough, if the sweep ran and fell short because of it.
    pub fn relieve(&self, free: usize, low_water: usize) -> Option<Instant> {
        let now = Instant::now();
        let now_ms = now.duration_since(self.started).as_millis() as u64;
        let covered = free + self.pending.load(Ordering::Acquire);
        let want = match covered < low_water {
            true => self.next_target(now_ms, low_water).saturating_sub(covered),
            false => 0,
        };
        let due = now_ms.saturating_sub(self.last_sweep.load(Ordering::Relaxed))
            >= SWEEP_EVERY.as_millis() as u64;
        if want == 0 && !due {
            return None;
        }
        if self.sweeping.swap(true, Ordering::Acquire) {
            return None;
        }
        self.last_sweep.store(now_ms, Ordering::Relaxed);
        let next = self.sweep(want, now);
        self.sweeping.store(false, Ordering::Release);
        next
    }

    /// The target for a new shortage at `now_ms`: doubled if the last one was recent.
    fn next_target(&self, now_ms: u64, low_water: usize) -> usize {
        let base = (2 * low_water).min(self.capacity);
        let last = self.last_need.swap(now_ms, Ordering::Relaxed);
        let target = match now_ms.saturating_sub(last) <= SWEEP_EVERY.as_millis() as u64 {
            true => (self.target.load(Ordering::Relaxed) * 2).clamp(base, self.capacity),
            false => base,
        };
        self.target.store(target, Ordering::Relaxed);
        target
    }

    /// Asks up to `want` connections (and every one past the shortened timeout); returns
    /// when the youngest idle one left unasked becomes old enough, if `want` was not met.
    fn sweep(&self, mut want: usize, now: Instant) -> Option<Instant> {
        // (order, id): the id orders unauthenticated ones by age; `since` orders keep-alives.
        let mut unauthenticated: Vec<(u64, u64)> = Vec::new();
        let mut keepalive: Vec<(Instant, u64)> = Vec::new();
        let mut any_unauthenticated_idle = false;
        let mut next: Option<Instant> = None;
        for entry in self.open.iter() {
            let activity = entry.value();
            if activity.was_asked_to_give_way() {
                continue;
            }
            let Standing::Idle {
                authenticated,
                since,
            } = activity.standing()
            else {
                continue;
            };
            let silent = now.saturating_duration_since(since);
            any_unauthenticated_idle |= !authenticated;
            if silent < MIN_SILENCE {
                let old_enough = since + MIN_SILENCE;
                next = Some(next.map_or(old_enough, |next| next.min(old_enough)));
                continue;
            }
            if authenticated {
                keepalive.push((since, *entry.key()));
            } else if silent >= PRESSURE_UNAUTHENTICATED_IDLE {
                if self.ask(activity, GiveWay::UnauthenticatedTimeout) {
                    want = want.saturating_sub(1);
                }
            } else {
                unauthenticated.push((*entry.key(), *entry.key()));
            }
        }
        want -= self.ask_first(&mut unauthenticated, want, GiveWay::Unauthenticated);
        if !any_unauthenticated_idle {
            want -= self.ask_first(&mut keepalive, want, GiveWay::IdleKeepalive);
        }
        next.filter(|_| want > 0)
    }

    /// Asks the `want` first of `candidates` (by order, smallest first); returns how
    /// many were asked. Each is looked up again: one that has ended since is skipped (and
    /// the lookup's shard lock keeps it from ending while it is asked).
    fn ask_first<K: Ord + Copy>(
        &self,
        candidates: &mut [(K, u64)],
        want: usize,
        why: GiveWay,
    ) -> usize {
        let take = want.min(candidates.len());
        if take == 0 {
            return 0;
        }
        if take < candidates.len() {
            candidates.select_nth_unstable_by_key(take - 1, |(key, _)| *key);
        }
        candidates[..take]
            .iter()
            .filter(|(_, id)| {
                self.open
                    .get(id)
                    .is_some_and(|entry| self.ask(entry.value(), why))
            })
            .count()
    }

    fn ask(&self, activity: &Activity, why: GiveWay) -> bool {
        // Counted before asking, so the connection's settle never sees it at zero.
        self.pending.fetch_add(1, Ordering::AcqRel);
        let asked = activity.ask_to_give_way(why);
        if !asked {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        asked
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail by panicking

    use super::*;

    fn asked(activity: &Activity) -> bool {
        activity.was_asked_to_give_way()
    }

    #[tokio::test(start_paused = true)]
    async fn oldest_unauthenticated_first_then_keepalives_never_busy_or_young_ones() {
        let relief = Relief::new(100);
        let oldest = Activity::new();
        relief.register(oldest.clone());
        tokio::time::advance(Duration::from_millis(5)).await;
        let busy = Activity::new();
        relief.register(busy.clone());
        let _in_flight = busy.begin();
        let keepalive = Activity::new();
        relief.register(keepalive.clone());
        keepalive.mark_authenticated();
        let second = Activity::new();
        relief.register(second.clone());
        let third = Activity::new();
        relief.register(third.clone());
        tokio::time::advance(MIN_SILENCE).await;
        let young = Activity::new();
        relief.register(young.clone());

        // Two wanted: the two oldest unauthenticated ones, nothing else.
        assert!(relief.relieve(0, 1).is_none());
        assert!(asked(&oldest) && asked(&second));
        assert!(!asked(&third) && !asked(&busy) && !asked(&keepalive) && !asked(&young));

        // While unauthenticated idle ones are left (the young one), keep-alives stay.
        relief.forget(0);
        relief.forget(3);
        relief.forget(4);
        let next = relief.relieve(0, 1);
        assert!(!asked(&keepalive) && !asked(&young) && !asked(&busy));
        assert_eq!(next, Some(Instant::now() + MIN_SILENCE));

        // With no unauthenticated one left idle, the idle keep-alive gives way.
        relief.forget(5);
        relief.relieve(0, 1);
        assert!(asked(&keepalive) && !asked(&busy));
    }
}
