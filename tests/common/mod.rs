//! Shared test harness: in-process gateways, mock upstreams, the real binary, keys.
//! `upstream` is the mock chat upstream, `sessions` the session and Responses helpers,
//! `sse` the event-stream readers.
#![allow(dead_code)] // each test file uses a different subset of these helpers

pub mod sessions;
pub mod sse;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use gatewayd::cli::ServeArgs;
use gatewayd::config::Config;
use gatewayd::keys::{self, Env, KeySet};
use gatewayd::sessions::SessionStore;
use gatewayd::upstream::Registry;
use gatewayd::AppState;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const KEY_A: &str = "gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe";
pub const KEY_B: &str = "gwd_Zr8Nq2Wv5Ty9Lk3Hs7Gd1Fb4Mx6Cp0Ju";

pub fn sha256_hex(key: &str) -> String {
    hex::encode(keys::digest(key.as_bytes()))
}

/// A fresh temporary directory, removed by nothing: tests are short-lived and the OS
/// temp dir is cleaned by the machine.
pub fn temp_dir(tag: &str) -> PathBuf {
    let mut random = [0u8; 8];
    getrandom::getrandom(&mut random).unwrap();
    let dir = std::env::temp_dir().join(format!("gatewayd-{tag}-{}", hex::encode(random)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct FakeEnv(pub HashMap<String, String>);

impl Env for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// Config from TOML text, exactly as the binary would load it from a file.
pub fn config_from_toml(toml: &str) -> Config {
    let dir = temp_dir("cfg");
    let path = dir.join("gatewayd.toml");
    let toml = format!("[server]\ndata_dir = {:?}\n{toml}", dir.join("data"));
    std::fs::write(&path, toml).unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    Config::load(&args, None).unwrap()
}

/// `[[keys]]` entries for KEY_A ("alice") and KEY_B ("bob").
pub fn two_keys_toml() -> String {
    named_keys_toml("alice", "bob")
}

/// `[[keys]]` entries for KEY_A and KEY_B under the given names (unique names keep
/// tests apart in a shared PostgreSQL database).
pub fn named_keys_toml(a: &str, b: &str) -> String {
    format!(
        "[[keys]]\nname = \"{a}\"\nsha256 = \"{}\"\n\n[[keys]]\nname = \"{b}\"\nsha256 = \"{}\"\n",
        sha256_hex(KEY_A),
        sha256_hex(KEY_B)
    )
}

pub fn state_for(config: Config) -> AppState {
    let keys: KeySet = keys::load(&FakeEnv(HashMap::new()), &config.key_entries).unwrap();
    let registry = Registry::with_routing(&config.upstreams, &config.routing).unwrap();
    AppState::new(config, keys, registry)
}

/// A gateway served in-process on 127.0.0.1:0.
pub struct Gateway {
    pub addr: SocketAddr,
    pub state: AppState,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Session storage for tests: PostgreSQL when GATEWAYD_TEST_POSTGRES_URL is set and
/// `postgres` is asked for, otherwise SQLite in the config's data dir.
pub async fn open_store(config: &Config, postgres: bool) -> SessionStore {
    let limits = config.sessions.limits();
    match (postgres, std::env::var("GATEWAYD_TEST_POSTGRES_URL")) {
        (true, Ok(url)) => SessionStore::open_postgres(&url, limits).await.unwrap(),
        (true, Err(_)) => panic!("GATEWAYD_TEST_POSTGRES_URL is not set"),
        (false, _) => SessionStore::open_sqlite(&config.data_dir, limits)
            .await
            .unwrap(),
    }
}

pub async fn spawn_gateway(config: Config) -> Gateway {
    let store = open_store(&config, false).await;
    spawn_gateway_with_store(config, store).await
}

pub async fn spawn_gateway_with_store(config: Config, store: SessionStore) -> Gateway {
    let state = state_for(config).with_sessions(store);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(gatewayd::run(
        state.clone(),
        vec![gatewayd::Listener::Tcp(listener)],
        shutdown.clone(),
    ));
    Gateway {
        addr,
        state,
        shutdown,
        handle,
    }
}

/// Serves `router` on 127.0.0.1:0 as a mock upstream; returns its base URL (…/v1).
pub async fn mock_upstream(router: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}/v1")
}

/// A base URL where nothing listens: the port was bound, then released.
pub async fn refused_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The Prometheus text at `metrics_url`, scraped with `key` (it must answer 200).
pub async fn scrape_metrics(metrics_url: String, key: &str) -> String {
    let response = client()
        .get(metrics_url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET /metrics");
    response.text().await.unwrap()
}

/// The gatewayd binary with a clean environment (no inherited keys or config). With
/// `GATEWAYD_TEST_WRAPPER` set (tests/unit_sandbox/run.sh), that program runs instead and
/// execs the binary named in `GATEWAYD_WRAPPED_BIN`, keeping the process id.
pub fn binary() -> Command {
    let real = env!("CARGO_BIN_EXE_gatewayd");
    let mut command = match std::env::var_os("GATEWAYD_TEST_WRAPPER") {
        Some(wrapper) => {
            let mut command = Command::new(wrapper);
            command.env("GATEWAYD_WRAPPED_BIN", real);
            command
        }
        None => Command::new(real),
    };
    for var in [
        "API_SERVER_KEY",
        "API_SERVER_KEY_FILE",
        "API_SERVER_HOST",
        "API_SERVER_PORT",
        "GATEWAYD_CONFIG",
        "GATEWAYD_UPSTREAM_URL",
        "GATEWAYD_DATABASE_URL",
        "GATEWAYD_REDIS_URL",
        "CREDENTIALS_DIRECTORY",
        "LISTEN_FDS",
        "LISTEN_PID",
        "NOTIFY_SOCKET",
        "API_SERVER_CORS_ORIGINS",
        "GATEWAYD_ADMIN_KEY",
    ] {
        command.env_remove(var);
    }
    command.env("GATEWAYD_DATA_DIR", temp_dir("bin"));
    command.env("RUST_LOG", "info");
    command
}

/// A running gatewayd process and the address it logged.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.addr.port(), path)
    }
    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary and waits for its "listening" line; panics if it exits first.
pub fn start(mut command: Command) -> Process {
    use std::io::BufRead;
    command.stderr(Stdio::piped()).stdout(Stdio::null());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            // Kept before the start is announced, so a test that reads the log right
            // after `start` returns finds the listening line in it.
            sink.lock().unwrap().push(line.clone());
            if line.contains("gatewayd listening") {
                let _ = tx.send(line);
            }
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "gatewayd did not start: {}",
                lines.lock().unwrap().join("\n")
            );
        }
    };
    let addr = parse_listening(&line);
    Process {
        child,
        addr,
        stderr_lines: lines,
    }
}

