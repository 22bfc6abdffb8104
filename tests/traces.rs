//! Traces reach a real OTLP/HTTP receiver from the real binary: one server span per
//! request with the GenAI attributes, a client span per upstream attempt (fallback
//! included) and a span for the store commit; `traceparent` goes to every upstream
//! attempt and is believed from trusted proxies only; no attribute holds content, keys
//! or upstream URLs.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use common::upstream::{chat_reply, Seen};
use common::{binary, mock_upstream, sha256_hex, start, temp_dir, KEY_A};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use tokio::sync::watch;

const UPSTREAM_KEY: &str = "sk-upstream-Zq81VbNc4Lx7";
/// The peer address the test client uses when it plays the trusted reverse proxy.
const PROXY: &str = "127.0.0.2";
/// A client's own trace context: believed only from the trusted proxy.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

/// Every export the receiver decoded: resource attributes and spans, in arrival order.
#[derive(Default, Clone)]
struct Received {
    resources: Vec<Vec<KeyValue>>,
    spans: Vec<Span>,
}

/// An OTLP/HTTP receiver on 127.0.0.1:0: decodes each POST /v1/traces with the official
/// types. Returns its base URL and a watch of what it has received.
async fn receiver() -> (String, watch::Receiver<Received>) {
    let (sender, received) = watch::channel(Received::default());
    let sender = Arc::new(sender);
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let sender = sender.clone();
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                sender.send_modify(|received| {
                    for resource_spans in request.resource_spans {
                        let resource = resource_spans.resource.unwrap_or_default();
                        received.resources.push(resource.attributes);
                        for scope in resource_spans.scope_spans {
                            received.spans.extend(scope.spans);
                        }
                    }
                });
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

/// What a mock upstream saw: each request's model, last message and `traceparent`.
type Calls = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

fn record(calls: &Calls, headers: &HeaderMap, body: &Bytes) {
    let request: Value = serde_json::from_slice(body).unwrap();
    let model = request["model"].as_str().unwrap().to_string();
    let last = request["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    let traceparent = headers
        .get("traceparent")
        .map(|v| v.to_str().unwrap().to_string());
    calls.lock().unwrap().push((model, last, traceparent));
}

/// A chat upstream that answers like `chat_reply`, or always 500 when `broken`.
async fn upstream(broken: bool) -> (String, Calls) {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(
                move |State((calls, broken)): State<(Calls, bool)>,
                      headers: HeaderMap,
                      body: Bytes| async move {
                    record(&calls, &headers, &body);
                    match broken {
                        true => (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response(),
                        false => chat_reply(Seen::default(), body).await,
                    }
                },
            ),
        )
        .with_state((calls.clone(), broken));
    (mock_upstream(app).await, calls)
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(span: &Span, key: &str) -> String {
    match attr(&span.attributes, key) {
        Some(Any::StringValue(s)) => s.clone(),
        other => panic!("{key} on {:?} is {other:?}", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(&span.attributes, key) {
        Some(Any::IntValue(n)) => *n,
        other => panic!("{key} on {:?} is {other:?}", span.name),
    }
}

/// Every string anywhere in an export: names, attribute keys and values, events.
fn strings(value: &AnyValue, out: &mut Vec<String>) {
    match &value.value {
        Some(Any::StringValue(s)) => out.push(s.clone()),
        Some(Any::ArrayValue(list)) => list.values.iter().for_each(|v| strings(v, out)),
        Some(Any::KvlistValue(list)) => list.values.iter().for_each(|kv| {
            out.push(kv.key.clone());
            kv.value.iter().for_each(|v| strings(v, out));
        }),
        Some(Any::BytesValue(b)) => out.push(String::from_utf8_lossy(b).into_owned()),
        _ => {}
    }
}

fn every_string(received: &Received) -> Vec<String> {
    let mut out = Vec::new();
    let pairs = |attributes: &[KeyValue], out: &mut Vec<String>| {
        for kv in attributes {
            out.push(kv.key.clone());
            kv.value.iter().for_each(|v| strings(v, out));
        }
    };
    for resource in &received.resources {
        pairs(resource, &mut out);
    }
    for span in &received.spans {
        out.push(span.name.clone());
        out.push(span.trace_state.clone());
        pairs(&span.attributes, &mut out);
        for event in &span.events {
            out.push(event.name.clone());
            pairs(&event.attributes, &mut out);
        }
    }
    out
}

/// (trace id, parent span id) named by a `traceparent`.
fn parse(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    (parts[1].to_string(), parts[2].to_string())
}

fn is_server(span: &Span) -> bool {
    span.kind == SpanKind::Server as i32
}

/// The `traceparent` the upstream got for the one request whose last message is `said`.
fn traceparent_for(calls: &Calls, said: &str) -> String {
    let sent: Vec<String> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, last, _)| last == said)
        .map(|(_, _, tp)| tp.clone().expect("the upstream got no traceparent"))
        .collect();
    assert_eq!(sent.len(), 1, "one upstream call expected for {said}");
    sent[0].clone()
}

/// Waits until the receiver holds a server span of trace `trace` and `children` spans
/// below it.
async fn trace_of(
    received: &mut watch::Receiver<Received>,
    trace: &str,
    children: usize,
) -> Vec<Span> {
    let done = |r: &Received| {
        let of: Vec<&Span> = r
            .spans
            .iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .collect();
        of.iter().any(|s| is_server(s)) && of.len() > children
    };
    tokio::time::timeout(Duration::from_secs(60), received.wait_for(done))
        .await
        .unwrap_or_else(|_| panic!("no complete trace {trace} arrived"))
        .unwrap();
    let spans = received.borrow().spans.clone();
    spans
        .into_iter()
        .filter(|s| hex(&s.trace_id) == trace)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn spans_reach_the_collector_with_the_request_tree_and_nothing_secret() {
    let (collector, mut received) = receiver().await;
    let (good_url, good_calls) = upstream(false).await;
    let (broken_url, broken_calls) = upstream(true).await;
    let dir = temp_dir("traces");
    let config = format!(
        r#"[server]
trusted_proxies = ["{PROXY}/32"]

[telemetry]
otlp_endpoint = "{collector}"
service_name = "gw-under-test"
export_delay_ms = 50

[[keys]]
name = "alice"
sha256 = "{}"

[[upstreams]]
name = "broken"
base_url = "{broken_url}"
api_key_env = "TRACES_UPSTREAM_KEY"
models = ["fallback-model"]
priority = 0

[[upstreams]]
name = "good"
base_url = "{good_url}"
api_key_env = "TRACES_UPSTREAM_KEY"
models = ["*"]
priority = 1
forward_headers = ["*"]
"#,
        sha256_hex(KEY_A)
    );
    let path = dir.join("gatewayd.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = binary();
    command
        .args(["--port", "0", "--config"])
        .arg(&path)
        .env("TRACES_UPSTREAM_KEY", UPSTREAM_KEY);
    let gateway = start(command);
    let chat = gateway.url("/v1/chat/completions");
    let client_traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01");

    // 1. A plain chat from an untrusted peer, with its own traceparent: ignored.
    let said_plain = "plain-zebra-content-1";
    let answer = client_from("127.0.0.1")
        .post(&chat)
        .bearer_auth(KEY_A)
        .header("traceparent", &client_traceparent)
        .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": said_plain}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.bytes().await.unwrap();

    // 2. A streamed chat through the trusted proxy, continuing the client's trace.
    let said_stream = "streamed-yak-content-2";
    let answer = client_from(PROXY)
        .post(&chat)
        .bearer_auth(KEY_A)
        .header("traceparent", &client_traceparent)
        .header("tracestate", "vendor=opaque")
        .json(&json!({"model": "gpt-test", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": said_stream}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(String::from_utf8_lossy(&answer.bytes().await.unwrap()).contains("[DONE]"));

    // 3. A stored session turn.
    let said_session = "session-okapi-content-3";
    let created = client_from("127.0.0.1")
        .post(gateway.url("/v1/sessions"))
        .bearer_auth(KEY_A)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let session: Value = created.json().await.unwrap();
    let answer = client_from("127.0.0.1")
        .post(&chat)
        .bearer_auth(KEY_A)
        .header("x-session-id", session["id"].as_str().unwrap())
        .json(
            &json!({"model": "gpt-test", "messages": [{"role": "user", "content": said_session}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // 4. A fallback: the first upstream answers 500, the second serves.
    let said_fallback = "fallback-ibis-content-4";
    let answer = client_from("127.0.0.1")
        .post(&chat)
        .bearer_auth(KEY_A)
        .json(&json!({"model": "fallback-model", "messages": [{"role": "user", "content": said_fallback}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // 1: a fresh trace, not the client's; the upstream's parent is the attempt span.
    let sent = traceparent_for(&good_calls, said_plain);
    let (trace, parent) = parse(&sent);
    assert_ne!(trace, CLIENT_TRACE, "an untrusted client chose the trace");
    let spans = trace_of(&mut received, &trace, 1).await;
    let server = spans.iter().find(|s| is_server(s)).unwrap();
    assert!(
        server.parent_span_id.is_empty(),
        "an untrusted client chose the parent"
    );
    assert_eq!(server.name, "POST /v1/chat/completions");
    assert_eq!(text(server, "http.request.method"), "POST");
    assert_eq!(text(server, "http.route"), "/v1/chat/completions");
    assert_eq!(int(server, "http.response.status_code"), 200);
    assert_eq!(text(server, "gen_ai.operation.name"), "chat");
    assert_eq!(text(server, "gen_ai.request.model"), "gpt-test");
    assert_eq!(text(server, "gen_ai.provider.name"), "openai");
    assert_eq!(int(server, "gen_ai.usage.input_tokens"), 4);
    assert_eq!(int(server, "gen_ai.usage.output_tokens"), 2);
    match attr(&server.attributes, "gen_ai.response.finish_reasons") {
        Some(Any::ArrayValue(list)) => assert_eq!(list.values.len(), 1),
        other => panic!("finish reasons: {other:?}"),
    }
    let attempt = spans.iter().find(|s| !is_server(s)).unwrap();
    assert_eq!(attempt.kind, SpanKind::Client as i32);
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert_eq!(
        hex(&attempt.span_id),
        parent,
        "the upstream's parent is the attempt span"
    );
    assert_eq!(text(attempt, "gatewayd.upstream.name"), "good");
    assert_eq!(int(attempt, "gatewayd.upstream.attempt"), 1);
    assert_eq!(int(attempt, "http.response.status_code"), 200);
    assert_eq!(text(attempt, "gatewayd.upstream.outcome"), "ok");
    assert!(attempt.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(attempt.end_time_unix_nano <= server.end_time_unix_nano);

    // 2: the trusted proxy's trace is continued, and its tracestate passed on.
    let sent = traceparent_for(&good_calls, said_stream);
    let (trace, parent) = parse(&sent);
    assert_eq!(trace, CLIENT_TRACE);
    let spans = trace_of(&mut received, &trace, 1).await;
    let server = spans.iter().find(|s| is_server(s)).unwrap();
    assert_eq!(hex(&server.parent_span_id), CLIENT_PARENT);
    assert_eq!(server.trace_state, "vendor=opaque");
    assert_eq!(int(server, "gen_ai.usage.output_tokens"), 2);
    let attempt = spans.iter().find(|s| !is_server(s)).unwrap();
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert_eq!(hex(&attempt.span_id), parent);

    // 3: the commit is a child of the request's span.
    let sent = traceparent_for(&good_calls, said_session);
    let (trace, _) = parse(&sent);
    let spans = trace_of(&mut received, &trace, 2).await;
    let server = spans.iter().find(|s| is_server(s)).unwrap();
    let commit = spans
        .iter()
        .find(|s| s.name == "gatewayd.store.commit")
        .expect("no commit span");
    assert_eq!(commit.parent_span_id, server.span_id);
    assert_eq!(text(commit, "db.system.name"), "sqlite");
    assert_eq!(int(commit, "gatewayd.store.messages"), 2);
    assert!(commit.end_time_unix_nano <= server.end_time_unix_nano);

    // 4: two attempts under one server span: the broken one fell back, the good one served.
    let to_broken = traceparent_for(&broken_calls, said_fallback);
    let to_good = traceparent_for(&good_calls, said_fallback);
    let (trace, broken_parent) = parse(&to_broken);
    let (good_trace, good_parent) = parse(&to_good);
    assert_eq!(trace, good_trace);
    assert_ne!(broken_parent, good_parent, "each attempt has its own span");
    let spans = trace_of(&mut received, &trace, 2).await;
    let server = spans.iter().find(|s| is_server(s)).unwrap();
    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    let first = by_id[&broken_parent];
    let second = by_id[&good_parent];
    for attempt in [first, second] {
        assert_eq!(attempt.parent_span_id, server.span_id);
    }
    assert_eq!(text(first, "gatewayd.upstream.name"), "broken");
    assert_eq!(int(first, "gatewayd.upstream.attempt"), 1);
    assert_eq!(int(first, "http.response.status_code"), 500);
    assert_eq!(text(first, "gatewayd.upstream.outcome"), "fallback");
    assert_eq!(text(first, "error.type"), "server_error");
    assert_eq!(first.status.as_ref().unwrap().code, 2);
    assert_eq!(text(second, "gatewayd.upstream.name"), "good");
    assert_eq!(int(second, "gatewayd.upstream.attempt"), 2);
    assert_eq!(text(second, "gatewayd.upstream.outcome"), "ok");
    assert_eq!(text(server, "gatewayd.upstream.name"), "good");

    // The client's trace was started by nobody but the trusted proxy's request.
    let all = received.borrow().clone();
    let continued: Vec<&Span> = all
        .spans
        .iter()
        .filter(|s| hex(&s.trace_id) == CLIENT_TRACE && is_server(s))
        .collect();
    assert_eq!(
        continued.len(),
        1,
        "only the trusted request continues the client's trace"
    );
    let service = all
        .resources
        .iter()
        .flatten()
        .find(|kv| kv.key == "service.name");
    assert!(matches!(
        service.and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref()),
        Some(Any::StringValue(name)) if name == "gw-under-test"
    ));

    // Nothing secret anywhere: no content, no key, no upstream URL or address.
    let good_authority = good_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    let broken_authority = broken_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    let forbidden = [
        said_plain,
        said_stream,
        said_session,
        said_fallback,
        "echo:",
        KEY_A,
        UPSTREAM_KEY,
        &good_url,
        &broken_url,
        good_authority,
        broken_authority,
    ];
    for value in every_string(&all) {
        for secret in forbidden {
            assert!(!value.contains(secret), "{value:?} contains {secret:?}");
        }
    }
}

#[tokio::test]
async fn a_clients_traceparent_is_never_forwarded_when_traces_are_off() {
    let (good_url, good_calls) = upstream(false).await;
    let toml = format!(
        "{}\n[[upstreams]]\nname = \"good\"\nbase_url = \"{good_url}\"\nmodels = [\"*\"]\nforward_headers = [\"*\"]\n",
        common::two_keys_toml()
    );
    let gateway = common::spawn_gateway(common::config_from_toml(&toml)).await;
    let answer = common::client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header(
            "traceparent",
            format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"),
        )
        .header("tracestate", "vendor=opaque")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let calls = good_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2, None, "the client's traceparent went upstream");
    gateway.shutdown.cancel();
}

/// Waits (at most a minute) until `condition` holds, checking every 20 ms.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failing_collector_costs_spans_not_requests_and_is_logged_once() {
    // A collector that refuses every export, counting them.
    let posts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = posts.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { (StatusCode::SERVICE_UNAVAILABLE, "overloaded") }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (good_url, _) = upstream(false).await;
    let path = temp_dir("traces-down").join("gatewayd.toml");
    std::fs::write(
        &path,
        format!(
            "[telemetry]\notlp_endpoint = \"http://{collector}\"\nexport_delay_ms = 20\n\n[[keys]]\nname = \"alice\"\nsha256 = \"{}\"\n\n[[upstreams]]\nname = \"good\"\nbase_url = \"{good_url}\"\nmodels = [\"*\"]\n",
            sha256_hex(KEY_A)
        ),
    )
    .unwrap();
    let mut command = binary();
    command.args(["--port", "0", "--config"]).arg(&path);
    let gateway = start(command);
    let refusals = |gateway: &common::Process| {
        gateway
            .stderr()
            .lines()
            .filter(|l| l.contains("traces could not be exported"))
            .count()
    };
    for round in 1..=4 {
        let answer = common::client()
            .post(gateway.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "a failing collector failed a request");
        answer.bytes().await.unwrap();
        // Each request's spans go out in an export of their own, which the collector refuses.
        wait_until("an export", || {
            posts.load(std::sync::atomic::Ordering::SeqCst) >= round
        })
        .await;
        if round == 1 {
            wait_until("the warning", || refusals(&gateway) == 1).await;
        }
    }
    // Four refused exports (the fourth sent only after the third was handled): one line.
    let log = gateway.stderr();
    assert_eq!(refusals(&gateway), 1, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("traces could not be exported"))
        .unwrap();
    assert!(line.contains("503"), "{line}");
    assert!(line.contains(&collector.to_string()), "{line}");
}
