//! Token budgets. The limiter against a private Redis (two limiters = two instances):
//! reservations never pass the budget under concurrency, a flushed counter is seeded
//! again from the store's floor, settles are counted once, and a dead Redis follows
//! `redis_failure`. End to end with the real binary (second half of the file): two
//! instances on PostgreSQL and a private Redis never overspend, and the day stays spent
//! after a restart and a FLUSHDB; Redis killed mid-run under both failure policies; one
//! SQLite instance with the local backend. Last, the store's per-window sums.
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
        redis_timeout_ms: 5000,
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

// ---------------------------------------------------------------------------------
// End to end: the real binary, a mock upstream that reports its usage, the store.
// ---------------------------------------------------------------------------------

use std::sync::atomic::{AtomicU64, Ordering};

use axum::routing::post;
use axum::{Json, Router};
use common::{binary, client, config_from_toml, mock_upstream, sha256_hex, spawn_gateway, start};
use common::{Process, KEY_A};
use serde_json::{json, Value};
use sqlx::Row;

/// Input tokens the mock reports: at most the gateway's BPE estimate of the request.
const INPUT: u64 = 1;
/// `max_tokens` of every request; the mock answers with exactly that many.
const MAX_TOKENS: u64 = 40;

/// What the mock upstream answered, counted at the mock.
#[derive(Default)]
struct Answered {
    requests: AtomicU64,
    tokens: AtomicU64,
}

/// A chat upstream that reports usage input = INPUT, output = the request's max_tokens.
async fn usage_upstream() -> (String, Arc<Answered>) {
    let answered = Arc::new(Answered::default());
    let seen = answered.clone();
    let router = Router::new().route(
        "/v1/chat/completions",
        post(move |Json(body): Json<Value>| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let output = body["max_tokens"].as_u64().unwrap_or(0);
                seen.requests.fetch_add(1, Ordering::SeqCst);
                seen.tokens.fetch_add(INPUT + output, Ordering::SeqCst);
                Json(json!({
                    "id": "chatcmpl-budget", "object": "chat.completion", "created": 0,
                    "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok"}}],
                    "usage": {"prompt_tokens": INPUT, "completion_tokens": output,
                              "total_tokens": INPUT + output}
                }))
            }
        }),
    );
    (mock_upstream(router).await, answered)
}

fn chat_body() -> Value {
    json!({"model": "m", "max_tokens": MAX_TOKENS,
           "messages": [{"role": "user", "content": "hello"}]})
}

async fn chat(base: &str) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&chat_body())
        .send()
        .await
        .unwrap()
}

/// The reserve named in a 429 `budget_exceeded` message.
async fn refused_reserve(response: reqwest::Response) -> u64 {
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    common::assert_openai_error(&body, "rate_limit_error", "budget_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    let reserve = message
        .split("reserves ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no reservation in {message}"));
    reserve.parse().unwrap()
}

/// The reservation of one `chat_body()` request, as the gateway computes it: read from
/// the 429 an in-process gateway answers for a budget of one token (a reservation alone
/// over the limit is refused). Without `max_tokens`, the request reserves
/// `budget_default_max_tokens` in its place, exactly.
async fn reservation_of_one_request() -> u64 {
    let (upstream, answered) = usage_upstream().await;
    let toml = format!(
        "[limits]\nbudget_default_max_tokens = 1000\n{}\n[[keys]]\nname = \"probe\"\nsha256 = \"{}\"\ntokens_per_day = 1\n",
        upstream_toml(&upstream),
        sha256_hex(KEY_A)
    );
    let gw = spawn_gateway(config_from_toml(&toml)).await;
    let reserve = refused_reserve(chat(&gw.url("")).await).await;
    assert!(reserve >= INPUT + MAX_TOKENS, "{reserve}");
    let mut uncapped = chat_body();
    uncapped.as_object_mut().unwrap().remove("max_tokens");
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&uncapped)
        .send()
        .await
        .unwrap();
    assert_eq!(refused_reserve(response).await, reserve - MAX_TOKENS + 1000);
    assert_eq!(
        answered.requests.load(Ordering::SeqCst),
        0,
        "nothing reached upstream"
    );
    gw.shutdown.cancel();
    reserve
}

