//! Native Responses passthrough (`responses = "native"`): byte-faithful forwarding to a mock that speaks /v1/responses, and per-key routing of follow-ups.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::sse::assert_event_stream;
use common::{client, config_from_toml, mock_upstream, open_store, spawn_gateway_with_store};
use common::{KEY_A, KEY_B};
use serde_json::Value;

const UPSTREAM_KEY: &str = "sk-native-upstream-key-0123456789";

/// One request a mock received, exactly as it arrived.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    /// Path and query.
    uri: String,
    body: Bytes,
    authorization: String,
}

/// A mock upstream speaking the Responses API. Everything it sends is odd on purpose
/// (spacing, escapes, key order, a comment line): any re-serialisation would show.
#[derive(Clone)]
struct Mock {
    name: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
    next: Arc<AtomicUsize>,
}

impl Mock {
    fn new(name: &'static str) -> Mock {
        Mock {
            name,
            seen: Arc::default(),
            next: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn new_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("resp_{}{n:04}", self.name)
    }

    /// The body of a non-streamed answer with `id`.
    fn json_body(id: &str) -> String {
        format!("{{ \"status\":\"completed\",  \"id\" : \"{id}\", \"object\":\"response\",\n \"output_text\":\"caf\\u00e9 \u{1F600}\", \"n\": 1.50 }}")
    }

    /// The chunks of a streamed answer with `id`: `response.created` is split across
    /// two chunks; "cut" stops before the final event.
    fn stream_chunks(id: &str, cut: bool) -> Vec<String> {
        let created = format!("event: response.created\r\ndata: {{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{{\"id\":\"{id}\",\"object\":\"response\",\"status\":\"in_progress\"}}}}\r\n\r\n");
        let (head, tail) = created.split_at(60);
        let mut chunks = vec![
            ": upstream comment\n\n".to_string(),
            head.to_string(),
            tail.to_string(),
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",  \"delta\":\"caf\\u00e9\",\"sequence_number\":1}\n\n".to_string(),
        ];
        if !cut {
            chunks.push(format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{{\"id\":\"{id}\",\"status\":\"completed\"}}}}\n\n"));
        }
        chunks
    }

    async fn handle(
        State(mock): State<Mock>,
        method: Method,
        OriginalUri(uri): OriginalUri,
        headers: axum::http::HeaderMap,
        body: Bytes,
    ) -> Response {
        let authorization = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        mock.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            uri: uri.to_string(),
            body: body.clone(),
            authorization,
        });
        let json = |text: String| ([("content-type", "application/json")], text).into_response();
        let path = uri.path();
        if method == Method::POST && path == "/v1/responses" {
            let request: Value = serde_json::from_slice(&body).unwrap();
            let id = mock.new_id();
            if request["stream"] != Value::Bool(true) {
                return json(Mock::json_body(&id));
            }
            let chunks = Mock::stream_chunks(&id, request["model"] == "cut");
            let stream = futures_util::stream::iter(
                chunks
                    .into_iter()
                    .map(|c| Ok::<_, std::io::Error>(Bytes::from(c))),
            );
            return (
                [("content-type", "text/event-stream")],
                Body::from_stream(stream),
            )
                .into_response();
        }
        let Some(rest) = path.strip_prefix("/v1/responses/") else {
            return (axum::http::StatusCode::NOT_FOUND, "no such route").into_response();
        };
        match (method, rest.split_once('/')) {
            (Method::GET, None) => json(Mock::json_body(rest)),
            (Method::DELETE, None) => json(format!(
                "{{\"id\":\"{rest}\",\"object\":\"response.deleted\" ,\"deleted\":true}}"
            )),
            (Method::GET, Some((id, "input_items"))) => json(format!(
                "{{\"object\":\"list\",\"data\":[{{\"id\":\"msg_{id}\",\"type\":\"message\"}}] ,\"has_more\":false}}"
            )),
            _ => (axum::http::StatusCode::NOT_FOUND, "no such route").into_response(),
        }
    }

    async fn serve(&self) -> String {
        mock_upstream(
            Router::new()
                .fallback(Mock::handle)
                .with_state(self.clone()),
        )
        .await
    }
}

struct Setup {
    gw: common::Gateway,
    /// Serves every model, first in line.
    one: Mock,
    /// Serves every model too, and alone serves `only-two`.
    two: Mock,
}

async fn setup(postgres: bool) -> Setup {
    let (one, two) = (Mock::new("one"), Mock::new("two"));
    let (url_one, url_two) = (one.serve().await, two.serve().await);
    let run = common::temp_dir("owner");
    let run = run.file_name().unwrap().to_str().unwrap();
    let env = format!("GATEWAYD_TEST_NATIVE_KEY_{}", run.replace('-', "_"));
    std::env::set_var(&env, UPSTREAM_KEY);
    let upstream = |name: &str, url: &str, models: &str| {
        format!("[[upstreams]]\nname = \"{name}\"\nbase_url = \"{url}\"\napi_key_env = \"{env}\"\nmodels = {models}\nresponses = \"native\"\n")
    };
    let config = config_from_toml(&format!(
        "{}\n{}\n{}",
        common::named_keys_toml(&format!("a-{run}"), &format!("b-{run}")),
        upstream("one", &url_one, "[\"m\", \"cut\"]"),
        upstream("two", &url_two, "[\"m\", \"only-two\"]"),
    ));
    let store = open_store(&config, postgres).await;
    Setup {
        gw: spawn_gateway_with_store(config, store).await,
        one,
        two,
    }
}

