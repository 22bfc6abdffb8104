//! A dudect-style timing test of `auth::verify`: how long a wrong key takes to be refused
//! must not depend on how much of a real key it contains.
//!
//! Method (after Reparaz, Balasch and Verbauwhede, "Dude, is my code constant time?"):
//! - What is secret is the configured keys' *content*. A presented token's length is
//!   public (the caller chose it), so every class compared here has the keys' length and
//!   differs only in content: a random token, a real key with its last byte changed, a
//!   real key's first half followed by random bytes, and the hex of another configured
//!   key's digest (its prefix, cut to the same length).
//! - Each class is compared with a random token of the same length, by Welch's t.
//! - Measurements are interleaved: every round times each class once, in a fresh random
//!   order, so drift and noise from other processes fall on all classes alike.
//! - Each sample times a small batch of calls (the clock is coarse next to one call);
//!   samples above the 90th percentile of a comparison's pooled samples are cropped
//!   (preemption, interrupts).
//! - Threshold: |t| < 10, the level at which dudect reports "definitely not constant
//!   time", for the median of three independent repetitions (a leak repeats; a burst of
//!   noise from another process on a shared machine does not).
//! - Every token is copied into one scratch buffer before it is timed, so all classes
//!   are read from the same address.
//!
//! A control pair (a 4-block token against a 1-block one) checks that the harness does
//! see a real difference.
// Helpers outside #[test] fns unwrap too: a panic there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{config_from_toml, sha256_hex, state_for, two_keys_toml, KEY_A, KEY_B};
use gatewayd::keys::KeySet;

const ROUNDS: usize = 3000;
const BATCH: usize = 4;
const CROP_PERCENTILE: f64 = 0.90;
const T_THRESHOLD: f64 = 10.0;
const REPETITIONS: usize = 3;

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

/// The one buffer every token is copied into before it is timed, so every class is read
/// from the same address: no class gains or loses from where its allocation landed
/// (cache-set conflicts, 4K aliasing with the stack).
#[repr(C, align(64))]
struct Scratch {
    bytes: [u8; 256],
    len: usize,
}

impl Scratch {
    fn load(&mut self, token: &[u8]) -> &[u8] {
        self.bytes[..token.len()].copy_from_slice(token);
        self.len = token.len();
        &self.bytes[..self.len]
    }
}

/// Interleaved samples, one vector per token.
fn measure(keys: &KeySet, tokens: &[Vec<u8>], seed: u64) -> Vec<Vec<f64>> {
    let mut scratch = Box::new(Scratch {
        bytes: [0; 256],
        len: 0,
    });
    let mut rng = Rng(seed);
    let mut samples = vec![Vec::with_capacity(ROUNDS); tokens.len()];
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    // Warm-up: caches, lazy allocations, CPU frequency.
    for token in tokens {
        for _ in 0..50 {
            time_batch(keys, scratch.load(token));
        }
    }
    for _ in 0..ROUNDS {
        rng.shuffle(&mut order);
        for &class in &order {
            let token = scratch.load(&tokens[class]);
            samples[class].push(time_batch(keys, token));
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

/// A random token of `len` bytes in the keys' alphabet, after the `gwd_` prefix.
fn random_token(len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = Rng(seed());
    let mut token = b"gwd_".to_vec();
    while token.len() < len {
        token.push(ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize]);
    }
    token
}

#[test]
fn verify_time_does_not_depend_on_the_wrong_key() {
    let keys = keys();
    let len = KEY_A.len();
    let baseline = random_token(len);
    let random = random_token(len);
    let mut last_byte = KEY_A.as_bytes().to_vec();
    *last_byte.last_mut().unwrap() ^= 0x01;
    let mut first_half = KEY_A.as_bytes()[..len / 2].to_vec();
    first_half.extend_from_slice(&random_token(len)[len / 2..]);
    let digest_prefix = sha256_hex(KEY_B).as_bytes()[..len].to_vec();

    let classes: [(&str, Vec<u8>); 4] = [
        ("another random token", random),
        ("a real key with its last byte changed", last_byte),
        ("a real key's first half, then random bytes", first_half),
        ("the hex of another key's digest", digest_prefix),
    ];
    for (_, token) in &classes {
        assert_eq!(token.len(), len, "every class has the keys' length");
        assert!(gatewayd::auth::verify(&keys, token).is_none());
    }
    let mut tokens = vec![baseline];
    tokens.extend(classes.iter().map(|(_, token)| token.clone()));
    // Independent repetitions; a class fails only if its median |t| crosses the
    // threshold. A real content-dependent leak shows in every repetition; a burst of
    // noise from another process on a shared machine shows in one.
    let mut t_values = vec![Vec::new(); classes.len()];
    for _ in 0..REPETITIONS {
        let samples = measure(&keys, &tokens, seed());
        for (i, ts) in t_values.iter_mut().enumerate() {
            ts.push(welch_t(&samples[0], &samples[i + 1]));
        }
    }

    let mut failures = Vec::new();
    for ((name, _), ts) in classes.iter().zip(&t_values) {
        let mut magnitudes: Vec<f64> = ts.iter().map(|t| t.abs()).collect();
        magnitudes.sort_by(f64::total_cmp);
        let median = magnitudes[magnitudes.len() / 2];
        eprintln!("{name}: Welch t = {ts:.2?}, median |t| = {median:.2}");
        if median >= T_THRESHOLD {
            failures.push(format!("{name}: t = {ts:.2?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "wrong keys of one length are refused in times that depend on their content \
         (|t| must stay below {T_THRESHOLD}): {failures:?}"
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
    eprintln!("control (4 blocks against 1): Welch t = {t:.2}");
    assert!(
        t.abs() >= T_THRESHOLD,
        "control pair not detected: Welch t = {t:.2}"
    );
}