fn upstream_toml(url: &str) -> String {
    format!("[[upstreams]]\nname = \"mock\"\nbase_url = \"{url}\"\nmodels = [\"m\"]\n")
}

/// A config file for the binary: the mock upstream, `limits`, and KEY_A as `name` with
/// `tokens_per_day`.
fn config_file(
    upstream: &str,
    limits: &str,
    name: &str,
    tokens_per_day: u64,
) -> std::path::PathBuf {
    let path = common::temp_dir("budget-cfg").join("gatewayd.toml");
    let toml = format!(
        "[limits]\n{limits}\n{}\n[[keys]]\nname = \"{name}\"\nsha256 = \"{}\"\ntokens_per_day = {tokens_per_day}\n",
        upstream_toml(upstream),
        sha256_hex(KEY_A)
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// Redis settings for the binary. The timeout is long: these tests check what is
/// counted, and a debug build answering 200 concurrent requests on two busy cores can
/// take longer than a production timeout, which would turn the policy on mid-test. A
/// killed server is still noticed at once (its connections are reset).
fn redis_limits(url: &str, prefix: &str, failure: &str) -> String {
    format!(
        "backend = \"redis\"\nredis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\n\
         redis_timeout_ms = 5000\nredis_failure = \"{failure}\""
    )
}

/// The binary with `config`, its own data dir, and `database` (PostgreSQL) if given.
fn instance(
    config: &std::path::Path,
    data_dir: &std::path::Path,
    database: Option<&str>,
) -> Process {
    let mut command = binary();
    command
        .args(["--port", "0", "--config"])
        .arg(config)
        .env("GATEWAYD_DATA_DIR", data_dir);
    if let Some(url) = database {
        command.env("GATEWAYD_DATABASE_URL", url);
    }
    start(command)
}

/// Input plus output tokens the store holds for key `name`.
async fn stored_tokens(database: &str, name: &str) -> u64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database).await.unwrap();
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(input_tokens + output_tokens), 0) AS BIGINT) AS n \
         FROM token_usage WHERE key_name = $1",
    )
    .bind(name)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row.try_get::<i64, _>("n").unwrap() as u64
}

