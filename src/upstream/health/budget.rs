//! A pool's shared counters: the retry budget (retries at most a share of first attempts
//! over the last 10 s, with a floor of one retry per second: ten per window) and the turn counter the
//! `weighted` and `least_busy` strategies spread requests with.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Seconds of history the budget weighs.
const WINDOW_SECS: u64 = 10;
/// Retries always allowed, per second of the window, however few first attempts.
const FLOOR_PER_SEC: u64 = 1;

/// One second of a pool's attempts.
#[derive(Default)]
struct Second {
    /// Which second (since the clock's start) these counts are for.
    second: AtomicU64,
    firsts: AtomicU32,
    retries: AtomicU32,
}

/// What one model's requests share, whichever upstream answers them.
pub struct Pool {
    percent: u32,
    seconds: [Second; WINDOW_SECS as usize],
    turn: AtomicU64,
}

impl Pool {
    pub fn new(retry_budget_percent: u32) -> Pool {
        Pool {
            percent: retry_budget_percent,
            seconds: Default::default(),
            turn: AtomicU64::new(0),
        }
    }

    /// The next number in this pool's sequence of requests.
    pub fn next_turn(&self) -> u64 {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    /// A request made its first attempt.
    pub fn first_attempt(&self, now_ms: u64) {
        self.current(now_ms / 1000)
            .firsts
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, or says none is left: retries over the window
    /// may reach the budget's share of its first attempts, or one per second of it
    /// (ten), whichever is more.
    pub fn try_retry(&self, now_ms: u64) -> bool {
        let now = now_ms / 1000;
        let this = self.current(now);
        // Counted first, so that concurrent retries see each other and never overdraw.
        this.retries.fetch_add(1, Ordering::Relaxed);
        let (firsts, retries) = self.totals(now);
        let retries = u64::from(retries);
        let within_share = retries * 100 <= u64::from(firsts) * u64::from(self.percent);
        if within_share || retries <= WINDOW_SECS * FLOOR_PER_SEC {
            return true;
        }
        this.retries.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// First attempts and retries over the window ending at second `now`.
    fn totals(&self, now: u64) -> (u32, u32) {
        let oldest = now.saturating_sub(WINDOW_SECS - 1);
        self.seconds
            .iter()
            .filter(|s| (oldest..=now).contains(&s.second.load(Ordering::Relaxed)))
            .fold((0, 0), |(f, r), s| {
                (
                    f + s.firsts.load(Ordering::Relaxed),
                    r + s.retries.load(Ordering::Relaxed),
                )
            })
    }

    /// The counts of second `now`, emptied first when its slot still holds an old one.
    fn current(&self, now: u64) -> &Second {
        let slot = &self.seconds[(now % WINDOW_SECS) as usize];
        let held = slot.second.load(Ordering::Relaxed);
        if held != now
            && slot
                .second
                .compare_exchange(held, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.firsts.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;

    #[test]
    fn retries_stay_within_the_share_of_first_attempts() {
        let pool = Pool::new(20);
        let mut allowed = 0;
        for i in 0..1000 {
            let now = 5_000 + i; // 1,000 requests within one second
            pool.first_attempt(now);
            if pool.try_retry(now) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 200);
    }

    #[test]
    fn ten_retries_per_ten_seconds_are_always_allowed() {
        let pool = Pool::new(0);
        for _ in 0..10 {
            assert!(pool.try_retry(1_000));
        }
        assert!(!pool.try_retry(1_500));
        // Ten seconds on, the first second's retries have left the window.
        assert!(pool.try_retry(11_000));
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let pool = Pool::new(20);
        for _ in 0..100 {
            pool.first_attempt(0);
        }
        for _ in 0..20 {
            assert!(pool.try_retry(0));
        }
        assert!(!pool.try_retry(0));
        // Ten seconds on, those first attempts no longer pay for retries: the floor does.
        for _ in 0..10 {
            assert!(pool.try_retry(10_500));
        }
        assert!(!pool.try_retry(10_600));
    }
}