impl Setup {
    /// Status and raw body bytes.
    async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Bytes) {
        let mut request = client().request(method, self.gw.url(path)).bearer_auth(key);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.bytes().await.unwrap())
    }

    async fn create(&self, key: &str, body: &str) -> (u16, Bytes) {
        self.call(key, Method::POST, "/v1/responses", Some(body))
            .await
    }

    fn total_seen(&self) -> usize {
        self.one.seen().len() + self.two.seen().len()
    }
}

fn json(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The request and the answer cross the gateway unchanged, streamed or not, and the
/// upstream sees the gateway's key, never the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_answers_are_forwarded_byte_for_byte() {
    let s = setup(false).await;
    let body =
        "{ \"model\" : \"m\",\n  \"input\":\"caf\\u00e9 \u{1F600}\", \"x_vendor\": [1, 2 ,3] }";
    let (status, answer) = s.create(KEY_A, body).await;
    assert_eq!(status, 200);
    assert_eq!(answer, Bytes::from(Mock::json_body("resp_one0000")));
    let seen = s.one.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.clone(), seen[0].uri.as_str()),
        (Method::POST, "/v1/responses")
    );
    assert_eq!(seen[0].body, Bytes::from(body));
    assert_eq!(seen[0].authorization, format!("Bearer {UPSTREAM_KEY}"));
    assert!(s.two.seen().is_empty());

    let body = "{\"stream\": true, \"model\":\"m\", \"input\": \"hi\"}";
    let response = client()
        .post(s.gw.url("/v1/responses"))
        .bearer_auth(KEY_A)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_event_stream(&response);
    let streamed = response.bytes().await.unwrap();
    assert_eq!(
        streamed,
        Bytes::from(Mock::stream_chunks("resp_one0001", false).concat())
    );
    assert_eq!(s.one.seen()[1].body, Bytes::from(body));

    // Both ids were learned: the non-streamed one from `id`, the streamed one from
    // `response.created`.
    for id in ["resp_one0000", "resp_one0001"] {
        let (status, got) = s
            .call(KEY_A, Method::GET, &format!("/v1/responses/{id}"), None)
            .await;
        assert_eq!(status, 200, "{id}");
        assert_eq!(got, Bytes::from(Mock::json_body(id)));
    }
    assert_eq!(s.one.seen().len(), 4);
}

/// A stream that ends before its final event is cut short: the bytes that came are
/// passed on, then an error event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_ends_with_an_error_event() {
    let s = setup(false).await;
    let response = client()
        .post(s.gw.url("/v1/responses"))
        .bearer_auth(KEY_A)
        .header("content-type", "application/json")
        .body("{\"model\":\"cut\",\"stream\":true,\"input\":\"x\"}")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let sent = Mock::stream_chunks("resp_one0000", true).concat();
    let rest = text.strip_prefix(sent.as_str()).expect(&text);
    let error: Value = serde_json::from_str(rest.trim().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "upstream_truncated", "{rest}");
    assert!(!text.contains(UPSTREAM_KEY));
}

