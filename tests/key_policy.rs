//! The strong-key policy against properly random keys: 10,000 keys from each common
//! generator are all accepted (no false refusals), made here the way each tool makes them.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use gatewayd::keys::{check_strength, encode_key};

const PER_METHOD: usize = 10_000;

/// A key generator under test, by the name people know it by.
type Method = (&'static str, fn() -> String);

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).unwrap();
    bytes
}

/// `openssl rand -hex N`: lowercase hex.
fn openssl_hex<const N: usize>() -> String {
    hex::encode(random::<N>())
}

/// `openssl rand -base64 32`: standard alphabet with padding.
fn openssl_base64() -> String {
    base64::engine::general_purpose::STANDARD.encode(random::<32>())
}

/// Python's `secrets.token_urlsafe(32)`: base64url without padding.
fn token_urlsafe() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>())
}

/// `uuid.uuid4()` as text: version 4 and the RFC 4122 variant bits set.
fn uuid4() -> String {
    let mut b = random::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `gatewayd keygen`, without the retry loop in `generate`, so a refusal would show.
fn keygen() -> String {
    encode_key(&random::<32>())
}

#[test]
fn random_keys_from_every_common_generator_are_accepted() {
    let methods: [Method; 6] = [
        ("openssl rand -hex 16", openssl_hex::<16>),
        ("openssl rand -hex 32", openssl_hex::<32>),
        ("openssl rand -base64 32", openssl_base64),
        ("secrets.token_urlsafe(32)", token_urlsafe),
        ("uuid4", uuid4),
        ("gatewayd keygen", keygen),
    ];
    for (method, make) in methods {
        let mut refused = Vec::new();
        for _ in 0..PER_METHOD {
            let key = make();
            if let Err(problem) = check_strength(&key) {
                refused.push(format!("{key}: {problem}"));
            }
        }
        assert!(
            refused.is_empty(),
            "{method}: {} of {PER_METHOD} refused, e.g. {:?}",
            refused.len(),
            &refused[..refused.len().min(5)]
        );
    }
}
