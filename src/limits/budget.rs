//! Token budgets per key: a reservation taken before an upstream call, settled to the
//! real usage after it, refunded when dropped unsettled; and the in-process counters
//! that hold them with `backend = "local"` (and while Redis cannot decide).
//!
//! Every counter is one key's tokens in one window period (spent plus reserved). A
//! counter never falls below its floor: what the store says the key spent in that
//! window. So a restart, which empties these counters, starts again from the store.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

use super::shared::SharedLimiter;
use super::windows::{Window, WindowKind};
use crate::wire::error::ApiError;

/// How long the floors read from the store serve a key before they are read again: a
/// burst of requests costs one store query per key per second, not one each.
pub const FLOORS_FRESH_FOR: Duration = Duration::from_secs(1);

/// What the store says a key has spent (input plus output tokens) in each window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Floors {
    pub day: u64,
    pub month: u64,
    pub total: u64,
}

impl Floors {
    pub fn of(&self, kind: WindowKind) -> u64 {
        match kind {
            WindowKind::Day => self.day,
            WindowKind::Month => self.month,
            WindowKind::Total => self.total,
        }
    }
}

/// One key's windows as a reservation sees them: the key's name, its windows at the
/// time of the reservation, and the floors they were seeded from.
#[derive(Debug, Clone)]
pub struct BudgetScope {
    pub name: Arc<str>,
    pub windows: Vec<Window>,
    pub floors: Floors,
}

/// Tokens held against a key's budget windows for one turn. Settle it with what the
/// turn really spent; dropping it unsettled gives the whole reservation back.
pub struct Reservation {
    /// The tokens reserved: the input estimate plus `max_tokens` (or the configured cap).
    pub reserved: u64,
    held: Option<(BudgetScope, HeldOn)>,
}

/// Where a reservation was counted, so its settle goes to the same counters.
pub(super) enum HeldOn {
    Local(Arc<LocalBudgets>),
    Shared(SharedLimiter),
}

impl Reservation {
    pub(super) fn new(reserved: u64, scope: BudgetScope, on: HeldOn) -> Self {
        Reservation {
            reserved,
            held: Some((scope, on)),
        }
    }

    /// The turn spent `spent` tokens (input plus output): the windows move by
    /// `spent - reserved`.
    pub fn settle(mut self, spent: u64) {
        self.apply(spent);
    }

    fn apply(&mut self, spent: u64) {
        let Some((scope, on)) = self.held.take() else {
            return;
        };
        match on {
            HeldOn::Local(local) => local.settle(&scope, self.reserved, spent),
            HeldOn::Shared(shared) => {
                // Settling must not hold up the reply; a settle Redis cannot take is not
                // retried (a retry after a lost answer could count the turn twice).
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let reserved = self.reserved;
                runtime.spawn(async move {
                    shared.settle_budget(&scope, reserved, spent).await;
                });
            }
        }
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("reserved", &self.reserved)
            .field("settled", &self.held.is_none())
            .finish()
    }
}

impl Drop for Reservation {
    /// Unsettled: the turn spent nothing, and the reservation is refunded.
    fn drop(&mut self) {
        self.apply(0);
    }
}

/// The refusal for the `i`-th window of `scope`.
pub fn refusal(scope: &BudgetScope, i: usize, reserve: u64) -> ApiError {
    match scope.windows.get(i) {
        Some(window) => exceeded(window, reserve),
        None => ApiError::Internal,
    }
}

/// The refusal for `window`, which `reserve` more tokens would pass.
pub fn exceeded(window: &Window, reserve: u64) -> ApiError {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    ApiError::BudgetExceeded {
        window: window.kind.label(),
        limit: window.limit,
        reserve,
        resets_at: window.resets_at_text(),
        retry_after_secs: window.resets_at.map(|at| (at - now).max(1) as u64),
    }
}

/// This process's budget counters, and the floors last read from the store.
#[derive(Default)]
pub struct LocalBudgets {
    /// Key name → its counters by period. One small lock per key: a reservation checks
    /// and adds every window of its key at once, and other keys never wait for it.
    counters: DashMap<Arc<str>, Arc<Mutex<HashMap<String, u64>>>>,
    floors: DashMap<Arc<str>, (Instant, Floors)>,
    /// One store read of a key's floors at a time.
    reading: DashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>,
}

impl LocalBudgets {
    /// The floors of `name`: the ones read within the last [`FLOORS_FRESH_FOR`], or
    /// fresh ones from `read` (the store). Concurrent requests of one key wait for one
    /// read instead of each sending their own, so a burst costs one query.
    pub async fn floors<F, Fut, E>(&self, name: &Arc<str>, read: F) -> Result<Floors, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Floors, E>>,
    {
        if let Some(floors) = self.fresh_floors(name) {
            return Ok(floors);
        }
        let gate = self.reading.entry(name.clone()).or_default().clone();
        let _reading = gate.lock().await;
        if let Some(floors) = self.fresh_floors(name) {
            return Ok(floors); // read by the request this one waited for
        }
        let floors = read().await?;
        self.floors.insert(name.clone(), (Instant::now(), floors));
        Ok(floors)
    }

    fn fresh_floors(&self, name: &str) -> Option<Floors> {
        let entry = self.floors.get(name)?;
        (entry.0.elapsed() < FLOORS_FRESH_FOR).then_some(entry.1)
    }