/// Key B cannot read, delete, list or continue key A's native response: the same 404 as
/// an unknown id, and no upstream ever sees the attempt. Key A's follow-ups reach only
/// the upstream that created the response.
async fn follow_ups_go_to_the_owner_and_its_upstream(postgres: bool) {
    let s = setup(postgres).await;
    // Created at "two", the only upstream serving `only-two`.
    let (status, created) = s
        .create(KEY_A, "{\"model\":\"only-two\",\"input\":\"remember 7\"}")
        .await;
    assert_eq!(status, 200);
    let id = json(&created)["id"].as_str().unwrap().to_string();
    assert_eq!(id, "resp_two0000");
    let before = s.total_seen();

    let (status, unknown) = s
        .call(KEY_B, Method::GET, "/v1/responses/resp_two9999", None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(json(&unknown)["error"]["code"], "response_not_found");
    for (method, path) in [
        (Method::GET, format!("/v1/responses/{id}")),
        (Method::DELETE, format!("/v1/responses/{id}")),
        (Method::GET, format!("/v1/responses/{id}/input_items")),
        (Method::GET, "/v1/responses/..%2Fadmin".to_string()),
    ] {
        let (status, body) = s.call(KEY_B, method.clone(), &path, None).await;
        assert_eq!((status, &body), (404, &unknown), "{method} {path}");
    }
    let chain = format!("{{\"model\":\"m\",\"input\":\"next\",\"previous_response_id\":\"{id}\"}}");
    let (status, refused) = s.create(KEY_B, &chain).await;
    assert_eq!(status, 404);
    assert_eq!(
        json(&refused)["error"]["code"],
        "previous_response_not_found"
    );
    assert_eq!(s.total_seen(), before, "no upstream saw key B's attempts");

    // Key A chains with model `m`, which "one" serves first: it still goes to "two".
    let (status, next) = s.create(KEY_A, &chain).await;
    assert_eq!(status, 200);
    assert_eq!(json(&next)["id"], "resp_two0001");
    assert_eq!(
        s.two.seen().last().unwrap().body,
        Bytes::from(chain.clone())
    );
    assert!(s.one.seen().is_empty(), "{:?}", s.one.seen());

    let (status, items) = s
        .call(
            KEY_A,
            Method::GET,
            &format!("/v1/responses/{id}/input_items?limit=2&order=asc"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(json(&items)["data"][0]["id"], format!("msg_{id}"));
    let last = s.two.seen().last().unwrap().clone();
    assert_eq!(
        last.uri,
        format!("/v1/responses/{id}/input_items?limit=2&order=asc")
    );
    assert_eq!(last.authorization, format!("Bearer {UPSTREAM_KEY}"));

    let (status, deleted) = s
        .call(KEY_A, Method::DELETE, &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(json(&deleted)["deleted"], true);
    assert_eq!(s.two.seen().last().unwrap().method, Method::DELETE);
    let after_delete = s.total_seen();
    // Forgotten with the upstream's copy: now unknown, and the upstream is not asked.
    let (status, _) = s
        .call(KEY_A, Method::GET, &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(s.total_seen(), after_delete);
    assert!(s.one.seen().is_empty());
}

/// `store: false` responses are not recorded; `conversation` is refused (an upstream
/// conversation has no owner gatewayd could check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstored_responses_and_conversations() {
    let s = setup(false).await;
    let (status, created) = s
        .create(KEY_A, "{\"model\":\"m\",\"input\":\"x\",\"store\":false}")
        .await;
    assert_eq!(status, 200);
    let id = json(&created)["id"].as_str().unwrap().to_string();
    let (status, _) = s
        .call(KEY_A, Method::GET, &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(s.total_seen(), 1);

    let (status, refused) = s
        .create(
            KEY_A,
            "{\"model\":\"m\",\"input\":\"x\",\"conversation\":\"conv_1\"}",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(json(&refused)["error"]["param"], "conversation");
    let twice = "{\"model\":\"m\",\"input\":\"x\",\"previous_response_id\":\"a\",\"previous_response_id\":\"b\"}";
    let (status, _) = s.create(KEY_A, twice).await;
    assert_eq!(status, 400);
    // Items stored at the upstream have no owner gatewayd could check.
    let reference = "{\"model\":\"m\",\"input\":[{\"type\":\"item_reference\",\"id\":\"msg_1\"}]}";
    let (status, refused) = s.create(KEY_B, reference).await;
    assert_eq!(status, 400);
    assert_eq!(json(&refused)["error"]["param"], "input");
    assert_eq!(s.total_seen(), 1);
}

/// An item with an `id` and no `type` (missing or null) is read upstream as an
/// `item_reference`: refused with the same 400 as the literal type, whatever other fields
/// it has unless it is a message (a `role` and a `content`), and no upstream sees it. A
/// message without `type` still passes, with or without an id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_less_item_references_are_refused() {
    let s = setup(false).await;
    let request = |input: &str| format!("{{\"model\":\"m\",\"input\":{input}}}");
    let (status, literal) = s
        .create(
            KEY_A,
            &request("[{\"type\":\"item_reference\",\"id\":\"msg_1\"}]"),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(json(&literal)["error"]["param"], "input");
    for input in [
        "[{\"id\":\"msg_1\"}]",
        "[{\"type\":null,\"id\":\"msg_1\"}]",
        "[{\"role\":\"user\",\"content\":\"hi\"},{\"id\":\"msg_1\",\"status\":\"completed\"}]",
        "[{\"id\":\"msg_1\",\"role\":\"user\"}]",
        "[{\"id\":\"fc_1\",\"output\":\"x\",\"type\":null}]",
    ] {
        let (status, refused) = s.create(KEY_B, &request(input)).await;
        assert_eq!((status, &refused), (400, &literal), "{input}");
    }
    assert_eq!(s.total_seen(), 0, "no upstream saw a reference");

    for input in [
        "[{\"role\":\"user\",\"content\":\"hi\"}]",
        "[{\"id\":\"msg_2\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"hi\"}]}]",
    ] {
        let (status, _) = s.create(KEY_A, &request(input)).await;
        assert_eq!(status, 200, "{input}");
        assert_eq!(s.one.seen().last().unwrap().body, Bytes::from(request(input)));
    }
    assert_eq!(s.total_seen(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_on_sqlite() {
    follow_ups_go_to_the_owner_and_its_upstream(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_on_postgres() {
    if std::env::var("GATEWAYD_TEST_POSTGRES_URL").is_err() {
        eprintln!("GATEWAYD_TEST_POSTGRES_URL not set: PostgreSQL variant not run");
        return;
    }
    follow_ups_go_to_the_owner_and_its_upstream(true).await;
}
