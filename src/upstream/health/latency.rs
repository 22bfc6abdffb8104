//! A peak-EWMA of time to first byte: a slower answer is taken at once, faster ones
//! pull it down with a 10 s time constant, and while no answer comes it decays towards 0
//! so a drained upstream is tried again now and then (as Finagle and Linkerd do).

use std::sync::atomic::{AtomicU64, Ordering};

/// The time constant of the decay, in seconds.
const DECAY_SECS: f64 = 10.0;
/// The least cost of one request, so an upstream with no answers yet is not free.
const FLOOR_SECS: f64 = 0.001;

#[derive(Default)]
pub struct PeakEwma {
    /// Seconds, as `f64` bits.
    value: AtomicU64,
    /// When `value` was last updated, in clock nanoseconds.
    stamp: AtomicU64,
}

impl PeakEwma {
    /// One answer took `seconds` to its first byte.
    pub fn observe(&self, seconds: f64, now_ns: u64) {
        let last = self.stamp.swap(now_ns, Ordering::Relaxed);
        let previous = f64::from_bits(self.value.load(Ordering::Relaxed));
        let next = if seconds >= previous {
            seconds
        } else {
            let weight = decay(now_ns.saturating_sub(last));
            previous * weight + seconds * (1.0 - weight)
        };
        self.value.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The last value (what `gatewayd_upstream_ewma_ttfb_seconds` shows).
    pub fn seconds(&self) -> f64 {
        f64::from_bits(self.value.load(Ordering::Relaxed))
    }

    /// The cost of sending one more request: the decayed estimate times the requests
    /// that would then be in flight.
    pub fn cost(&self, in_flight: u32, now_ns: u64) -> f64 {
        let since = now_ns.saturating_sub(self.stamp.load(Ordering::Relaxed));
        let estimate = (self.seconds() * decay(since)).max(FLOOR_SECS);
        estimate * f64::from(in_flight.saturating_add(1))
    }
}

fn decay(elapsed_ns: u64) -> f64 {
    (-(elapsed_ns as f64 / 1e9) / DECAY_SECS).exp()
}

#[cfg(test)]
mod tests {
    use super::PeakEwma;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_slow_answer_counts_at_once_and_fades() {
        let ewma = PeakEwma::default();
        ewma.observe(0.01, SECOND);
        ewma.observe(0.5, 2 * SECOND);
        assert_eq!(ewma.seconds(), 0.5);
        ewma.observe(0.01, 3 * SECOND);
        assert!(
            ewma.seconds() < 0.5 && ewma.seconds() > 0.4,
            "{}",
            ewma.seconds()
        );
        // Idle for a minute: the cost falls towards the floor.
        assert!(ewma.cost(0, 63 * SECOND) < 0.01);
    }

    #[test]
    fn requests_in_flight_multiply_the_cost() {
        let ewma = PeakEwma::default();
        ewma.observe(0.1, SECOND);
        let one = ewma.cost(0, SECOND);
        let four = ewma.cost(3, SECOND);
        assert!((four / one - 4.0).abs() < 1e-9);
    }
}
