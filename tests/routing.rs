//! Pools and strategies over real mock upstreams: `weighted` splits by weight, `least_busy`
//! sends fewer requests to a slow upstream, `latency` drains an upstream that turns slow,
//! and the retry budget keeps a failing pool from multiplying its load.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod routing_mock;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, config_from_toml, spawn_gateway, two_keys_toml, Gateway};
use routing_mock::{chat, Behaviour, Mock};

async fn gateway(routing: &str, upstreams: &[String]) -> Gateway {
    let toml = format!("{routing}\n{}\n{}", upstreams.concat(), two_keys_toml());
    spawn_gateway(config_from_toml(&toml)).await
}

/// Sends `total` chat requests, `concurrency` at a time; returns how many were answered 200.
async fn load(gw: &Gateway, total: usize, concurrency: usize) -> usize {
    let sent = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let url = gw.url("/v1/chat/completions");
    let workers = (0..concurrency).map(|_| {
        let (sent, ok, url) = (sent.clone(), ok.clone(), url.clone());
        tokio::spawn(async move {
            let client = client();
            while sent.fetch_add(1, Ordering::SeqCst) < total {
                if chat(&client, &url).await.0 == 200 {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    });
    for worker in workers.collect::<Vec<_>>() {
        worker.await.unwrap();
    }
    ok.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_three_to_one_over_a_thousand_requests() {
    let heavy = Mock::start("w3").await;
    let light = Mock::start("w1").await;
    let routing = "[[routing.models]]\nmodel = \"m\"\nstrategy = \"weighted\"\n";
    let gw = gateway(
        routing,
        &[light.toml("weight = 1"), heavy.toml("weight = 3")],
    )
    .await;
    assert_eq!(load(&gw, 1000, 8).await, 1000);
    let (heavy, light) = (heavy.hits(), light.hits());
    assert_eq!(heavy + light, 1000);
    // 3:1 is 750:250; within ±5 % of the requests.
    assert!(
        (700..=800).contains(&heavy),
        "weight 3 got {heavy}, weight 1 got {light}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_sends_fewer_requests_to_a_slow_upstream() {
    let slow = Mock::start("slow").await;
    slow.set(Behaviour::Slow(Duration::from_millis(200)));
    let fast = Mock::start("fast").await;
    // The slow one comes first in config order: `ordered` would send it everything.
    let routing = "[routing]\nstrategy = \"least_busy\"\n";
    let gw = gateway(routing, &[slow.toml(""), fast.toml("")]).await;
    assert_eq!(load(&gw, 300, 8).await, 300);
    let (slow, fast) = (slow.hits(), fast.hits());
    assert!(slow > 0, "least_busy never tried the slow upstream");
    assert!(
        slow * 4 < fast,
        "the slow upstream got {slow} requests, the fast one {fast}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_drains_an_upstream_that_turns_slow_within_two_seconds() {
    let steady = Mock::start("steady").await;
    let turning = Mock::start("turning").await;
    let routing = "[routing]\nstrategy = \"latency\"\n";
    let gw = gateway(routing, &[steady.toml(""), turning.toml("")]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let url = gw.url("/v1/chat/completions");
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            tokio::spawn(async move {
                let client = client();
                while !stop.load(Ordering::SeqCst) {
                    assert_eq!(chat(&client, &url).await.0, 200);
                }
            })
        })
        .collect();
    // Both share the load while both are fast.
    steady.wait_for_hits(50, Duration::from_secs(30)).await;
    turning.wait_for_hits(50, Duration::from_secs(30)).await;
    turning.set(Behaviour::Slow(Duration::from_secs(1)));
    let turned = Instant::now();
    // Two seconds after the turn, the next 200 requests to the steady one are the window.
    while turned.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (slowed_then, steady_then) = (turning.hits(), steady.hits());
    steady
        .wait_for_hits(steady_then + 200, Duration::from_secs(60))
        .await;
    let slowed_after = turning.hits() - slowed_then;
    let window = turned.elapsed();
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let at: Vec<Duration> = turning
        .arrivals()
        .into_iter()
        .filter(|at| *at > turned)
        .map(|at| at - turned)
        .collect();
    eprintln!(
        "after the turn the slowed upstream got requests at {at:?}; from 2 s to {window:?}: \
         {slowed_after} to it, 200 to the steady one"
    );
    // Drained: from 2 s after the turn on, it gets at most the odd request that checks
    // whether it is fast again (its cost decays), not its share of the load.
    assert!(
        slowed_after <= 4,
        "the slowed upstream still got {slowed_after} of ~200 requests from 2 s after it turned on: {at:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_tier_serves_only_while_the_tier_above_is_full() {
    let primary = Mock::start("tier0").await;
    primary.set(Behaviour::Slow(Duration::from_millis(300)));
    let overflow = Mock::start("tier1").await;
    let upstreams = [
        overflow.toml("priority = 1"),
        primary.toml("priority = 0\nmax_in_flight = 2"),
    ];
    let gw = gateway("", &upstreams).await;
    // One at a time: the first tier always has room.
    assert_eq!(load(&gw, 3, 1).await, 3);
    assert_eq!((primary.hits(), overflow.hits()), (3, 0));
    // Eight at a time: it takes two, the next tier the rest.
    assert_eq!(load(&gw, 24, 8).await, 24);
    assert_eq!(
        primary.peak_in_flight(),
        2,
        "max_in_flight = 2 was exceeded"
    );
    assert!(
        overflow.hits() >= 6,
        "the next tier got {}",
        overflow.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget_when_two_of_three_fail() {
    let first = Mock::start("fail1").await;
    let second = Mock::start("fail2").await;
    let good = Mock::start("good").await;
    first.set(Behaviour::Status(500));
    second.set(Behaviour::Status(503));
    // The breakers never open here: only the budget limits the retries.
    let routing = "[routing]\nfailure_threshold = 1000000\nretry_budget_percent = 20\n";
    let upstreams = [first.toml(""), second.toml(""), good.toml("")];
    let gw = gateway(routing, &upstreams).await;
    let started = Instant::now();
    let answered = load(&gw, 300, 6).await;
    let seconds = started.elapsed().as_secs_f64();
    let firsts = first.hits();
    let retries = second.hits() + good.hits();
    eprintln!(
        "300 requests in {seconds:.2} s: {firsts} first attempts, {retries} retries, {answered} answered"
    );
    assert_eq!(firsts, 300, "every request starts at the first upstream");
    assert!(
        answered > 0 && good.hits() > 0,
        "no request fell back at all"
    );
    // 20 % of the first attempts (the floor, ten per 10 s, is less). Without a budget
    // every request would retry twice: 600.
    let bound = 300 * 20 / 100;
    assert!(
        retries <= bound,
        "{retries} retries for 300 first attempts (budget {bound})"
    );
    // Counted: retries by the reason the attempt before failed, and the ones refused.
    let metrics = gatewayd::telemetry::handle().render();
    let count = |series: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(series));
        line.and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("gatewayd_upstream_retries_total{reason=\"server_error\"}") >= 1.0);
    assert!(
        count("gatewayd_retry_budget_exhausted_total") >= 1.0,
        "{metrics}"
    );
}