    /// Checks every window of `scope` and adds `amount` to all of them, or to none:
    /// `Err(i)` names the first window `amount` would pass.
    pub fn reserve(&self, scope: &BudgetScope, amount: u64) -> Result<(), usize> {
        let cell = self.counters.entry(scope.name.clone()).or_default().clone();
        let mut counters = cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Periods that have ended are never counted again.
        counters.retain(|period, _| scope.windows.iter().any(|w| &w.period == period));
        let mut next = Vec::with_capacity(scope.windows.len());
        for (i, window) in scope.windows.iter().enumerate() {
            let held = counters.get(&window.period).copied().unwrap_or(0);
            let now = held.max(scope.floors.of(window.kind));
            let after = now.saturating_add(amount);
            if after > window.limit {
                return Err(i);
            }
            next.push(after);
        }
        for (window, after) in scope.windows.iter().zip(next) {
            counters.insert(window.period.clone(), after);
        }
        Ok(())
    }

    /// Moves every window of `scope` by `spent - reserved`. A period no longer counted
    /// (it has ended) is left alone.
    pub fn settle(&self, scope: &BudgetScope, reserved: u64, spent: u64) {
        let Some(cell) = self.counters.get(&scope.name).map(|cell| cell.clone()) else {
            return;
        };
        let mut counters = cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for window in &scope.windows {
            if let Some(count) = counters.get_mut(&window.period) {
                *count = count.saturating_add(spent).saturating_sub(reserved);
            }
        }
    }

    #[cfg(test)]
    fn count(&self, name: &str, period: &str) -> Option<u64> {
        let cell = self.counters.get(name)?.clone();
        let counters = cell.lock().unwrap();
        counters.get(period).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::KeyPolicy;
    use crate::limits::windows::windows;

    fn scope(day: u64, total: u64, floors: Floors) -> BudgetScope {
        let policy = KeyPolicy {
            tokens_per_day: Some(day),
            tokens_total: Some(total),
            ..KeyPolicy::default()
        };
        BudgetScope {
            name: "team-a".into(),
            windows: windows(&policy, 1_796_000_000),
            floors,
        }
    }

    #[test]
    fn reserve_checks_every_window_and_adds_to_all_or_none() {
        let local = LocalBudgets::default();
        let s = scope(100, 150, Floors::default());
        let day = s.windows[0].period.clone();
        assert_eq!(local.reserve(&s, 60), Ok(()));
        assert_eq!(local.reserve(&s, 41), Err(0), "the day is over");
        assert_eq!(local.count("team-a", &day), Some(60), "nothing added");
        assert_eq!(local.reserve(&s, 40), Ok(()));
        assert_eq!(local.count("team-a", &day), Some(100));
        assert_eq!(local.count("team-a", "t"), Some(100));
        // A reservation alone over a limit is refused.
        let fresh = LocalBudgets::default();
        assert_eq!(fresh.reserve(&s, 101), Err(0));
    }

    #[test]
    fn settle_moves_by_the_difference_and_drop_refunds() {
        let local = Arc::new(LocalBudgets::default());
        let s = scope(100, 1000, Floors::default());
        let day = s.windows[0].period.clone();
        local.reserve(&s, 50).unwrap();
        let r = Reservation::new(50, s.clone(), HeldOn::Local(local.clone()));
        r.settle(30);
        assert_eq!(local.count("team-a", &day), Some(30));
        local.reserve(&s, 50).unwrap();
        drop(Reservation::new(
            50,
            s.clone(),
            HeldOn::Local(local.clone()),
        ));
        assert_eq!(local.count("team-a", &day), Some(30), "refunded");
    }

    #[test]
    fn floors_seed_and_raise_the_counters() {
        let local = LocalBudgets::default();
        let day = Floors {
            day: 90,
            month: 0,
            total: 90,
        };
        assert_eq!(local.reserve(&scope(100, 1000, day), 11), Err(0));
        assert_eq!(local.reserve(&scope(100, 1000, day), 10), Ok(()));
        // The store caught up with more spend from elsewhere: the counter follows it.
        let more = Floors {
            day: 95,
            month: 0,
            total: 995,
        };
        assert_eq!(local.reserve(&scope(1000, 1000, more), 6), Err(1));
    }

    #[test]
    fn exceeded_names_window_limit_reserve_and_reset() {
        let s = scope(100, 1000, Floors::default());
        match exceeded(&s.windows[0], 120) {
            ApiError::BudgetExceeded {
                window,
                limit,
                reserve,
                resets_at,
                retry_after_secs,
            } => {
                assert_eq!((window, limit, reserve), ("daily", 100, 120));
                assert!(resets_at.ends_with("T00:00:00Z"), "{resets_at}");
                assert!(retry_after_secs.is_some());
            }
            other => panic!("{other:?}"),
        }
        match exceeded(&s.windows[1], 1) {
            ApiError::BudgetExceeded {
                resets_at,
                retry_after_secs,
                ..
            } => assert_eq!((resets_at.as_str(), retry_after_secs), ("never", None)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_burst_reads_the_floors_once() {
        let local = Arc::new(LocalBudgets::default());
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let name: Arc<str> = "team-a".into();
        let burst = (0..50).map(|_| {
            let (local, reads, name) = (local.clone(), reads.clone(), name.clone());
            tokio::spawn(async move {
                local
                    .floors(&name, || async {
                        reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Ok::<_, ()>(Floors {
                            day: 7,
                            month: 7,
                            total: 7,
                        })
                    })
                    .await
            })
        });
        for request in burst.collect::<Vec<_>>() {
            assert_eq!(request.await.unwrap().unwrap().day, 7);
        }
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 1);
        let other: Arc<str> = "team-b".into();
        let failed = local.floors(&other, || async { Err::<Floors, _>("down") });
        assert_eq!(failed.await, Err("down"));
        assert_eq!(
            local.fresh_floors("team-b"),
            None,
            "a failed read is not kept"
        );
    }
}
