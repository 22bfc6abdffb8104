//! A dudect-style timing test of `auth::verify`: how long a wrong key takes to be refused
//! must not depend on how it relates to the real keys.
//!
//! Method (after Reparaz, Balasch and Verbauwhede, "Dude, is my code constant time?"):
//! - Classes of wrong key: a baseline of the real keys' length, one differing from a
//!   real key only in its last byte, a short one and a long one.
//! - Measurements are interleaved: every round times each class once, in a fresh random
//!   order, so drift and noise from other processes fall on all classes alike.
//! - Each sample times a small batch of calls (the clock is coarse next to one call);
//!   samples above the 90th percentile of a comparison's pooled samples are cropped
//!   (preemption, interrupts).
//! - Statistic: Welch's t against the baseline. Threshold: |t| < 10, the level at which
//!   dudect reports "definitely not constant time".
//!
//! The presented token's length is public (the caller chose it), and `verify` hashes it
//! first, so its cost has a small linear term in that length (in a debug build, ~25 ns
//! per byte of SHA-256 padding). That reveals nothing, but it is measurable. So:
//! - the last-byte class has the baseline's length and is compared with it directly;
//! - the short and long classes sit symmetrically around the keys' length, within one
//!   SHA-256 block, and are compared with the baseline *pooled*: the linear term
//!   cancels, while a length shortcut (returning early when the lengths differ, or
//!   comparing plaintext) makes both faster and stands out.
//!
//! A control pair (a 4-block token) checks that the harness does see a real difference.
// Helpers outside #[test] fns unwrap too: a panic there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{config_from_toml, state_for, two_keys_toml, KEY_A};
use gatewayd::keys::KeySet;

const ROUNDS: usize = 3000;
const BATCH: usize = 4;
const CROP_PERCENTILE: f64 = 0.90;
const T_THRESHOLD: f64 = 10.0;

/// xorshift64*: a tiny seeded PRNG for the interleaving order.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

fn time_batch(keys: &KeySet, token: &[u8]) -> f64 {
    let started = Instant::now();
    for _ in 0..BATCH {
        assert!(black_box(gatewayd::auth::verify(black_box(keys), black_box(token))).is_none());
    }
    started.elapsed().as_nanos() as f64
}

/// Interleaved samples, one vector per token.
fn measure(keys: &KeySet, tokens: &[Vec<u8>], seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Rng(seed);
    let mut samples = vec![Vec::with_capacity(ROUNDS); tokens.len()];
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    // Warm-up: caches, lazy allocations, CPU frequency.
    for token in tokens {
        for _ in 0..50 {
            time_batch(keys, token);
        }
    }
    for _ in 0..ROUNDS {
        rng.shuffle(&mut order);
        for &class in &order {
            samples[class].push(time_batch(keys, &tokens[class]));
        }
    }
    samples
}

/// Welch's t after cropping both samples at the pooled percentile.
fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    let mut pooled: Vec<f64> = a.iter().chain(b).copied().collect();
    pooled.sort_by(f64::total_cmp);
    let cut = pooled[((pooled.len() as f64) * CROP_PERCENTILE) as usize];
    let stats = |xs: &[f64]| {
        let kept: Vec<f64> = xs.iter().copied().filter(|x| *x <= cut).collect();
        let n = kept.len() as f64;
        let mean = kept.iter().sum::<f64>() / n;
        let var = kept.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var, n)
    };
    let (ma, va, na) = stats(a);
    let (mb, vb, nb) = stats(b);
    (ma - mb) / (va / na + vb / nb).sqrt()
}

fn keys() -> KeySet {
    let state = state_for(config_from_toml(&two_keys_toml()));
    let keys = state.keys.load_full();
    (*keys).clone()
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).unwrap();
    u64::from_le_bytes(bytes) | 1
}

#[test]
fn verify_time_does_not_depend_on_the_wrong_key() {
    let keys = keys();
    let baseline = b"gwd_Hq3Vz8Lm1Tx6Rb9Wc4Ky7Np2Fs5Dj0Ga".to_vec();
    let mut last_byte = KEY_A.as_bytes().to_vec();
    *last_byte.last_mut().unwrap() ^= 0x01;
    let short = b"gwd_Zq7Xm2Lp9Rt4Vb8Nc1Wd".to_vec();
    let long = b"gwd_Pw3Nc8Vb1Qx6Lk9Mz4Hr7Ts2Jd5Fy0GaEu8Ro3Ki6WlX".to_vec();
    assert_eq!(baseline.len(), KEY_A.len());
    assert_eq!(KEY_A.len() - short.len(), long.len() - KEY_A.len());
    assert!(long.len() <= 55, "one SHA-256 block");

    let tokens = [baseline, last_byte, short, long];
    let samples = measure(&keys, &tokens, seed());
    let t_last = welch_t(&samples[0], &samples[1]);
    let lengths: Vec<f64> = samples[2].iter().chain(&samples[3]).copied().collect();
    let t_lengths = welch_t(&samples[0], &lengths);
    eprintln!("last byte differs: Welch t = {t_last:.2}");
    eprintln!("short and long, pooled: Welch t = {t_lengths:.2}");
    eprintln!(
        "(alone, with the public length term: short t = {:.2}, long t = {:.2})",
        welch_t(&samples[0], &samples[2]),
        welch_t(&samples[0], &samples[3])
    );
    assert!(
        t_last.abs() < T_THRESHOLD,
        "a wrong key differing from a real key only in its last byte is refused in a \
         different time: Welch t = {t_last:.2} (|t| must stay below {T_THRESHOLD})"
    );
    assert!(
        t_lengths.abs() < T_THRESHOLD,
        "short and long wrong keys are refused in a different time than one of the keys' \
         length: Welch t = {t_lengths:.2} (|t| must stay below {T_THRESHOLD})"
    );
}

#[test]
fn the_harness_detects_a_real_difference() {
    let keys = keys();
    // Four SHA-256 blocks instead of one: a difference the test must see.
    let tokens = [
        b"gwd_Hq3Vz8Lm1Tx6Rb9Wc4Ky7Np2Fs5Dj0Ga".to_vec(),
        "gwd_"
            .bytes()
            .chain((0..200).map(|i| b'a' + (i % 26) as u8))
            .collect(),
    ];
    let samples = measure(&keys, &tokens, seed());
    let t = welch_t(&samples[0], &samples[1]);
    assert!(
        t.abs() >= T_THRESHOLD,
        "control pair not detected: Welch t = {t:.2}"
    );
}
