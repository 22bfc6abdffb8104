//! Measures the shared limiter's cost per request against the local one: N sequential
//! admissions (rate and concurrency both on) of one caller, each slot released at once.
//!
//!   cargo run --release --example limit_overhead -- [N] [REDIS_URL]
//!
//! Prints µs per admission for `backend = "local"` and `backend = "redis"`.

use std::sync::Arc;
use std::time::Instant;

use gatewayd::auth::Caller;
use gatewayd::config::Limits;
use gatewayd::ratelimit::{Backend, Limiter, RedisUrl};

async fn run(limiter: &Limiter, n: u32) -> f64 {
    let caller = Caller {
        name: Arc::from("bench"),
        key: None,
    };
    let started = Instant::now();
    for _ in 0..n {
        if let Ok(slot) = limiter.admit(&caller).await {
            drop(slot);
        }
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let mut limits = Limits {
        per_key_requests_per_minute: u32::MAX / 2,
        per_key_concurrent_requests: 1_000_000,
        ..Limits::default()
    };
    let local = Limiter::new(&limits);
    limits.backend = Backend::Redis;
    limits.redis_url = Some(RedisUrl(url));
    limits.redis_prefix = format!("bench-{}", std::process::id());
    let shared = Limiter::new(&limits);
    run(&shared, 100).await; // connect and load the scripts
    let local_us = run(&local, n).await;
    let shared_us = run(&shared, n).await;
    println!("n = {n}");
    println!("local: {local_us:.2} µs per admission");
    println!(
        "redis: {shared_us:.2} µs per admission (shared up: {:?})",
        shared.shared_up()
    );
    println!("redis overhead: {:.2} µs per request", shared_us - local_us);
}
