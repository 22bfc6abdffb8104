//! Circuit breaking over real mock upstreams: an upstream killed mid-run opens after the
//! threshold, gets no client request while open and closes after its restart and one
//! half-open success; `Retry-After: 3` keeps an upstream out for 3 s; a pool of one whose
//! upstream is dead answers fast 503s with `Retry-After` (OpenAI and Anthropic shapes)
//! while readiness stays 200 and the metrics say which upstream is open; active probes
//! close a recovered upstream without a client request, and probe only open ones.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod routing_mock;

use std::time::{Duration, Instant};

use common::{assert_openai_error, client, config_from_toml, spawn_gateway, two_keys_toml};
use common::{scrape_metrics, Gateway, KEY_A};
use routing_mock::{chat, quantile, upstream_state, Behaviour, Graveyard, Mock};
use serde_json::json;

async fn gateway(routing: &str, upstreams: &[String]) -> Gateway {
    let toml = format!("{routing}\n{}\n{}", upstreams.concat(), two_keys_toml());
    spawn_gateway(config_from_toml(&toml)).await
}

/// The breaker state of upstream `name` as `/metrics` says it (0 closed, 1 half-open,
/// 2 open); `None` when it says nothing.
async fn state(gw: &Gateway, name: &str) -> Option<u8> {
    upstream_state(gw.url("/metrics"), Some(KEY_A), name).await
}

const CLOSED: Option<u8> = Some(0);
const OPEN: Option<u8> = Some(2);