/// Waits until the store holds exactly what the mock answered (the batched usage
/// writes have landed), and returns it.
async fn store_catches_up(database: &str, name: &str, answered: &Answered) -> u64 {
    let mut last = 0;
    let started = Instant::now();
    loop {
        let expected = answered.tokens.load(Ordering::SeqCst);
        last = stored_tokens(database, name).await.max(last);
        if last == expected {
            return last;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the store holds {last} tokens, the mock answered {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` concurrent chat requests, split over `bases`: their statuses, each 429 checked.
async fn burst(bases: &[String], n: usize) -> (u64, u64) {
    let mut requests = Vec::new();
    for i in 0..n {
        let base = bases[i % bases.len()].clone();
        requests.push(tokio::spawn(async move { chat(&base).await }));
    }
    let (mut ok, mut refused) = (0, 0);
    for request in requests {
        let response = request.await.unwrap();
        match response.status().as_u16() {
            200 => ok += 1,
            429 => {
                let retry: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry >= 1);
                let body: Value = response.json().await.unwrap();
                common::assert_openai_error(&body, "rate_limit_error", "budget_exceeded");
                assert!(
                    body["error"]["message"].as_str().unwrap().contains("daily"),
                    "{body}"
                );
                refused += 1;
            }
            status => panic!(
                "unexpected status {status}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    (ok, refused)
}

fn postgres() -> Option<String> {
    let url = std::env::var("GATEWAYD_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        eprintln!("GATEWAYD_TEST_POSTGRES_URL not set: the two-instance test was not run");
    }
    url
}

/// Two instances share PostgreSQL and a private Redis: 200 concurrent requests against
/// a daily budget of 50 requests' worth never spend more than the budget; the refused
/// ones get 429 budget_exceeded with Retry-After. Then both instances restart and Redis
/// is flushed: the day's budget stays spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_pass_the_budget_and_it_survives_restart_and_flush() {
    let Some(database) = postgres() else { return };
    let reserve = reservation_of_one_request().await;
    let budget = 50 * reserve;
    let redis = PrivateRedis::start(free_port().await).await;
    let (upstream, answered) = usage_upstream().await;
    let name = unique("budget-two");
    let limits = redis_limits(redis.url(), &unique("gwbudget"), "closed");
    let config = config_file(&upstream, &limits, &name, budget);
    let dirs = [common::temp_dir("budget-a"), common::temp_dir("budget-b")];
    let a = instance(&config, &dirs[0], Some(&database));
    let b = instance(&config, &dirs[1], Some(&database));
    let bases = [a.url(""), b.url("")];
    let (ok, refused) = burst(&bases, 200).await;
    let stored = store_catches_up(&database, &name, &answered).await;
    let at_mock = answered.tokens.load(Ordering::SeqCst);
    println!(
        "two instances: {ok} answered, {refused} refused; spent {at_mock} of {budget} \
         (reservation {reserve}); overspend {}",
        at_mock.saturating_sub(budget)
    );
    assert_eq!(ok + refused, 200);
    assert_eq!(answered.requests.load(Ordering::SeqCst), ok);
    assert!(
        ok >= 50,
        "a budget of 50 requests' worth admitted only {ok}"
    );
    assert!(at_mock <= budget, "overspend: {} tokens", at_mock - budget);
    assert_eq!(stored, at_mock, "the store holds what the mock answered");
    // Spend the rest of the day's budget, so the next request is refused whatever the
    // estimate: then restart both instances and flush Redis.
    while chat(&bases[0]).await.status() == 200 {}
    let spent = store_catches_up(&database, &name, &answered).await;
    assert!(spent <= budget);
    drop((a, b));
    redis.flushdb().await;
    let a = instance(&config, &dirs[0], Some(&database));
    let b = instance(&config, &dirs[1], Some(&database));
    for base in [a.url(""), b.url("")] {
        let (ok, refused) = burst(&[base], 3).await;
        assert_eq!((ok, refused), (0, 3), "the day's budget stays spent");
    }
    assert_eq!(answered.tokens.load(Ordering::SeqCst), spent);
}

/// Redis killed mid-run and restarted: with `closed` requests get 503 while it is
/// down, with `local` they go on; either way the store ends with exactly what the mock
/// answered (nothing counted twice, nothing lost).
async fn redis_outage(failure: &str) {
    let Some(database) = postgres() else { return };
    let port = free_port().await;
    let mut redis = PrivateRedis::start(port).await;
    let (upstream, answered) = usage_upstream().await;
    let name = unique("budget-outage");
    let limits = redis_limits(redis.url(), &unique("gwbudget"), failure);
    let config = config_file(&upstream, &limits, &name, 10_000_000);
    let a = instance(&config, &common::temp_dir("outage-a"), Some(&database));
    let b = instance(&config, &common::temp_dir("outage-b"), Some(&database));
    let bases = [a.url(""), b.url("")];
    assert_eq!(burst(&bases, 20).await, (20, 0));
    // Requests in flight while Redis dies.
    let in_flight: Vec<_> = (0..20)
        .map(|i| {
            let base = bases[i % 2].clone();
            tokio::spawn(async move { chat(&base).await.status().as_u16() })
        })
        .collect();
    redis.stop();
    for request in in_flight {
        let status = request.await.unwrap();
        assert!(status == 200 || status == 503, "{status}");
    }
    for base in &bases {
        let response = chat(base).await;
        if failure == "closed" {
            assert_eq!(response.status(), 503);
            let body: Value = response.json().await.unwrap();
            common::assert_openai_error(&body, "server_error", "limits_unavailable");
        } else {
            assert_eq!(response.status(), 200, "local: requests go on");
        }
    }
    let _redis = PrivateRedis::start(port).await;
    for base in &bases {
        eventually("requests pass again", Duration::from_secs(15), || async {
            chat(base).await.status() == 200
        })
        .await;
    }
    assert_eq!(burst(&bases, 20).await, (20, 0));
    let stored = store_catches_up(&database, &name, &answered).await;
    assert_eq!(stored, answered.tokens.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_closed_refuses_and_counts_once() {
    redis_outage("closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_local_goes_on_and_counts_once() {
    redis_outage("local").await;
}

/// One instance on SQLite with the local backend: concurrent requests never pass the
/// budget, the store holds what the mock answered, and a restart keeps the day spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_local_backend_holds_the_budget_across_a_restart() {
    let reserve = reservation_of_one_request().await;
    let budget = 10 * reserve;
    let (upstream, answered) = usage_upstream().await;
    let name = unique("budget-local");
    let config = config_file(&upstream, "backend = \"local\"", &name, budget);
    let dir = common::temp_dir("budget-sqlite");
    let database = format!("sqlite://{}", dir.join("sessions.db").display());
    let gw = instance(&config, &dir, None);
    let (ok, refused) = burst(&[gw.url("")], 40).await;
    let stored = store_catches_up(&database, &name, &answered).await;
    let at_mock = answered.tokens.load(Ordering::SeqCst);
    println!("sqlite local: {ok} answered, {refused} refused; spent {at_mock} of {budget}");
    assert!(
        ok >= 10 && at_mock <= budget,
        "{ok} answered, {at_mock} of {budget}"
    );
    assert_eq!(stored, at_mock);
    while chat(&gw.url("")).await.status() == 200 {}
    let spent = store_catches_up(&database, &name, &answered).await;
    drop(gw);
    let gw = instance(&config, &dir, None);
    assert_eq!(burst(&[gw.url("")], 3).await, (0, 3), "the day stays spent");
    assert_eq!(answered.tokens.load(Ordering::SeqCst), spent);
}

/// The floors: what the store says a key spent today, this month and ever, on SQLite and
/// (when GATEWAYD_TEST_POSTGRES_URL is set) PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_sums_a_keys_spend_per_window() {
    let config = config_from_toml("");
    let mut stores = vec![(
        common::open_store(&config, false).await,
        format!("sqlite://{}", config.data_dir.join("sessions.db").display()),
    )];
    if let Ok(url) = std::env::var("GATEWAYD_TEST_POSTGRES_URL") {
        stores.push((common::open_store(&config, true).await, url));
    }
    for (store, database) in stores {
        let name = unique("spend");
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&database).await.unwrap();
        let rows = [
            ("2026-12-06", "m1", 100, 10),
            ("2026-12-06", "m2", 5, 0),
            ("2026-12-01", "m1", 1_000, 0),
            ("2026-11-30", "m1", 20_000, 0),
            ("2025-12-06", "m1", 300_000, 0),
        ];
        for (day, model, input, output) in rows {
            sqlx::query(
                "INSERT INTO token_usage (key_name, model, day, input_tokens, output_tokens) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&name)
            .bind(model)
            .bind(day)
            .bind(input as i64)
            .bind(output as i64)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
        let spent = store.spent(&name, "2026-12-06", "2026-12").await.unwrap();
        assert_eq!(
            (spent.day, spent.month, spent.total),
            (115, 1_115, 321_115),
            "{database}"
        );
        let none = store
            .spent(&unique("nobody"), "2026-12-06", "2026-12")
            .await
            .unwrap();
        assert_eq!((none.day, none.month, none.total), (0, 0, 0));
    }
}