/// The first address in a "gatewayd listening" line, text (`addresses=…`) or JSON
/// (`"addresses":"…"`).
pub fn parse_listening(line: &str) -> SocketAddr {
    let start = line
        .find("addresses=")
        .map(|i| i + "addresses=".len())
        .or_else(|| {
            line.find("\"addresses\":\"")
                .map(|i| i + "\"addresses\":\"".len())
        })
        .unwrap_or_else(|| panic!("no addresses in {line}"));
    let rest = line[start..].trim_start_matches('"');
    let end = rest.find([',', ' ', '"']).unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

/// An OpenAI error object with exactly the fields message, type, param and code, a
/// non-empty message, this type and code, and no param.
pub fn assert_openai_error(body: &serde_json::Value, kind: &str, code: &str) {
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{body}"));
    let mut fields: Vec<&str> = error.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["code", "message", "param", "type"], "{body}");
    assert!(!error["message"].as_str().unwrap().is_empty(), "{body}");
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["code"], code, "{body}");
    assert!(error["param"].is_null(), "{body}");
}

/// Marks an in-process (`oneshot`) request as coming from a loopback peer, as the server
/// would. Keyless mode refuses requests without a recorded peer (fail closed).
pub fn from_localhost<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
    request
        .extensions_mut()
        .insert(gatewayd::server::Peer::Tcp(peer));
    request
}

/// Which session store a test runs against.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The database a test reads back directly, bypassing gatewayd.
    pub fn database_url(self, data_dir: &std::path::Path) -> String {
        match self {
            Backend::Sqlite => format!("sqlite://{}", data_dir.join("sessions.db").display()),
            Backend::Postgres => std::env::var("GATEWAYD_TEST_POSTGRES_URL").unwrap(),
        }
    }
}

/// Turns each `async fn name(backend: Backend)` into two tests, `sqlite::name` and
/// `postgres::name`; the PostgreSQL one says so and does nothing when
/// GATEWAYD_TEST_POSTGRES_URL is not set (CI and tests/run.sh set it).
#[allow(unused_macros)] // only the files that test both backends use it
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::common::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if std::env::var("GATEWAYD_TEST_POSTGRES_URL").is_ok() {
                    super::$name(crate::common::Backend::Postgres).await
                } else {
                    eprintln!("GATEWAYD_TEST_POSTGRES_URL not set: PostgreSQL variant not run");
                }
            })*
        }
    };
}

/// Runs `command` to completion, but never for longer than `limit`: a hang is a failure
/// (the child is killed), not a stuck test run.
pub fn output_within(mut command: Command, limit: Duration) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("gatewayd did not finish within {limit:?} (it hung)");
        }
    }
}