/// Attempts gatewayd made at upstream `name` so far (its latency histogram's count).
fn attempts(name: &str) -> u64 {
    let metrics = gatewayd::telemetry::handle().render();
    let series = format!("gatewayd_upstream_latency_seconds_count{{upstream=\"{name}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |count| count.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_upstream_opens_gets_nothing_then_closes_after_restart() {
    let primary = Mock::start("primary").await;
    let backup = Mock::start("backup").await;
    let routing = "[routing]\nfailure_threshold = 3\ncooldown_secs = 3\n";
    let gw = gateway(routing, &[primary.toml(""), backup.toml("")]).await;
    let url = gw.url("/v1/chat/completions");
    let client = client();

    let mut healthy = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        assert_eq!(chat(&client, &url).await.0, 200);
        healthy.push(started.elapsed());
    }
    assert_eq!((primary.hits(), backup.hits()), (200, 0));

    primary.kill().await;
    // Each request up to the threshold pays one failed attempt, then the backup answers.
    for failures in 1..=3 {
        assert_eq!(state(&gw, &primary.name).await, CLOSED, "open too early");
        assert_eq!(chat(&client, &url).await.0, 200);
        assert_eq!(backup.hits(), failures);
    }
    assert_eq!(
        state(&gw, &primary.name).await,
        OPEN,
        "not open after 3 failures"
    );
    let opened = Instant::now();
    let tried = attempts(&primary.name);

    // While open: no attempt at all goes to it (well within its 3 s cooldown).
    let mut outage = Vec::new();
    while outage.len() < 200 && opened.elapsed() < Duration::from_millis(1500) {
        let started = Instant::now();
        assert_eq!(chat(&client, &url).await.0, 200);
        outage.push(started.elapsed());
    }
    assert_eq!(
        attempts(&primary.name),
        tried,
        "a request was sent to the open upstream"
    );
    assert_eq!(backup.hits(), 3 + outage.len());
    let (healthy_p99, outage_p99) = (quantile(&healthy, 0.99), quantile(&outage, 0.99));
    eprintln!(
        "p50/p99 healthy {:?}/{healthy_p99:?}, while open {:?}/{outage_p99:?} ({} requests)",
        quantile(&healthy, 0.5),
        quantile(&outage, 0.5),
        outage.len()
    );

    // Restarted: after the cooldown one request tries it, succeeds and closes it.
    primary.restart().await;
    let before = primary.hits();
    while primary.hits() == before {
        assert!(
            opened.elapsed() < Duration::from_secs(30),
            "never tried again"
        );
        assert_eq!(chat(&client, &url).await.0, 200);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let trial_after = opened.elapsed();
    assert!(
        trial_after >= Duration::from_millis(2900),
        "tried after {trial_after:?}"
    );
    assert_eq!(
        primary.hits(),
        before + 1,
        "more than one half-open request"
    );
    assert_eq!(state(&gw, &primary.name).await, CLOSED);
    assert_eq!(chat(&client, &url).await.0, 200);
    assert_eq!(primary.hits(), before + 2, "closed, so it serves again");
}

/// The p99 claim where it can fail: an upstream that takes 200 ms to fail would add
/// 200 ms to every request without a breaker; once it is open, the p99 is back within
/// 1.5× of the healthy run's (plus 50 ms of slack for a loaded machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_open_a_slowly_failing_upstream_costs_requests_nothing() {
    let primary = Mock::start("sick").await;
    let backup = Mock::start("spare").await;
    let routing = "[routing]\nfailure_threshold = 3\ncooldown_secs = 60\n";
    let gw = gateway(routing, &[primary.toml(""), backup.toml("")]).await;
    let url = gw.url("/v1/chat/completions");
    let client = client();
    let mut healthy = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        assert_eq!(chat(&client, &url).await.0, 200);
        healthy.push(started.elapsed());
    }
    primary.set(Behaviour::SlowStatus(Duration::from_millis(200), 500));
    for _ in 0..3 {
        assert_eq!(chat(&client, &url).await.0, 200);
    }
    assert_eq!(state(&gw, &primary.name).await, OPEN);
    let mut open = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        assert_eq!(chat(&client, &url).await.0, 200);
        open.push(started.elapsed());
    }
    let (healthy_p99, open_p99) = (quantile(&healthy, 0.99), quantile(&open, 0.99));
    eprintln!("p99 healthy {healthy_p99:?}, while the sick upstream is open {open_p99:?}");
    assert!(
        open_p99 <= healthy_p99 * 3 / 2 + Duration::from_millis(50),
        "p99 {open_p99:?} while open, {healthy_p99:?} healthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_keeps_an_upstream_out_for_exactly_that_long() {
    let limited = Mock::start("limited").await;
    limited.set(Behaviour::TooManyOnce("3"));
    let other = Mock::start("other").await;
    let gw = gateway("", &[limited.toml(""), other.toml("")]).await;
    let url = gw.url("/v1/chat/completions");
    let client = client();
    let started = Instant::now();
    while limited.hits() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never tried again"
        );
        assert_eq!(chat(&client, &url).await.0, 200, "the 429 falls back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let arrivals = limited.arrivals();
    let out_for = arrivals[1] - arrivals[0];
    eprintln!(
        "kept out for {out_for:?}; the other upstream answered {} requests",
        other.hits()
    );
    assert!(other.hits() >= 10, "too few requests in between to judge");
    assert!(
        out_for >= Duration::from_millis(2500) && out_for <= Duration::from_millis(3500),
        "Retry-After: 3 kept it out for {out_for:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_one_answers_fast_503s_with_retry_after_once_open() {
    let dead = Graveyard::start().await;
    let name = format!("lone-{}", dead.addr.port());
    let upstream = format!(
        "[[upstreams]]\nname = \"{name}\"\nbase_url = \"{}\"\nmodels = [\"m\"]\n",
        dead.url()
    );
    let routing = "[routing]\nfailure_threshold = 3\ncooldown_secs = 30\n";
    let gw = gateway(routing, &[upstream]).await;
    let url = gw.url("/v1/chat/completions");
    let client = client();
    for _ in 0..3 {
        assert_eq!(chat(&client, &url).await.0, 502);
    }
    let connections = dead.connections();
    assert!(connections >= 3, "{connections}");

    let mut took = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let (status, headers, body) = chat(&client, &url).await;
        took.push(started.elapsed());
        assert_eq!(status, 503, "{body}");
        assert_openai_error(&body, "upstream_error", "upstream_unavailable");
        let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(
            (1..=30).contains(&retry_after),
            "Retry-After: {retry_after}"
        );
    }
    eprintln!(
        "503 once open: median {:?}, p99 {:?}, max {:?}",
        quantile(&took, 0.5),
        quantile(&took, 0.99),
        quantile(&took, 1.0)
    );
    // Loose on purpose (a loaded CI machine); the median above is the real figure.
    assert!(quantile(&took, 0.5) < Duration::from_millis(500));
    assert_eq!(
        dead.connections(),
        connections,
        "the open upstream was still tried"
    );

    // Anthropic clients get the same refusal in Anthropic's shape.
    let messages = client
        .post(gw.url("/v1/messages"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(messages.status(), 503);
    assert!(messages.headers().contains_key("retry-after"));
    let body: serde_json::Value = messages.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");

    // An open upstream is not gatewayd's fault: still ready; the metrics name it.
    let ready = client.get(gw.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = scrape_metrics(gw.url("/metrics"), KEY_A).await;
    let open = format!("gatewayd_upstream_state{{upstream=\"{name}\"}} 2");
    assert!(metrics.contains(&open), "no {open} in:\n{metrics}");
    assert!(metrics.contains(&format!(
        "gatewayd_upstream_in_flight{{upstream=\"{name}\"}} 0"
    )));
    assert!(metrics.contains("gatewayd_upstream_ewma_ttfb_seconds{"));
}

/// Polls `/metrics` until upstream `name` is in `wanted` state; panics after `limit`.
async fn wait_for_state(gw: &Gateway, name: &str, wanted: Option<u8>, limit: Duration) {
    let started = Instant::now();
    while state(gw, name).await != wanted {
        assert!(
            started.elapsed() < limit,
            "{name} not {wanted:?} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_close_a_recovered_upstream_and_leave_closed_ones_alone() {
    let recovering = Mock::start("recovering").await;
    let dead = Graveyard::start().await;
    let dead_name = format!("dead-{}", dead.addr.port());
    let dead_toml = format!(
        "[[upstreams]]\nname = \"{dead_name}\"\nbase_url = \"{}\"\nmodels = [\"m\"]\n",
        dead.url()
    );
    let backup = Mock::start("kept").await;
    // No half-open trial within the test: only a probe can close anything.
    let routing =
        "[routing]\nfailure_threshold = 1\ncooldown_secs = 300\nprobe_interval_secs = 1\n";
    let upstreams = [recovering.toml(""), dead_toml, backup.toml("")];
    let gw = gateway(routing, &upstreams).await;
    let url = gw.url("/v1/chat/completions");
    let client = client();
    assert_eq!(chat(&client, &url).await.0, 200);
    assert_eq!(recovering.hits(), 1);

    recovering.kill().await;
    assert_eq!(chat(&client, &url).await.0, 200, "the backup answers");
    assert_eq!(state(&gw, &recovering.name).await, OPEN);
    assert_eq!(state(&gw, &dead_name).await, OPEN);

    recovering.restart().await;
    wait_for_state(&gw, &recovering.name, CLOSED, Duration::from_secs(15)).await;
    assert!(recovering.probes() >= 1);
    assert_eq!(recovering.hits(), 1, "a client request was spent on it");
    assert_eq!(chat(&client, &url).await.0, 200);
    assert_eq!(recovering.hits(), 2, "closed, so it serves again");

    // Two more rounds probe the dead one (still open); nothing probes the closed ones.
    let (probed, dead_seen) = (recovering.probes(), dead.connections());
    let started = Instant::now();
    while dead.connections() < dead_seen + 2 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the open upstream is not probed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recovering.probes(), probed, "a closed upstream was probed");
    assert_eq!(backup.probes(), 0, "a closed upstream was probed");
}
