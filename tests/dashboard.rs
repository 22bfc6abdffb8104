//! The Grafana dashboard (`config/grafana/gatewayd.json`) queries only metrics that exist:
//! after ordinary traffic (a chat, a stream, a 401, a session turn) every metric name in
//! every PromQL expression is in `/metrics`, error counters included (registered at zero).
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::sessions::{create, say};
use common::upstream::chat_upstream;
use common::{binary, client, scrape_metrics, start, temp_dir, KEY_A};
use serde_json::{json, Value};

const DASHBOARD: &str = include_str!("../config/grafana/gatewayd.json");

/// Every `expr` of every panel (rows included), with the panel's title.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            found.push((
                panel["title"].as_str().unwrap().to_string(),
                expr.to_string(),
            ));
        }
    }
    found
}

/// The metric names a PromQL expression selects: identifiers that are not inside label
/// matchers (`{…}`), ranges (`[…]`), strings or grouping lists (`by (…)`), are not
/// functions (followed by `(`, or by a grouping clause as in `sum by (…) (…)`), keywords,
/// numbers or `$variables`. Panics on unbalanced brackets or an unterminated string, so
/// a malformed expression fails the test.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset"];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    // Open brackets; 'L' is the `(` of a grouping list.
    let mut open: Vec<char> = Vec::new();
    let (mut names, mut grouping_next, mut i) = (Vec::new(), false, 0);
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            let close = chars[i + 1..]
                .iter()
                .position(|d| *d == c)
                .unwrap_or_else(|| panic!("unterminated string in {expr}"));
            i += close + 2;
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            // A number, exponent included (`1e-9`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || ".-".contains(chars[i])) {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let rest: String = chars[i..].iter().collect();
            let rest = rest.trim_start();
            let function = rest.starts_with('(')
                || GROUPING.iter().any(|g| {
                    rest.starts_with(&format!("{g} ")) || rest.starts_with(&format!("{g}("))
                });
            let inside = matches!(open.last(), Some('{' | '[' | 'L'));
            let variable = start > 0 && chars[start - 1] == '$';
            if GROUPING.contains(&word.as_str()) && !inside {
                grouping_next = true;
            } else if !inside && !variable && !function && !KEYWORDS.contains(&word.as_str()) {
                names.push(word);
            }
            continue;
        }
        match c {
            '(' if grouping_next => open.push('L'),
            '{' | '[' | '(' => open.push(c),
            '}' | ']' | ')' => {
                let opened = open
                    .pop()
                    .unwrap_or_else(|| panic!("unbalanced {c} in {expr}"));
                let expected = match c {
                    '}' => "{",
                    ']' => "[",
                    _ => "(L",
                };
                assert!(
                    expected.contains(opened),
                    "mismatched {opened}…{c} in {expr}"
                );
            }
            _ => {}
        }
        if !c.is_whitespace() {
            grouping_next = false;
        }
        i += 1;
    }
    assert!(open.is_empty(), "unbalanced brackets in {expr}");
    names
}

#[test]
fn the_expression_reader_finds_metric_names() {
    assert_eq!(
        metric_names(
            r#"sum by (route, status) (rate(gatewayd_requests_total{instance=~"$instance",status=~"5.."}[$__rate_interval])) / clamp_min(sum(rate(x_total[5m])), 1e-9)"#
        ),
        ["gatewayd_requests_total", "x_total"]
    );
    assert_eq!(
        metric_names("histogram_quantile(0.95, sum by (le) (rate(a_bucket[1m])))"),
        ["a_bucket"]
    );
    assert_eq!(
        metric_names("sum without(op)(increase(b_total{x=\"y\"}[$__range])) or on(z) c"),
        ["b_total", "c"]
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_exists_after_ordinary_traffic() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let exprs = expressions(&dashboard);
    assert!(
        exprs.len() >= 20,
        "the dashboard has {} queries",
        exprs.len()
    );

    let (url, _) = chat_upstream().await;
    let dir = temp_dir("dashboard");
    let path = dir.join("gatewayd.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n",
            common::two_keys_toml()
        ),
    )
    .unwrap();
    let mut command = binary();
    command.args(["--port", "0", "--config"]).arg(&path);
    let gw = start(command);

    let http = client();
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let plain = http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let stream = http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    stream.bytes().await.unwrap();
    let denied = http
        .get(gw.url("/v1/models"))
        .bearer_auth("gwd_not_a_key_at_all_0000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let session = create(&gw, KEY_A, json!({})).await;
    let turn = say(&gw, KEY_A, &session, "m", "hello", false).await;
    assert_eq!(turn.status(), 200);

    let metrics = scrape_metrics(gw.url("/metrics"), KEY_A).await;
    let exposed: BTreeSet<&str> = metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    // Every turn's tokens are counted, passed-through chat included, by key and kind.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gatewayd_tokens_total{")
                && l.contains("key=\"alice\"")
                && l.contains("kind=\"input\"")),
        "no token series by key and kind:\n{metrics}"
    );
    let mut missing = Vec::new();
    for (title, expr) in &exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "panel {title:?} queries no metric: {expr}"
        );
        for name in names {
            if !exposed.contains(name.as_str()) {
                missing.push(format!("{name} (panel {title:?})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in /metrics: {missing:#?}\n/metrics:\n{metrics}"
    );
}
