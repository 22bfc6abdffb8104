//! Stored responses as chains: storage grows with what each turn adds, the context still reaches the upstream whole and in order, a per-key byte quota refuses before the upstream, and deletes, expiry and rows stored before chains keep every chain whole — on SQLite and PostgreSQL.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use common::sessions::{call, respond};
use common::upstream::{chat_upstream, contents_of, Seen};
use common::{
    assert_openai_error, client, config_from_toml, named_keys_toml, spawn_gateway_with_store,
    Backend, Gateway, KEY_A, KEY_B,
};
use gatewayd::config::Config;
use gatewayd::sessions::SessionStore;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Row;

on_both_backends!(
    a_long_chain_grows_storage_by_what_each_turn_adds,
    the_quota_refuses_before_the_upstream_for_that_key_only,
    deleting_inside_a_chain_keeps_its_followers_whole,
    an_expired_root_keeps_its_chain_whole,
    rows_stored_before_chains_continue_and_count,
    a_response_made_in_a_conversation_continues_from_its_turn,
    forged_links_never_loop_or_cross_keys,
);

/// The case: a 200 KB first turn, then 60 follow-ups of 100 bytes each.
async fn a_long_chain_grows_storage_by_what_each_turn_adds(backend: Backend) {
    let c = start(prepare(backend, "").await).await;
    let before = c.database_bytes().await;
    let first = random_text(200 * 1024);
    let mut id = c.turn(KEY_A, &first, None).await;
    let mut expected = vec![first.clone(), format!("echo: {first}")];
    for _ in 0..60 {
        let text = random_text(100);
        id = c.turn(KEY_A, &text, Some(&id)).await;
        expected.push(text.clone());
        expected.push(format!("echo: {text}"));
    }
    let growth = c.database_bytes().await - before;
    eprintln!("{backend:?}: the database grew by {growth} bytes");
    assert!(growth < 2 * 1024 * 1024, "grew by {growth} bytes");

    // The last follow-up reached the upstream with the whole context, in order.
    let sent = contents_of(&c.last_upstream_body());
    expected.truncate(expected.len() - 1);
    assert_eq!(sent.len(), expected.len());
    assert!(
        sent == expected,
        "the context reached the upstream out of order"
    );
    // And the chain goes on from its tip.
    let tip = c.turn(KEY_A, "one more", Some(&id)).await;
    assert_eq!(contents_of(&c.last_upstream_body()).len(), 123);
    let (status, items) = c
        .call(
            KEY_A,
            Method::GET,
            &format!("/v1/responses/{tip}/input_items"),
        )
        .await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["data"][0]["content"], "one more");
    c.finish().await;
}

