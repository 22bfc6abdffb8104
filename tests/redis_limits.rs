//! Limits shared through a real Redis: two gateways share one rate limit, one concurrency
//! limit (leases released at the end of a stream, expired after a SIGKILL) and one
//! failed-auth throttle; a dead Redis falls back to local limits (counted) or, with
//! `redis_failure = "closed"`, to 503, and the shared limits come back with Redis.
//! Readiness also says 503 while shutdown drains.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use common::{
    binary, client, config_from_toml, mock_upstream, spawn_gateway, start, two_keys_toml, Gateway,
    KEY_A, KEY_B,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

/// A prefix no other test (or earlier run) uses.
fn prefix() -> String {
    let mut random = [0u8; 6];
    getrandom::getrandom(&mut random).unwrap();
    format!("gwtest-{}", hex::encode(random))
}

fn limits_toml(url: &str, prefix: &str, extra: &str) -> String {
    format!(
        "[limits]\nbackend = \"redis\"\nredis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\n\
         redis_timeout_ms = 500\n{extra}\n{}",
        two_keys_toml()
    )
}

async fn models(gw: &Gateway, key: &str) -> reqwest::Response {
    client()
        .get(gw.url("/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn status(gw: &Gateway, key: &str) -> u16 {
    models(gw, key).await.status().as_u16()
}

/// A dead Redis address: the port was bound, then released.
async fn dead_redis() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("redis://127.0.0.1:{port}")
}

async fn redis_keys(url: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Polls `check` (which may send a request) until it holds, at most `limit`.
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

#[tokio::test]
async fn two_gateways_share_one_per_key_rate_limit() {
    let prefix = prefix();
    let toml = limits_toml(SHARED_REDIS, &prefix, "per_key_requests_per_minute = 4");
    let a = spawn_gateway(config_from_toml(&toml)).await;
    let b = spawn_gateway(config_from_toml(&toml)).await;
    for i in 0..4 {
        let gw = if i % 2 == 0 { &a } else { &b };
        assert_eq!(status(gw, KEY_A).await, 200, "request {i}");
    }
    for gw in [&a, &b] {
        let refused = models(gw, KEY_A).await;
        assert_eq!(refused.status(), 429);
        assert!(refused.headers().contains_key("retry-after"));
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    }
    // Another key has its own budget.
    assert_eq!(status(&b, KEY_B).await, 200);
    // Redis holds names, never keys.
    let keys = redis_keys(SHARED_REDIS, &prefix).await;
    assert!(keys.iter().any(|k| k.contains("alice")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains(KEY_A) || k.contains(KEY_B)));
    assert_eq!(a.state.limiter.shared_up(), Some(true));
}

/// An upstream whose chat streams send one event, then wait for `finish` (one stream
/// per `notify_one`) before `[DONE]`.
async fn held_stream_upstream(finish: Arc<Notify>) -> String {
    let router = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let finish = finish.clone();
            async move {
                let first =
                    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
                let events = futures_util::stream::unfold(0, move |step| {
                    let finish = finish.clone();
                    async move {
                        match step {
                            0 => Some((Ok::<_, std::io::Error>(first.to_string()), 1)),
                            1 => {
                                finish.notified().await;
                                Some((Ok("data: [DONE]\n\n".to_string()), 2))
                            }
                            _ => None,
                        }
                    }
                });
                (
                    [("content-type", "text/event-stream")],
                    Body::from_stream(events),
                )
                    .into_response()
            }
        }),
    );
    mock_upstream(router).await
}

fn upstream_toml(url: &str) -> String {
    format!("[[upstreams]]\nname = \"held\"\nbase_url = \"{url}\"\nmodels = [\"m\"]\n")
}

fn stream_request(gw_url: String) -> reqwest::RequestBuilder {
    client().post(gw_url).bearer_auth(KEY_A).json(&json!({
        "model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]
    }))
}

#[tokio::test]
async fn a_concurrency_lease_is_shared_and_released_when_the_stream_ends() {
    let finish = Arc::new(Notify::new());
    let upstream = held_stream_upstream(finish.clone()).await;
    let prefix = prefix();
    let toml = format!(
        "{}\n{}",
        limits_toml(SHARED_REDIS, &prefix, "per_key_concurrent_requests = 1"),
        upstream_toml(&upstream)
    );
    let a = spawn_gateway(config_from_toml(&toml)).await;
    let b = spawn_gateway(config_from_toml(&toml)).await;
    let mut open = stream_request(a.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let first = open.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("hi"));
    // The slot is taken on A: B refuses the same key.
    assert_eq!(status(&b, KEY_A).await, 429);
    assert_eq!(status(&a, KEY_A).await, 429);
    assert_eq!(status(&b, KEY_B).await, 200);
    finish.notify_one();
    while open.chunk().await.unwrap().is_some() {}
    eventually("the lease is released", Duration::from_secs(10), || async {
        status(&b, KEY_A).await == 200
    })
    .await;
}

