//! Routing in operation, on the real binary: an upstream that opens and closes says so in
//! one log line each; a SIGHUP that changes pools, weights and strategies keeps the
//! health of upstreams whose name is unchanged; two gateways sharing health through a
//! real Redis (127.0.0.1:6379): once one opens an upstream, the other skips it.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod routing_mock;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{binary, client, config_from_toml, spawn_gateway, start, temp_dir, two_keys_toml};
use common::{Gateway, KEY_A};
use routing_mock::{chat, upstream_state, Behaviour, Graveyard, Mock};
use serde_json::json;

/// Waits until stderr has a line containing `needle`.
fn wait_for_line(process: &common::Process, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !process.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} in:\n{}",
            process.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn post_chat(process: &common::Process) -> u16 {
    client()
        .post(process.url("/v1/chat/completions"))
        .header("host", "localhost")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `gatewayd_upstream_state{upstream=name}` as the process's /metrics says it.
async fn state(process: &common::Process, name: &str) -> Option<u8> {
    upstream_state(process.url("/metrics"), None, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_health_of_upstreams_whose_name_is_unchanged() {
    let dead = Graveyard::start().await;
    let live = Mock::start("live").await;
    let added = Mock::start("added").await;
    let dead_toml = |extra: &str| {
        format!(
            "[[upstreams]]\nname = \"dead\"\nbase_url = \"{}\"\nmodels = [\"m\"]\n{extra}\n",
            dead.url()
        )
    };
    let path = temp_dir("routing-hup").join("gatewayd.toml");
    let routing = "[routing]\nfailure_threshold = 1\ncooldown_secs = 300\n";
    let first = format!("{routing}{}{}", dead_toml(""), live.toml(""));
    std::fs::write(&path, first).unwrap();
    let mut command = binary();
    command.args(["--port", "0", "--config"]).arg(&path);
    let process = start(command);

    assert_eq!(post_chat(&process).await, 200, "the live upstream answers");
    assert_eq!(
        state(&process, "dead").await,
        Some(2),
        "one failure opens it"
    );
    let tried = dead.connections();

    // New strategy and weights (the dead one would now take 5 of 7), and a new upstream.
    let second = format!(
        "{routing}strategy = \"weighted\"\n{}{}{}",
        dead_toml("weight = 5"),
        live.toml("weight = 1"),
        added.toml("weight = 1")
    );
    std::fs::write(&path, second).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_line(&process, "upstreams and routing reloaded");

    assert_eq!(
        state(&process, "dead").await,
        Some(2),
        "the reload forgot it was open"
    );
    for _ in 0..40 {
        assert_eq!(post_chat(&process).await, 200);
    }
    assert_eq!(
        dead.connections(),
        tried,
        "the open upstream was tried after the reload"
    );
    assert_eq!(state(&process, &added.name).await, Some(0));
    assert!(
        added.hits() >= 10 && live.hits() >= 10,
        "the new pool is not weighted 1:1 between the live upstreams: {} and {}",
        live.hits(),
        added.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_log_line_when_an_upstream_opens_and_one_when_it_closes() {
    let flaky = Mock::start("flaky").await;
    let steady = Mock::start("steady").await;
    let path = temp_dir("routing-log").join("gatewayd.toml");
    let routing = "[routing]\nfailure_threshold = 2\ncooldown_secs = 1\n";
    std::fs::write(
        &path,
        format!("{routing}{}{}", flaky.toml(""), steady.toml("")),
    )
    .unwrap();
    let mut command = binary();
    command.args(["--port", "0", "--config"]).arg(&path);
    let process = start(command);
    assert_eq!(post_chat(&process).await, 200);

    flaky.kill().await;
    for _ in 0..10 {
        assert_eq!(post_chat(&process).await, 200);
    }
    wait_for_line(&process, "upstream opened");
    flaky.restart().await;
    let before = flaky.hits();
    let started = Instant::now();
    while flaky.hits() == before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never tried again"
        );
        assert_eq!(post_chat(&process).await, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_line(&process, "upstream closed");
    let log = process.stderr();
    let about = |what: &str| {
        log.lines()
            .filter(|l| l.contains(what) && l.contains(&flaky.name))
            .count()
    };
    assert_eq!(about("upstream opened"), 1, "{log}");
    assert_eq!(about("upstream closed"), 1, "{log}");
    let opened = log.lines().find(|l| l.contains("upstream opened")).unwrap();
    assert!(opened.contains("consecutive_failures"), "{opened}");
}

/// `gatewayd_upstream_state{upstream=name}` of an in-process gateway.
async fn gateway_state(gw: &Gateway, name: &str) -> Option<u8> {
    upstream_state(gw.url("/metrics"), Some(KEY_A), name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_health_through_redis() {
    let failing = Mock::start("shared-bad").await;
    failing.set(Behaviour::Status(500));
    let healthy = Mock::start("shared-good").await;
    let mut random = [0u8; 6];
    getrandom::getrandom(&mut random).unwrap();
    let toml = format!(
        "[limits]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n\
         redis_prefix = \"gwtest-{}\"\nredis_timeout_ms = 500\n\
         [routing]\nshare_health = true\nfailure_threshold = 2\ncooldown_secs = 60\n{}{}{}",
        hex::encode(random),
        failing.toml(""),
        healthy.toml(""),
        two_keys_toml()
    );
    let first = spawn_gateway(config_from_toml(&toml)).await;
    let second = spawn_gateway(config_from_toml(&toml)).await;
    let client = client();
    let url = first.url("/v1/chat/completions");
    for _ in 0..2 {
        assert_eq!(chat(&client, &url).await.0, 200, "the healthy one answers");
    }
    assert_eq!(failing.hits(), 2);
    assert_eq!(gateway_state(&first, &failing.name).await, Some(2));

    // The second gateway has sent it nothing, yet learns it is open.
    let started = Instant::now();
    while gateway_state(&second, &failing.name).await != Some(2) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not shared within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("shared after {:?}", started.elapsed());
    let url = second.url("/v1/chat/completions");
    for _ in 0..20 {
        assert_eq!(chat(&client, &url).await.0, 200);
    }
    assert_eq!(
        failing.hits(),
        2,
        "the second gateway tried the open upstream"
    );
}