/// `[responses] max_bytes_per_key`: the turn that would pass it gets 429
/// `storage_quota_exceeded` and nothing reaches the upstream; another key is unaffected;
/// deleting a response frees its bytes.
async fn the_quota_refuses_before_the_upstream_for_that_key_only(backend: Backend) {
    let c = start(prepare(backend, "[responses]\nmax_bytes_per_key = 100000\n").await).await;
    // About 41 KB stored: input, output, input items and the response object.
    let first = c.turn(KEY_A, &random_text(10_000), None).await;
    assert!(c.usage(&c.owner_a).await > 40_000);

    let calls = c.upstream_calls();
    let too_big = json!({"model": "m", "input": random_text(70_000)});
    let (status, error) = respond(&c.gw, KEY_A, too_big.clone()).await;
    assert_eq!(status, 429, "{error}");
    assert_openai_error(&error, "rate_limit_error", "storage_quota_exceeded");
    let mut streamed = too_big.clone();
    streamed["stream"] = json!(true);
    let response = client()
        .post(c.gw.url("/v1/responses"))
        .bearer_auth(KEY_A)
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-should-retry"], "false");
    let error: Value = response.json().await.unwrap();
    assert_openai_error(&error, "rate_limit_error", "storage_quota_exceeded");
    assert_eq!(c.upstream_calls(), calls, "the upstream received nothing");

    // Another key has its own quota.
    c.turn(KEY_B, &random_text(10_000), None).await;
    assert!(c.usage(&c.owner_b).await > 40_000);

    // Its input fits, its whole response does not: refused when it is stored.
    let medium = json!({"model": "m", "input": random_text(20_000)});
    let used = c.usage(&c.owner_a).await;
    let (status, error) = respond(&c.gw, KEY_A, medium.clone()).await;
    assert_eq!(status, 429, "{error}");
    assert_openai_error(&error, "rate_limit_error", "storage_quota_exceeded");
    assert_eq!(c.usage(&c.owner_a).await, used, "nothing was stored");

    let (status, _) = c
        .call(KEY_A, Method::DELETE, &format!("/v1/responses/{first}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(c.usage(&c.owner_a).await, 0, "the delete freed its bytes");
    let (status, body) = respond(&c.gw, KEY_A, medium).await;
    assert_eq!(status, 200, "{body}");
    c.finish().await;
}

/// A deleted response can no longer be read or continued, but the responses that
/// continue from it keep their whole context; deleting the last of them removes it.
async fn deleting_inside_a_chain_keeps_its_followers_whole(backend: Backend) {
    let c = start(prepare(backend, "").await).await;
    let r1 = c.turn(KEY_A, "one", None).await;
    let r2 = c.turn(KEY_A, "two", Some(&r1)).await;
    let r3 = c.turn(KEY_A, "three", Some(&r2)).await;
    c.delete(KEY_A, &r2).await;
    for path in [
        format!("/v1/responses/{r2}"),
        format!("/v1/responses/{r2}/input_items"),
    ] {
        assert_eq!(c.call(KEY_A, Method::GET, &path).await.0, 404, "{path}");
    }
    let (status, body) = c
        .respond(
            KEY_A,
            json!({"model": "m", "input": "x", "previous_response_id": r2}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "previous_response_not_found");

    let r4 = c.turn(KEY_A, "four", Some(&r3)).await;
    let whole = [
        "one",
        "echo: one",
        "two",
        "echo: two",
        "three",
        "echo: three",
        "four",
    ];
    assert_eq!(contents_of(&c.last_upstream_body()), whole);
    c.delete(KEY_A, &r3).await;
    let r5 = c.turn(KEY_A, "branch", Some(&r1)).await;
    assert_eq!(
        contents_of(&c.last_upstream_body()),
        ["one", "echo: one", "branch"]
    );
    c.delete(KEY_A, &r1).await;
    let r6 = c.turn(KEY_A, "five", Some(&r4)).await;
    let mut five = whole.to_vec();
    five.extend(["echo: four", "five"]);
    assert_eq!(contents_of(&c.last_upstream_body()), five);
    // r1, r2 and r3 are kept (hidden) for r4, r5 and r6.
    assert_eq!(c.stored_rows(&c.owner_a).await, 6);

    // Their last followers gone, hidden responses go with them: r2 and r3 with r4, and
    // r1 with r5; the owner's bytes come back to nothing.
    c.delete(KEY_A, &r6).await;
    c.delete(KEY_A, &r4).await;
    assert_eq!(c.stored_rows(&c.owner_a).await, 2, "r1 (for r5) and r5");
    c.delete(KEY_A, &r5).await;
    assert_eq!(c.stored_rows(&c.owner_a).await, 0);
    assert_eq!(c.usage(&c.owner_a).await, 0);
    c.finish().await;
}

/// `[responses] retention_days`: an expired response that a newer one continues from is
/// no longer readable, but the newer one still continues with the whole context.
async fn an_expired_root_keeps_its_chain_whole(backend: Backend) {
    let c = start(prepare(backend, "").await).await;
    let old = "resp_00000000000000000000000000000abc";
    let context = json!([{"role": "user", "content": "long ago"},
        {"role": "assistant", "content": "echo: long ago"}]);
    c.execute(
        "INSERT INTO responses (id, owner, created_at, context, input_items, response) \
         VALUES ($1, $2, 1000, $3, '[]', '{}')",
        &[old, &c.owner_a, &context.to_string()],
    )
    .await;
    let fresh = c.turn(KEY_A, "now", Some(old)).await;
    let store = c.gw.state.sessions.clone().unwrap();
    let purged = store
        .purge_responses(std::time::Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let (status, _) = c
        .call(KEY_A, Method::GET, &format!("/v1/responses/{old}"))
        .await;
    assert_eq!(status, 404, "an expired response is not readable");
    c.turn(KEY_A, "later", Some(&fresh)).await;
    assert_eq!(
        contents_of(&c.last_upstream_body()),
        ["long ago", "echo: long ago", "now", "echo: now", "later"]
    );
    c.finish().await;
}

/// A database written before chains existed: its rows (each with its whole context)
/// continue as chain roots after the migration, and count against their owner's quota.
async fn rows_stored_before_chains_continue_and_count(backend: Backend) {
    let prepared = prepare(backend, "[responses]\nmax_bytes_per_key = 60000\n").await;
    let old_migrations = common::temp_dir("migrations");
    for name in [
        "0001_sessions.sql",
        "0002_leases_activity.sql",
        "0003_responses.sql",
        "0004_native_responses.sql",
    ] {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/store/migrations")
            .join(name);
        std::fs::copy(from, old_migrations.join(name)).unwrap();
    }
    let pool = connect(&prepared.url).await;
    sqlx::migrate::Migrator::new(old_migrations.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let old = "resp_0000000000000000000000000000beef";
    let filler = random_text(50_000);
    let context = json!([{"role": "user", "content": "before"},
        {"role": "assistant", "content": filler}]);
    sqlx::query(
        "INSERT INTO responses (id, owner, created_at, context, input_items, response) \
         VALUES ($1, $2, $3, $4, '[]', '{}')",
    )
    .bind(old)
    .bind(&prepared.owner_a)
    .bind(now_secs())
    .bind(context.to_string())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let c = start(prepared).await;
    assert!(c.usage(&c.owner_a).await > 50_000, "the old row counts");
    let (status, body) = c
        .respond(
            KEY_A,
            json!({"model": "m", "input": random_text(10_000), "previous_response_id": old}),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(c.upstream_calls(), 0);
    c.turn(KEY_A, "after", Some(old)).await;
    let sent = contents_of(&c.last_upstream_body());
    assert_eq!(sent, ["before", filler.as_str(), "after"]);
    let (status, _) = c
        .call(KEY_A, Method::GET, &format!("/v1/responses/{old}"))
        .await;
    assert_eq!(status, 200);
    c.finish().await;
}

/// A response made in a conversation stores only its turn and continues from the
/// conversation's messages before it, as the conversation stores them.
async fn a_response_made_in_a_conversation_continues_from_its_turn(backend: Backend) {
    let c = start(prepare(backend, "").await).await;
    let (status, conv) = c
        .call_with(
            KEY_A,
            Method::POST,
            "/v1/conversations",
            json!({"items": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    assert_eq!(status, 200, "{conv}");
    let conv = conv["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for text in ["one", "two"] {
        let (status, body) = c
            .respond(
                KEY_A,
                json!({"model": "m", "input": text, "conversation": conv}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let big = random_text(30_000);
    let before = c.usage(&c.owner_a).await;
    c.respond(
        KEY_A,
        json!({"model": "m", "input": big, "conversation": conv}),
    )
    .await;
    let (status, body) = c
        .respond(
            KEY_A,
            json!({"model": "m", "input": "three", "conversation": conv}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let third = c.usage(&c.owner_a).await - before;
    assert!(
        third < 130_000,
        "the last turn's row holds its turn only: {third}"
    );

    c.turn(KEY_A, "branch", Some(&ids[0])).await;
    assert_eq!(
        contents_of(&c.last_upstream_body()),
        ["hello", "one", "echo: one", "branch"]
    );
    c.turn(KEY_A, "more", Some(&ids[1])).await;
    assert_eq!(
        contents_of(&c.last_upstream_body()),
        ["hello", "one", "echo: one", "two", "echo: two", "more"]
    );

    // The conversation deleted, its messages are gone from its responses' context too.
    let (status, _) = c
        .call(KEY_A, Method::DELETE, &format!("/v1/conversations/{conv}"))
        .await;
    assert_eq!(status, 200);
    let (status, body) = c
        .respond(
            KEY_A,
            json!({"model": "m", "input": "x", "previous_response_id": ids[1]}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "previous_response_not_found");
    let (status, _) = c
        .call(KEY_A, Method::GET, &format!("/v1/responses/{}", ids[1]))
        .await;
    assert_eq!(status, 200, "the response itself stays readable");
    c.finish().await;
}

/// Links written straight into the database: a loop and a link to another key's
/// response are broken chains (404), and a chain deeper than a session may be is
/// refused (413) after a bounded walk; nothing reaches the upstream.
async fn forged_links_never_loop_or_cross_keys(backend: Backend) {
    let c = start(prepare(backend, "[sessions]\nmax_messages = 4\n").await).await;
    let b_root = c.turn(KEY_B, "secret of b", None).await;
    let insert = format!(
        "INSERT INTO responses (id, owner, created_at, context, input_items, response) \
         VALUES ($1, $2, {}, '[]', '[]', '{{}}')",
        now_secs()
    );
    let forged: Vec<String> = (0..12).map(|i| format!("resp_{i:032x}")).collect();
    for id in &forged {
        c.execute(&insert, &[id, &c.owner_a]).await;
    }
    // 0 <-> 1 loop; 2 -> another key's response; 3 -> 4 -> ... -> 11, a root.
    c.link(&forged[0], &forged[1]).await;
    c.link(&forged[1], &forged[0]).await;
    c.link(&forged[2], &b_root).await;
    for pair in forged[3..].windows(2) {
        c.link(&pair[0], &pair[1]).await;
    }
    let calls = c.upstream_calls();
    for (id, expected) in [(&forged[0], 404), (&forged[2], 404), (&forged[3], 413)] {
        let (status, body) = c
            .respond(
                KEY_A,
                json!({"model": "m", "input": "go", "previous_response_id": id}),
            )
            .await;
        assert_eq!(status, expected, "{id}: {body}");
    }
    assert_eq!(c.upstream_calls(), calls, "nothing was sent upstream");
    // A chain as deep as a session may be still continues.
    let (status, body) = c
        .respond(
            KEY_A,
            json!({"model": "m", "input": "go", "previous_response_id": forged[8]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    c.finish().await;
}

// ---------------------------------------------------------------------------------------

/// A gateway over the mock upstream with its own database: a fresh SQLite file, or a
/// private PostgreSQL database, so sizes and rows are this test's alone.
struct Chain {
    gw: Gateway,
    seen: Seen,
    url: String,
    owner_a: String,
    owner_b: String,
    private: Option<PrivateDatabase>,
}

/// Everything before the store opens, so a test can write an older database first.
struct Prepared {
    config: Config,
    seen: Seen,
    url: String,
    owner_a: String,
    owner_b: String,
    private: Option<PrivateDatabase>,
}

async fn prepare(backend: Backend, extra_toml: &str) -> Prepared {
    let (upstream, seen) = chat_upstream().await;
    let run = common::temp_dir("chain");
    let run = run.file_name().unwrap().to_str().unwrap().to_string();
    let (owner_a, owner_b) = (format!("a-{run}"), format!("b-{run}"));
    let config = config_from_toml(&format!(
        "{}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{upstream}\"\nmodels = [\"*\"]\n{extra_toml}",
        named_keys_toml(&owner_a, &owner_b)
    ));
    let (url, private) = match backend {
        Backend::Sqlite => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&config.data_dir)
                .unwrap();
            (sqlite_url(&config.data_dir), None)
        }
        Backend::Postgres => {
            let base = std::env::var("GATEWAYD_TEST_POSTGRES_URL").unwrap();
            let private = PrivateDatabase::create(&base).await;
            (private.url.clone(), Some(private))
        }
    };
    Prepared {
        config,
        seen,
        url,
        owner_a,
        owner_b,
        private,
    }
}

async fn start(p: Prepared) -> Chain {
    let limits = p.config.sessions.limits();
    let store = match &p.private {
        Some(private) => SessionStore::open_postgres(&private.url, limits).await,
        None => SessionStore::open_sqlite(&p.config.data_dir, limits).await,
    }
    .unwrap();
    let gw = spawn_gateway_with_store(p.config, store).await;
    Chain {
        gw,
        seen: p.seen,
        url: p.url,
        owner_a: p.owner_a,
        owner_b: p.owner_b,
        private: p.private,
    }
}

impl Chain {
    async fn call(&self, key: &str, method: Method, path: &str) -> (u16, Value) {
        call(&self.gw, key, method, path, None).await
    }

    async fn call_with(&self, key: &str, method: Method, path: &str, body: Value) -> (u16, Value) {
        call(&self.gw, key, method, path, Some(body)).await
    }

    async fn respond(&self, key: &str, body: Value) -> (u16, Value) {
        respond(&self.gw, key, body).await
    }

    /// A stored turn saying `text`, continuing `previous`: the new response's id.
    async fn turn(&self, key: &str, text: &str, previous: Option<&str>) -> String {
        let mut body = json!({"model": "m", "input": text});
        if let Some(previous) = previous {
            body["previous_response_id"] = json!(previous);
        }
        let (status, response) = self.respond(key, body).await;
        assert_eq!(status, 200, "{response}");
        response["id"].as_str().unwrap().to_string()
    }

    fn upstream_calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last_upstream_body(&self) -> Value {
        self.seen.lock().unwrap().last().unwrap().clone()
    }

    /// What the database holds: SQLite's pages, or every PostgreSQL table with its
    /// indexes and TOAST.
    async fn database_bytes(&self) -> i64 {
        let sql = match self.private {
            None => {
                "SELECT page_count * page_size AS n FROM pragma_page_count(), pragma_page_size()"
            }
            Some(_) => {
                "SELECT CAST(SUM(pg_total_relation_size(c.oid)) AS BIGINT) AS n FROM pg_class c \
                 JOIN pg_namespace s ON s.oid = c.relnamespace \
                 WHERE s.nspname = 'public' AND c.relkind = 'r'"
            }
        };
        let pool = connect(&self.url).await;
        let row = sqlx::query(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        row.try_get("n").unwrap()
    }

    async fn delete(&self, key: &str, id: &str) {
        let (status, body) = self
            .call(key, Method::DELETE, &format!("/v1/responses/{id}"))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// The owner's stored response bytes as the store counts them.
    async fn usage(&self, owner: &str) -> i64 {
        let pool = connect(&self.url).await;
        let row = sqlx::query("SELECT bytes FROM response_usage WHERE owner = $1")
            .bind(owner)
            .fetch_optional(&pool)
            .await
            .unwrap();
        pool.close().await;
        row.map_or(0, |row| row.try_get("bytes").unwrap())
    }

    /// The owner's response rows, readable or hidden.
    async fn stored_rows(&self, owner: &str) -> i64 {
        let pool = connect(&self.url).await;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM responses WHERE owner = $1")
            .bind(owner)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        row.try_get("n").unwrap()
    }

    /// One statement straight on the database, bypassing gatewayd.
    async fn execute(&self, sql: &str, binds: &[&str]) {
        let pool = connect(&self.url).await;
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        query.execute(&pool).await.unwrap();
        pool.close().await;
    }

    /// Makes `child` continue from `parent`, straight in the database.
    async fn link(&self, child: &str, parent: &str) {
        self.execute(
            "UPDATE responses SET parent_id = $1 WHERE id = $2",
            &[parent, child],
        )
        .await;
    }

    async fn finish(self) {
        self.gw.shutdown.cancel();
        if let Some(private) = self.private {
            private.drop_now().await;
        }
    }
}

fn sqlite_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("sessions.db").display()
    )
}

async fn connect(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::pool::PoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap()
}

/// `len` random letters, digits and spaces: text no database compresses away.
fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ";
    let mut bytes = vec![0u8; len];
    getrandom::getrandom(&mut bytes).unwrap();
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A database of its own on the test PostgreSQL server, dropped at the end.
struct PrivateDatabase {
    admin: sqlx::AnyPool,
    name: String,
    url: String,
}

impl PrivateDatabase {
    async fn create(base_url: &str) -> PrivateDatabase {
        let admin = connect(base_url).await;
        let suffix: PathBuf = common::temp_dir("pgchain");
        let name = suffix
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace('-', "_");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let (server, _) = base_url.rsplit_once('/').unwrap();
        let url = format!("{server}/{name}");
        PrivateDatabase { admin, name, url }
    }

    async fn drop_now(self) {
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}
