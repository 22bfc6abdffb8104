//! Mock upstreams for the routing tests, on real sockets: each counts and timestamps the
//! requests it receives, answers as told (fast, slow, an error status, one 429), and can
//! be killed (its listener and every open connection dropped) and restarted on its port.
#![allow(dead_code)] // each routing test file uses a different subset

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How a mock answers chat requests.
#[derive(Clone, Debug)]
pub enum Behaviour {
    Ok,
    /// Answers after this delay.
    Slow(Duration),
    /// Answers every request with this status (and an OpenAI error body).
    Status(u16),
    /// Answers every request with this status after this delay.
    SlowStatus(Duration, u16),
    /// The next request gets 429 with this `Retry-After`; later ones are answered.
    TooManyOnce(&'static str),
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    /// Requests received, for waiting on.
    hits: watch::Sender<usize>,
    arrivals: Mutex<Vec<Instant>>,
    /// Requests of `/models` (probes).
    probes: AtomicUsize,
    /// Chat requests being answered now, and the most there ever were at once.
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

pub struct Mock {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Mock {
    /// A mock named `{prefix}-{random}` (names are unique across the tests of a process,
    /// whose metrics are shared).
    pub async fn start(prefix: &str) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut random = [0u8; 4];
        getrandom::getrandom(&mut random).unwrap();
        let mock = Mock {
            name: format!("{prefix}-{}", hex::encode(random)),
            addr: listener.local_addr().unwrap(),
            shared: Arc::new(Shared {
                behaviour: Mutex::new(Behaviour::Ok),
                hits: watch::channel(0).0,
                arrivals: Mutex::new(Vec::new()),
                probes: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                peak_in_flight: AtomicUsize::new(0),
            }),
            server: Mutex::new(None),
        };
        mock.serve(listener);
        mock
    }

    fn serve(&self, listener: TcpListener) {
        let router = Router::new()
            .route("/v1/chat/completions", post(answer))
            .route("/v1/models", get(models))
            .with_state(self.shared.clone());
        let task = tokio::spawn(async move {
            // Dropped with this task: aborting it closes every connection at once.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = TowerToHyperService::new(router.clone());
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *self.server.lock().unwrap() = Some(task);
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Its `[[upstreams]]` entry serving model `m`, plus `extra` lines.
    pub fn toml(&self, extra: &str) -> String {
        format!(
            "[[upstreams]]\nname = \"{}\"\nbase_url = \"{}\"\nmodels = [\"m\"]\n{extra}\n",
            self.name,
            self.url()
        )
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    pub fn hits(&self) -> usize {
        *self.shared.hits.borrow()
    }

    /// The most chat requests it ever answered at once.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.peak_in_flight.load(Ordering::SeqCst)
    }

    pub fn probes(&self) -> usize {
        self.shared.probes.load(Ordering::SeqCst)
    }

    /// When each request arrived.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.shared.arrivals.lock().unwrap().clone()
    }

    /// Waits until it has received `count` requests; panics after `limit`.
    pub async fn wait_for_hits(&self, count: usize, limit: Duration) {
        let mut hits = self.shared.hits.subscribe();
        let reached = tokio::time::timeout(limit, hits.wait_for(|&n| n >= count)).await;
        assert!(
            reached.is_ok(),
            "{} received {} requests, not {count}, within {limit:?}",
            self.name,
            self.hits()
        );
    }

    /// Kills it: the listener and every open connection are dropped (connections are
    /// refused from now on).
    pub async fn kill(&self) {
        let task = self.server.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

async fn answer(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let response = respond(&shared, body).await;
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn respond(shared: &Shared, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    shared.arrivals.lock().unwrap().push(Instant::now());
    shared.hits.send_modify(|n| *n += 1);
    let behaviour = {
        let mut current = shared.behaviour.lock().unwrap();
        let now = current.clone();
        if let Behaviour::TooManyOnce(_) = now {
            *current = Behaviour::Ok;
        }
        now
    };
    match behaviour {
        Behaviour::Ok => {}
        Behaviour::Slow(delay) => tokio::time::sleep(delay).await,
        Behaviour::SlowStatus(delay, code) => {
            tokio::time::sleep(delay).await;
            let status = StatusCode::from_u16(code).unwrap();
            let error = json!({"error": {"message": "mock failure", "type": "server_error"}});
            return (status, axum::Json(error)).into_response();
        }
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            let error = json!({"error": {"message": "mock failure", "type": "server_error"}});
            return (status, axum::Json(error)).into_response();
        }
        Behaviour::TooManyOnce(retry_after) => {
            let error = json!({"error": {"message": "slow down", "type": "rate_limit_error"}});
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after)],
                axum::Json(error),
            )
                .into_response();
        }
    }
    let model = request["model"].as_str().unwrap_or("m").to_string();
    axum::Json(json!({"id": "c", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
    .into_response()
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    shared.probes.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"object": "list", "data": [{"id": "m", "object": "model"}]})).into_response()
}

/// An upstream that accepts each connection and closes it at once, counting them: dead
/// behind a live port, so every attempt gatewayd makes is seen.
pub struct Graveyard {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Graveyard {
    pub async fn start() -> Graveyard {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                }
            }
        });
        Graveyard {
            addr,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Graveyard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends one chat request for model `m` with KEY_A: status, headers, JSON body (or null).
pub async fn chat(client: &reqwest::Client, url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = client
        .post(url)
        .bearer_auth(crate::common::KEY_A)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// The `q` quantile (0..=1) of `samples`.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// `gatewayd_upstream_state{upstream=name}` (0 closed, 1 half-open, 2 open) as the
/// `/metrics` at `metrics_url` says it; `None` when it says nothing. `bearer` is the key to
/// send, if the gateway needs one.
pub async fn upstream_state(metrics_url: String, bearer: Option<&str>, name: &str) -> Option<u8> {
    let mut request = reqwest::Client::new()
        .get(metrics_url)
        .header("host", "localhost");
    if let Some(key) = bearer {
        request = request.bearer_auth(key);
    }
    let metrics = request.send().await.unwrap().text().await.unwrap();
    let series = format!("gatewayd_upstream_state{{upstream=\"{name}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map(|value| value.trim().parse().unwrap())
}