#[tokio::test]
async fn the_lease_of_a_killed_instance_expires() {
    let finish = Arc::new(Notify::new());
    let upstream = held_stream_upstream(finish).await;
    let prefix = prefix();
    let toml = format!(
        "{}\n{}",
        limits_toml(
            SHARED_REDIS,
            &prefix,
            "per_key_concurrent_requests = 1\nredis_lease_ttl_secs = 2"
        ),
        upstream_toml(&upstream)
    );
    let dir = common::temp_dir("lease");
    let path = dir.join("gatewayd.toml");
    std::fs::write(&path, &toml).unwrap();
    let mut command = binary();
    command.args(["--port", "0", "--config"]).arg(&path);
    let mut process = start(command);
    let mut open = stream_request(process.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    open.chunk().await.unwrap().unwrap();
    let other = spawn_gateway(config_from_toml(&toml)).await;
    // Held (and renewed past its 2 s ttl) while the instance lives.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(&other, KEY_A).await, 429);
    process.child.kill().unwrap(); // SIGKILL: no chance to release
    process.child.wait().unwrap();
    let killed = Instant::now();
    eventually(
        "the dead instance's lease expires",
        Duration::from_secs(15),
        || async { status(&other, KEY_A).await == 200 },
    )
    .await;
    assert!(killed.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn the_failed_auth_throttle_is_shared() {
    let prefix = prefix();
    let toml = limits_toml(SHARED_REDIS, &prefix, "failed_auth_per_minute = 3");
    let a = spawn_gateway(config_from_toml(&toml)).await;
    let b = spawn_gateway(config_from_toml(&toml)).await;
    let wrong = "gwd_wrongwrongwrongwrongwrongwrongwrong";
    for (i, gw) in [&a, &b, &a].into_iter().enumerate() {
        assert_eq!(status(gw, wrong).await, 401, "failure {i}");
    }
    assert_eq!(status(&b, wrong).await, 429);
    // The address is blocked on both instances, even with a good key.
    assert_eq!(status(&a, KEY_A).await, 429);
    assert_eq!(status(&b, KEY_A).await, 429);
    let keys = redis_keys(SHARED_REDIS, &prefix).await;
    assert!(keys.iter().any(|k| k.contains("ip:127.0.0.1")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains(wrong)));
}

fn backend_errors() -> f64 {
    gatewayd::telemetry::handle()
        .render()
        .lines()
        .find(|l| l.starts_with("gatewayd_limit_backend_errors_total"))
        .and_then(|l| l.split_whitespace().last())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_dead_redis_falls_back_to_local_limits_and_is_counted() {
    gatewayd::telemetry::handle();
    let before = backend_errors();
    let toml = limits_toml(
        &dead_redis().await,
        &prefix(),
        "per_key_requests_per_minute = 2",
    );
    let gw = spawn_gateway(config_from_toml(&toml)).await;
    assert_eq!(status(&gw, KEY_A).await, 200);
    assert_eq!(status(&gw, KEY_A).await, 200);
    assert_eq!(status(&gw, KEY_A).await, 429, "local limits still apply");
    assert_eq!(gw.state.limiter.shared_up(), Some(false));
    assert!(backend_errors() > before, "the failure is counted");
    let ready = client().get(gw.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "the local policy stays ready");
}

#[tokio::test]
async fn closed_policy_answers_503_and_is_not_ready() {
    let toml = limits_toml(
        &dead_redis().await,
        &prefix(),
        "per_key_requests_per_minute = 100\nredis_failure = \"closed\"",
    );
    let gw = spawn_gateway(config_from_toml(&toml)).await;
    let refused = models(&gw, KEY_A).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "limits_unavailable");
    assert_eq!(body["error"]["type"], "server_error");
    let ready = client().get(gw.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
}

/// A private redis-server on `port`, killed on drop.
struct PrivateRedis(Child);

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
        eventually(
            "the private redis-server answers",
            Duration::from_secs(15),
            || {
                let url = url.clone();
                async move {
                    let Ok(client) = redis::Client::open(url.as_str()) else {
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
            },
        )
        .await;
        PrivateRedis(child)
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn ready(gw: &Gateway) -> u16 {
    let response = client().get(gw.url("/health/ready")).send().await.unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn shared_limits_come_back_when_redis_returns() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("redis://127.0.0.1:{port}");
    let mut redis = PrivateRedis::start(port).await;
    let toml = limits_toml(
        &url,
        &prefix(),
        "per_key_requests_per_minute = 3\nredis_failure = \"closed\"",
    );
    let a = spawn_gateway(config_from_toml(&toml)).await;
    let b = spawn_gateway(config_from_toml(&toml)).await;
    assert_eq!(status(&a, KEY_B).await, 200);
    redis.stop();
    assert_eq!(status(&a, KEY_A).await, 503);
    assert_eq!(ready(&a).await, 503);
    let _redis = PrivateRedis::start(port).await;
    for gw in [&a, &b] {
        eventually("ready again", Duration::from_secs(15), || async {
            ready(gw).await == 200
        })
        .await;
    }
    for i in 0..3 {
        let gw = if i % 2 == 0 { &a } else { &b };
        assert_eq!(status(gw, KEY_A).await, 200, "request {i}");
    }
    assert_eq!(status(&b, KEY_A).await, 429);
    assert_eq!(status(&a, KEY_A).await, 429);
    assert_eq!(a.state.limiter.shared_up(), Some(true));
}

#[tokio::test]
async fn readiness_is_503_while_shutdown_drains() {
    use tower::ServiceExt;
    let gw = spawn_gateway(config_from_toml(&two_keys_toml())).await;
    assert_eq!(ready(&gw).await, 200);
    gw.shutdown.cancel();
    gw.state.draining.cancelled().await;
    let request = axum::http::Request::get("/health/ready")
        .body(Body::empty())
        .unwrap();
    let response = gatewayd::app(gw.state.clone())
        .oneshot(common::from_localhost(request))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}
