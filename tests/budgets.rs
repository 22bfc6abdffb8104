//! Token budgets. The limiter against a private Redis (two limiters = two instances):
//! reservations never pass the budget under concurrency, a flushed counter is seeded
//! again from the store's floor, settles are counted once, and a dead Redis follows
//! `redis_failure`. End to end with the real binary: see `budgets_e2e` below.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatewayd::config::{Backend, Limits, RedisFailure, RedisUrl};
use gatewayd::error::ApiError;
use gatewayd::keys::KeyPolicy;
use gatewayd::limits::{windows, BudgetScope, Floors, Limiter};
use tokio::net::TcpListener;

/// A prefix and key name no other test (or earlier run) uses.
fn unique(tag: &str) -> String {
    let mut random = [0u8; 6];
    getrandom::getrandom(&mut random).unwrap();
    format!("{tag}-{}", hex::encode(random))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `check` until it holds, at most `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A private redis-server on `port` (so FLUSHDB and kill are safe), killed on drop.
struct PrivateRedis(Child, String);

impl PrivateRedis {
    async fn start(port: u16) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        let check = url.clone();
        eventually(
            "the private redis-server answers",
            Duration::from_secs(15),
            || {
                let url = check.clone();
                async move { ping(&url).await }
            },
        )
        .await;
        PrivateRedis(child, url)
    }

    fn url(&self) -> &str {
        &self.1
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    async fn cmd<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        command.query_async(&mut conn).await.unwrap()
    }

    async fn flushdb(&self) {
        let () = self.cmd(&redis::cmd("FLUSHDB")).await;
    }

    async fn get(&self, key: &str) -> Option<u64> {
        self.cmd(redis::cmd("GET").arg(key)).await
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .is_ok()
}

fn limiter(url: &str, prefix: &str, failure: RedisFailure) -> Arc<Limiter> {
    let limits = Limits {
        backend: Backend::Redis,
        redis_url: Some(RedisUrl(url.into())),
        redis_prefix: prefix.into(),
        redis_timeout_ms: 500,
        redis_failure: failure,
        ..Limits::default()
    };
    Arc::new(Limiter::new(&limits))
}

fn daily(limit: u64) -> KeyPolicy {
    KeyPolicy {
        tokens_per_day: Some(limit),
        tokens_total: Some(limit * 10),
        ..KeyPolicy::default()
    }
}

fn scope(name: &str, policy: &KeyPolicy, floors: Floors) -> BudgetScope {
    BudgetScope {
        name: name.into(),
        windows: windows(policy, now()),
        floors,
    }
}

/// The Redis counter of key `name`'s daily window.
fn day_counter(prefix: &str, name: &str) -> String {
    let period = &windows(&daily(1), now())[0].period;
    format!("{prefix}:{{b:k:{name}}}:{period}")
}

/// Two limiters (two instances) share one budget through Redis: 200 concurrent turns,
/// each reserving 100 tokens and spending 90, against 50 reservations' worth. What is
/// spent never passes the budget, and the counter ends at exactly what was spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_reservations_never_pass_the_budget() {
    let redis = PrivateRedis::start(free_port().await).await;
    let prefix = unique("gwbudget");
    let name = unique("team");
    let a = limiter(redis.url(), &prefix, RedisFailure::Closed);
    let b = limiter(redis.url(), &prefix, RedisFailure::Closed);
    let policy = daily(5_000);
    let mut turns = Vec::new();
    for i in 0..200 {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        let scope = scope(&name, &policy, Floors::default());
        turns.push(tokio::spawn(async move {
            match limiter.reserve(scope, 100).await {
                Ok(reservation) => {
                    tokio::task::yield_now().await;
                    reservation.settle(90);
                    Ok(())
                }
                Err(refused) => Err(refused),
            }
        }));
    }
    let (mut granted, mut refused) = (0u64, 0u64);
    for turn in turns {
        match turn.await.unwrap() {
            Ok(()) => granted += 1,
            Err(ApiError::BudgetExceeded {
                window,
                limit,
                reserve,
                retry_after_secs,
                ..
            }) => {
                assert_eq!((window, limit, reserve), ("daily", 5_000, 100));
                assert!(retry_after_secs.is_some());
                refused += 1;
            }
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
    }
    let spent = granted * 90;
    println!(
        "granted {granted}, refused {refused}, spent {spent} of 5000, overspend {}",
        spent.saturating_sub(5_000)
    );
    assert!(spent <= 5_000, "overspend: {spent}");
    assert!(
        granted >= 50,
        "the budget allowed at least 50 turns, got {granted}"
    );
    assert_eq!(granted + refused, 200);
    let key = day_counter(&prefix, &name);
    eventually(
        "every settle reached Redis",
        Duration::from_secs(10),
        || async { redis.get(&key).await == Some(spent) },
    )
    .await;
}

/// The store is the truth: a flushed counter is seeded again from the floor, and a turn
/// settled after the flush is counted once (floor plus what it spent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_never_resets_a_window() {
    let redis = PrivateRedis::start(free_port().await).await;
    let prefix = unique("gwbudget");
    let name = unique("team");
    let limiter = limiter(redis.url(), &prefix, RedisFailure::Closed);
    let policy = daily(5_000);
    let floors = Floors {
        day: 4_000,
        month: 4_000,
        total: 4_000,
    };
    let key = day_counter(&prefix, &name);
    let held = limiter
        .reserve(scope(&name, &policy, floors), 500)
        .await
        .unwrap();
    assert_eq!(redis.get(&key).await, Some(4_500), "seeded from the floor");
    redis.flushdb().await;
    held.settle(300);
    eventually(
        "the settle seeded the counter",
        Duration::from_secs(10),
        || async { redis.get(&key).await == Some(4_300) },
    )
    .await;
    let over = limiter.reserve(scope(&name, &policy, floors), 701).await;
    assert!(
        matches!(over, Err(ApiError::BudgetExceeded { .. })),
        "{over:?}"
    );
    redis.flushdb().await;
    // After a flush with the store caught up, the budget is as spent as before.
    let caught_up = Floors {
        day: 4_300,
        month: 4_300,
        total: 4_300,
    };
    let over = limiter.reserve(scope(&name, &policy, caught_up), 701).await;
    assert!(
        matches!(over, Err(ApiError::BudgetExceeded { .. })),
        "{over:?}"
    );
    let refund = limiter
        .reserve(scope(&name, &policy, caught_up), 700)
        .await
        .unwrap();
    drop(refund);
    eventually(
        "the refund reached Redis",
        Duration::from_secs(10),
        || async { redis.get(&key).await == Some(4_300) },
    )
    .await;
    let ttl: i64 = redis.cmd(redis::cmd("TTL").arg(&key)).await;
    assert!(
        ttl > 0 && ttl <= 2 * 86_400,
        "a day counter expires after its day: {ttl}"
    );
}

/// A dead Redis: `closed` refuses with 503 limits_unavailable, `local` goes on with this
/// process's counters (still within the budget). A settle Redis could not take is not
/// retried, so when Redis is back nothing is counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_follows_the_failure_policy() {
    let port = free_port().await;
    let mut redis = PrivateRedis::start(port).await;
    let url = redis.url().to_string();
    let prefix = unique("gwbudget");
    let name = unique("team");
    let closed = limiter(&url, &prefix, RedisFailure::Closed);
    let local = limiter(&url, &prefix, RedisFailure::Local);
    let policy = daily(1_000);
    let held = closed
        .reserve(scope(&name, &policy, Floors::default()), 100)
        .await
        .unwrap();
    redis.stop();
    held.settle(80); // lost with Redis, and never retried
    let refused = closed
        .reserve(scope(&name, &policy, Floors::default()), 100)
        .await;
    assert!(
        matches!(refused, Err(ApiError::LimitsUnavailable)),
        "{refused:?}"
    );
    let mut granted = 0;
    for _ in 0..20 {
        if let Ok(reservation) = local
            .reserve(scope(&name, &policy, Floors::default()), 100)
            .await
        {
            granted += 1;
            std::mem::forget(reservation); // held to the end: nothing refunded
        }
    }
    assert_eq!(granted, 10, "the local fallback still holds the budget");
    assert_eq!(local.shared_up(), Some(false));
    let redis = PrivateRedis::start(port).await;
    let floors = Floors {
        day: 80,
        month: 80,
        total: 80,
    };
    eventually("Redis decides again", Duration::from_secs(15), || {
        let closed = closed.clone();
        let scope = scope(&name, &policy, floors);
        async move {
            match closed.reserve(scope, 10).await {
                Ok(reservation) => {
                    reservation.settle(10);
                    true
                }
                Err(_) => false,
            }
        }
    })
    .await;
    let key = day_counter(&prefix, &name);
    eventually(
        "the counter is the floor plus the new turn",
        Duration::from_secs(10),
        || async { redis.get(&key).await == Some(90) },
    )
    .await;
}
