//! Threads given up on at a deadline (a file read stuck in the kernel): counted until they end.
//!
//! A blocked `open()` or `read()` cannot be cancelled, so whoever waits for such a thread
//! abandons it at its deadline and carries on. Each abandoned thread is counted while it
//! still runs; the daemon reports the count (a log line and the
//! `gatewayd_reload_stuck_threads` gauge) through [`report_to`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

static LEFT_BEHIND: AtomicUsize = AtomicUsize::new(0);
static REPORT: OnceLock<fn(usize, bool)> = OnceLock::new();

/// How many abandoned threads are still running now.
pub fn count() -> usize {
    LEFT_BEHIND.load(Ordering::Acquire)
}

/// Calls `report(count, grew)` each time a thread is abandoned (`grew`) or an abandoned
/// thread ends. Set once per process; later calls are ignored.
pub fn report_to(report: fn(usize, bool)) {
    let _ = REPORT.set(report);
}

fn change(grew: bool) {
    let now = if grew {
        LEFT_BEHIND.fetch_add(1, Ordering::AcqRel) + 1
    } else {
        LEFT_BEHIND.fetch_sub(1, Ordering::AcqRel).saturating_sub(1)
    };
    if let Some(report) = REPORT.get() {
        report(now, grew);
    }
}

#[derive(Default)]
struct State {
    ended: bool,
    abandoned: bool,
}

/// Shared by one worker thread and the one that waits for it.
#[derive(Clone, Default)]
pub struct Watch(Arc<Mutex<State>>);

impl Watch {
    pub fn new() -> Watch {
        Watch::default()
    }

    /// Held by the worker; dropping it (however the worker ends) marks the end.
    pub fn worker(&self) -> WorkerEnd {
        WorkerEnd(self.clone())
    }

    /// The waiter's deadline passed. True when the worker was still running, and is
    /// now counted as left behind; false when it ended in the meantime.
    pub fn abandon(&self) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.ended || state.abandoned {
            return false;
        }
        state.abandoned = true;
        drop(state);
        change(true);
        true
    }
}

/// Marks its worker's end when dropped.
pub struct WorkerEnd(Watch);

impl Drop for WorkerEnd {
    fn drop(&mut self) {
        let mut state = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        state.ended = true;
        let was_counted = state.abandoned;
        drop(state);
        if was_counted {
            change(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_abandoned_once_and_only_while_it_runs() {
        let watch = Watch::new();
        let end = watch.worker();
        assert!(watch.abandon());
        assert!(!watch.abandon(), "counted once");
        drop(end);
        let finished = Watch::new();
        drop(finished.worker());
        assert!(
            !finished.abandon(),
            "a worker that ended is never left behind"
        );
    }
}
