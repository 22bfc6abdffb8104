//! Sessions and Responses over HTTP: create a session, run a turn, read back what is stored;
//! and [`Setup`], a gateway over the shared mock upstream on either session backend.

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Row;

use super::upstream::{chat_upstream, Seen};
use super::{
    client, config_from_toml, named_keys_toml, open_store, spawn_gateway_with_store, Backend,
    Gateway, Process,
};

/// Where requests go: an in-process gateway, a gatewayd process, or a base URL.
pub trait Target {
    fn url(&self, path: &str) -> String;
}

impl Target for Gateway {
    fn url(&self, path: &str) -> String {
        Gateway::url(self, path)
    }
}

impl Target for Process {
    fn url(&self, path: &str) -> String {
        Process::url(self, path)
    }
}

impl<T: Target + ?Sized> Target for std::sync::Arc<T> {
    fn url(&self, path: &str) -> String {
        T::url(self, path)
    }
}

impl Target for str {
    fn url(&self, path: &str) -> String {
        format!("{self}{path}")
    }
}

impl Target for String {
    fn url(&self, path: &str) -> String {
        format!("{self}{path}")
    }
}

/// One authenticated call: the status and the JSON body (`Null` when it is not JSON).
pub async fn call<T: Target + ?Sized>(
    at: &T,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client().request(method, at.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POST /v1/sessions, as answered.
pub async fn post_session<T: Target + ?Sized>(at: &T, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(at.url("/v1/sessions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// POST /v1/sessions, which must answer 201: the new session's id.
pub async fn create<T: Target + ?Sized>(at: &T, key: &str, body: Value) -> String {
    let response = post_session(at, key, body).await;
    let status = response.status();
    let session: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "{session}");
    session["id"].as_str().unwrap().to_string()
}

/// A chat turn of session `id` (one user message), not yet sent.
pub fn turn<T: Target + ?Sized>(
    at: &T,
    key: &str,
    id: &str,
    model: &str,
    text: &str,
    stream: bool,
) -> reqwest::RequestBuilder {
    client()
        .post(at.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-session-id", id)
        .json(&json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": text}]}))
}

/// A chat turn of session `id` (one user message), as answered.
pub async fn say<T: Target + ?Sized>(
    at: &T,
    key: &str,
    id: &str,
    model: &str,
    text: &str,
    stream: bool,
) -> reqwest::Response {
    turn(at, key, id, model, text, stream).send().await.unwrap()
}

/// GET /v1/sessions/{id}, which must answer 200: its messages.
pub async fn messages<T: Target + ?Sized>(at: &T, key: &str, id: &str) -> Vec<Value> {
    let (status, session) = call(at, key, Method::GET, &format!("/v1/sessions/{id}"), None).await;
    assert_eq!(status, 200, "{session}");
    session["messages"].as_array().unwrap().clone()
}

/// The contents of a session's messages.
pub async fn contents<T: Target + ?Sized>(at: &T, key: &str, id: &str) -> Vec<String> {
    messages(at, key, id)
        .await
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect()
}

/// Messages without their `created_at`, for comparing two sessions.
pub fn without_timestamps(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.as_object_mut().unwrap().remove("created_at");
            m
        })
        .collect()
}

/// POST /v1/responses with a JSON body: the status and the body.
pub async fn respond<T: Target + ?Sized>(at: &T, key: &str, body: Value) -> (u16, Value) {
    call(at, key, Method::POST, "/v1/responses", Some(body)).await
}

/// A streamed POST /v1/responses: its events (checked by [`super::sse::parse_events`]), in
/// order. It must be an event stream without a chat `[DONE]`.
pub async fn respond_streamed<T: Target + ?Sized>(at: &T, key: &str, body: Value) -> Vec<Value> {
    let response = client()
        .post(at.url("/v1/responses"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    super::sse::assert_event_stream(&response);
    let text = response.text().await.unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    super::sse::parse_events(&text)
}

/// A gateway over [`chat_upstream`] storing sessions on `backend`, with KEY_A and KEY_B
/// under key names unique to this run (so tests sharing PostgreSQL stay apart).
pub struct Setup {
    pub gw: Gateway,
    pub seen: Seen,
    pub backend: Backend,
    pub data_dir: PathBuf,
    /// The key names (session owners) of KEY_A and KEY_B.
    pub owner_a: String,
    pub owner_b: String,
}

/// [`Setup`] with `extra_toml` (e.g. a `[sessions]` table) appended to the config.
pub async fn setup(backend: Backend, extra_toml: &str) -> Setup {
    let (url, seen) = chat_upstream().await;
    let run = super::temp_dir("owner");
    let run = run.file_name().unwrap().to_str().unwrap();
    let (owner_a, owner_b) = (format!("a-{run}"), format!("b-{run}"));
    let config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n{extra_toml}",
        named_keys_toml(&owner_a, &owner_b)
    ));
    let data_dir = config.data_dir.clone();
    let store = open_store(&config, matches!(backend, Backend::Postgres)).await;
    let gw = spawn_gateway_with_store(config, store).await;
    Setup {
        gw,
        seen,
        backend,
        data_dir,
        owner_a,
        owner_b,
    }
}

impl Setup {
    pub async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        call(&self.gw, key, method, path, body).await
    }

    /// POST /v1/sessions: the status and the body.
    pub async fn try_create(&self, key: &str, body: Value) -> (u16, Value) {
        self.call(key, Method::POST, "/v1/sessions", Some(body))
            .await
    }

    pub async fn create(&self, key: &str, body: Value) -> String {
        create(&self.gw, key, body).await
    }

    pub async fn say(
        &self,
        key: &str,
        id: &str,
        model: &str,
        text: &str,
        stream: bool,
    ) -> reqwest::Response {
        say(&self.gw, key, id, model, text, stream).await
    }

    pub async fn messages(&self, key: &str, id: &str) -> Vec<Value> {
        messages(&self.gw, key, id).await
    }

    pub async fn respond(&self, key: &str, body: Value) -> (u16, Value) {
        respond(&self.gw, key, body).await
    }

    /// A streamed response's events (see [`respond_streamed`]).
    pub async fn stream(&self, key: &str, body: Value) -> Vec<Value> {
        respond_streamed(&self.gw, key, body).await
    }

    pub fn upstream_calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last_upstream_body(&self) -> Value {
        self.seen.lock().unwrap().last().unwrap().clone()
    }

    /// The session database, opened directly, bypassing gatewayd.
    pub async fn database(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = self.backend.database_url(&self.data_dir);
        sqlx::AnyPool::connect(&url).await.unwrap()
    }

    /// The session's row plus its message rows, straight from the database.
    pub async fn rows_in_database(&self, id: &str) -> i64 {
        let pool = self.database().await;
        let row = sqlx::query("SELECT (SELECT COUNT(*) FROM messages WHERE session_id = $1) + (SELECT COUNT(*) FROM sessions WHERE id = $1) AS n")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        row.try_get::<i64, _>("n").unwrap()
    }
}

/// The contents of a session's stored messages in order, read from the database by a
/// separate process (python3's sqlite3 module, or psql), bypassing gatewayd. `database`
/// is the SQLite file (with or without `sqlite://`) or the PostgreSQL URL.
pub fn stored_contents(backend: Backend, database: &str, id: &str) -> Vec<String> {
    match backend {
        Backend::Sqlite => {
            let script = "import sqlite3, json, sys\n\
                db = sqlite3.connect(sys.argv[1])\n\
                rows = db.execute('SELECT message FROM messages WHERE session_id = ? ORDER BY seq', (sys.argv[2],))\n\
                print(json.dumps([json.loads(r[0])['content'] for r in rows]))";
            let output = std::process::Command::new("python3")
                .args(["-c", script])
                .arg(database.trim_start_matches("sqlite://"))
                .arg(id)
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            serde_json::from_slice(&output.stdout).unwrap()
        }
        Backend::Postgres => {
            let output = std::process::Command::new("psql")
                .arg(database)
                .arg("-tAc")
                .arg(format!(
                    "SELECT message::json->>'content' FROM messages WHERE session_id = '{id}' ORDER BY seq"
                ))
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout)
                .unwrap()
                .lines()
                .map(String::from)
                .collect()
        }
    }
}
