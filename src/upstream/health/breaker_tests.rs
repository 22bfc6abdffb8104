//! The breaker's state machine, on a clock the tests move by hand.

use std::time::Duration;

use super::*;

fn policy(threshold: u32, cooldown: u64, max: u64) -> BreakerPolicy {
    BreakerPolicy {
        failure_threshold: threshold,
        cooldown: Duration::from_secs(cooldown),
        max_cooldown: Duration::from_secs(max),
    }
}

fn go(health: &Health, now: u64) -> bool {
    match health.claim(0, now) {
        Claim::Go { trial } => trial,
        other => panic!("expected a place, got {other:?}"),
    }
}

#[test]
fn opens_after_the_threshold_and_skips_until_the_cooldown_ends() {
    let health = Health::new("a", policy(3, 10, 300));
    for _ in 0..2 {
        go(&health, 0);
        assert_eq!(health.failed(false, None, 0), None);
        health.leave();
    }
    go(&health, 0);
    assert_eq!(
        health.failed(false, None, 0),
        Some(Transition::Opened {
            cause: Cause::Failures,
            for_ms: 10_000
        })
    );
    health.leave();
    assert_eq!(health.claim(0, 4_000), Claim::Open { left_ms: 6_000 });
    assert_eq!(health.state(4_000), State::Open);
    assert_eq!(health.state(10_000), State::HalfOpen);
}

#[test]
fn a_success_in_between_resets_the_count() {
    let health = Health::new("a", policy(2, 10, 300));
    assert_eq!(health.failed(false, None, 0), None);
    assert_eq!(health.succeeded(false), None);
    assert_eq!(health.failed(false, None, 0), None);
    assert_eq!(health.state(0), State::Closed);
}

#[test]
fn exactly_one_trial_then_success_closes() {
    let health = Health::new("a", policy(1, 10, 300));
    health.failed(false, None, 0);
    assert!(
        go(&health, 10_000),
        "the first request after the cooldown is the trial"
    );
    assert_eq!(health.claim(0, 10_001), Claim::Open { left_ms: 0 });
    assert_eq!(health.succeeded(true), Some(Transition::Closed));
    assert_eq!(health.state(10_002), State::Closed);
    assert!(!go(&health, 10_003));
}

#[test]
fn a_failed_trial_doubles_the_cooldown_up_to_the_cap() {
    let health = Health::new("a", policy(1, 10, 25));
    health.failed(false, None, 0);
    let mut now = 10_000;
    for expected in [20_000, 25_000, 25_000] {
        assert!(go(&health, now));
        assert_eq!(
            health.failed(true, None, now),
            Some(Transition::Opened {
                cause: Cause::TrialFailed,
                for_ms: expected
            })
        );
        assert_eq!(
            health.claim(0, now + expected - 1),
            Claim::Open { left_ms: 1 }
        );
        now += expected;
    }
    // Success resets the cooldown to its base.
    assert!(go(&health, now));
    health.succeeded(true);
    health.failed(false, None, now);
    assert_eq!(health.open_for(now), Some(10_000));
}

#[test]
fn retry_after_opens_for_exactly_that_long_capped() {
    let health = Health::new("a", policy(5, 10, 60));
    assert_eq!(
        health.failed(false, Some(3_000), 1_000),
        Some(Transition::Opened {
            cause: Cause::RetryAfter,
            for_ms: 3_000
        })
    );
    assert_eq!(health.claim(0, 3_999), Claim::Open { left_ms: 1 });
    assert!(go(&health, 4_000));
    let capped = Health::new("b", policy(5, 10, 60));
    capped.failed(false, Some(3_600_000), 0);
    assert_eq!(capped.open_for(0), Some(60_000));
}

#[test]
fn a_released_trial_is_ready_for_the_next_request() {
    let health = Health::new("a", policy(1, 10, 300));
    health.failed(false, None, 0);
    assert!(go(&health, 10_000));
    health.released(true, 10_000);
    health.leave();
    assert!(go(&health, 10_001));
    assert_eq!(health.in_flight(), 1);
}

#[test]
fn max_in_flight_is_a_hard_cap() {
    let health = Health::new("a", policy(3, 10, 300));
    assert_eq!(health.claim(2, 0), Claim::Go { trial: false });
    assert_eq!(health.claim(2, 0), Claim::Go { trial: false });
    assert_eq!(health.claim(2, 0), Claim::Full);
    assert!(!health.available(2, 0));
    health.leave();
    assert!(health.available(2, 0));
}

#[test]
fn peers_open_and_close_what_they_opened() {
    let health = Health::new("a", policy(3, 10, 300));
    assert!(health.opened_by_peer(5_000, 0).is_some());
    assert_eq!(health.claim(0, 1_000), Claim::Open { left_ms: 4_000 });
    assert_eq!(health.closed_by_peer(), Some(Transition::Closed));
    // Opened here: a peer's close does not override it.
    health.failed(false, Some(5_000), 0);
    assert_eq!(health.closed_by_peer(), None);
}
