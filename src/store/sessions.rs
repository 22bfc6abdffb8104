//! Where sessions are written: one SQL store over SQLite (embedded) or PostgreSQL (shared).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Connection, Row};

use super::cache::HistoryCache;
use super::group::{Committer, Dialect};
use super::headroom::Headroom;
use super::sqlite_files;
use super::sqlite_pool::sqlite_pool;
use super::writer::Writer;
use super::{new_session_id, now, LiveLimits, Session, SessionError, SessionLimits};

/// A PostgreSQL connection idle this long is pinged before its next use.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// One migration set for both backends: the schema uses only SQL that SQLite and
/// PostgreSQL read the same way (TEXT, BIGINT, a foreign key, plain indexes).
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations");

/// SQLite's page size, for turning `max_database_bytes` into `max_page_count`.
const SQLITE_PAGE_BYTES: u64 = 4096;

pub struct SessionStore {
    /// Reads. On SQLite several connections read in parallel with the writer (WAL).
    pub(super) pool: AnyPool,
    pub(super) writer: Arc<Writer>,
    /// Commits turns, many sessions' at a time, through the writer.
    pub(super) committer: Committer,
    /// Recent histories, each valid for one version of its session.
    pub(super) cache: HistoryCache,
    /// SQLite only: leases held in this process (see `lease.rs`); `None` on PostgreSQL.
    pub(super) local_leases: Option<super::local_leases::LocalLeases>,
    /// Swapped whole by a reload; each check reads the limits in force at that moment.
    limits: LiveLimits,
    backend: &'static str,
    /// Token usage not yet written (see `usage_write.rs`).
    pub(super) usage: Arc<super::usage_write::UsageBuffer>,
    /// SQLite: an exclusive lock on the data dir, held while the store is open.
    _owner_lock: Option<std::fs::File>,
}

/// A stored message: its JSON as sent, and when it was stored.
pub struct StoredMessage {
    pub json: String,
    pub created_at: i64,
}

impl SessionStore {
    /// Opens (creating if needed) `data_dir/sessions.db` in WAL mode. The directory is
    /// created with mode 0700 and the database 0600: they hold people's conversations.
    pub async fn open_sqlite(data_dir: &Path, limits: SessionLimits) -> Result<Self, SessionError> {
        let database = sqlite_files::prepare(data_dir)?;
        let owner_lock = sqlite_files::lock(data_dir)?;
        // The spare's room lets a database on a full disk open (its log index, its log
        // checkpointed); the spare is made again once it is open.
        let headroom = Headroom::new(&database);
        let lent = headroom.release_spare();
        let url = format!("sqlite://{}?mode=rwc", database.display());
        sqlx::any::install_default_drivers();
        let max_pages = limits.max_database_bytes / SQLITE_PAGE_BYTES;
        let pool = sqlite_pool(&url, 8, max_pages).await?;
        let writer = sqlite_pool(&url, 1, max_pages).await?;
        MIGRATIONS.run(&writer).await?;
        // This process is the file's only user (the lock above), so every lease in it
        // belongs to a previous run that crashed mid-turn: none is live.
        sqlx::query("UPDATE sessions SET lease_token = NULL, lease_until_ms = 0 WHERE lease_token IS NOT NULL")
            .execute(&writer)
            .await?;
        {
            let mut conn = writer.acquire().await?;
            if let Err(err) = headroom.checkpoint(&mut conn).await {
                tracing::warn!(error = %err, "write-ahead log checkpoint at start failed");
            }
        }
        headroom.make_spare(lent).await;
        let mut store = Self::with_pools(pool, writer, limits, "sqlite", Some(headroom));
        store._owner_lock = Some(owner_lock);
        store.local_leases = Some(Default::default());
        Ok(store)
    }

    /// Connects to PostgreSQL, shared by every gatewayd instance behind a load balancer.
    pub async fn open_postgres(url: &str, limits: SessionLimits) -> Result<Self, SessionError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            // A lost server answers 503 in seconds rather than holding requests.
            .acquire_timeout(Duration::from_secs(5))
            // A connection in steady use is not pinged before each use (a round trip per
            // turn, measured at about a tenth of a session turn's work); one idle for a
            // while is, so a server restarted meanwhile costs a reconnect, not a 503.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_WHEN_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await?;
        MIGRATIONS.run(&pool).await?;
        Ok(Self::with_pools(
            pool.clone(),
            pool,
            limits,
            "postgres",
            None,
        ))
    }

    fn with_pools(
        pool: AnyPool,
        writer: AnyPool,
        limits: SessionLimits,
        backend: &'static str,
        headroom: Option<Headroom>,
    ) -> Self {
        let writer = Arc::new(Writer::new(writer, headroom));
        let cache = HistoryCache::with_budget(limits.cache_bytes);
        let dialect = match backend {
            "postgres" => Dialect::Postgres,
            _ => Dialect::Sqlite,
        };
        let limits: LiveLimits = Arc::new(ArcSwap::from_pointee(limits));
        let usage = Arc::new(super::usage_write::UsageBuffer::default());
        super::usage_write::spawn_flusher(writer.clone(), Arc::downgrade(&usage));
        SessionStore {
            usage,
            pool,
            committer: Committer::spawn(writer.clone(), limits.clone(), dialect),
            writer,
            cache,
            local_leases: None,
            limits,
            backend,
            _owner_lock: None,
        }
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    pub fn limits(&self) -> SessionLimits {
        **self.limits.load()
    }

    /// Puts new `[sessions]` limits in force for the turns that start (or commit) from
    /// now on (a SIGHUP reload). `retention`, `max_database_bytes` and `cache_bytes` are taken at open.
    pub fn set_limits(&self, limits: SessionLimits) {
        self.limits.store(Arc::new(limits));
    }

    /// Creates a session, unless `owner` already has `max_sessions_per_key`.
    pub async fn create(
        &self,
        owner: &str,
        metadata: BTreeMap<String, String>,
        system: Option<String>,
    ) -> Result<Session, SessionError> {
        let id = new_session_id()?;
        let (created_at, created_us, _) = now();
        let metadata_json =
            serde_json::to_string(&metadata).map_err(|e| SessionError::Setup(e.to_string()))?;
        let bytes = system.as_ref().map_or(0, |s| s.len()) as i64;
        let quota = match self.limits().max_sessions_per_key {
            0 => i64::MAX,
            n => n as i64,
        };
        let mut conn = self.writer.acquire("create").await?;
        let result = async {
            let mut tx = conn.begin().await?;
            if self.backend == "postgres" {
                // Creates by one owner queue here, so concurrent ones cannot overshoot
                // the quota (SQLite's single writer already serialises them).
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
            }
            let inserted = sqlx::query(
                "INSERT INTO sessions (id, owner, created_at, created_us, updated_at, metadata, \
                 system_prompt, message_count, byte_count) \
                 SELECT $1, $2, $3, $4, $3, $5, $6, 0, $7 \
                 WHERE (SELECT COUNT(*) FROM sessions WHERE owner = $2) < $8",
            )
            .bind(&id)
            .bind(owner)
            .bind(created_at)
            .bind(created_us)
            .bind(metadata_json)
            .bind(system)
            .bind(bytes)
            .bind(quota)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(SessionError::QuotaReached(
                    self.limits().max_sessions_per_key,
                ));
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        self.writer.finish("create", conn, result)?;
        Ok(Session {
            id,
            object: "session",
            created_at,
            metadata,
        })
    }

    /// The owner's sessions, newest first, starting after the session `after`.
    pub async fn list(
        &self,
        owner: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Session>, bool), SessionError> {
        self.list_page(owner, limit, after)
            .await
            .map_err(|e| self.writer.failed("read", e))
    }

    async fn list_page(
        &self,
        owner: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Session>, bool), SessionError> {
        let fetch = (limit + 1) as i64;
        let rows = match after {
            None => {
                sqlx::query(
                    "SELECT id, created_at, metadata FROM sessions WHERE owner = $1 \
                     ORDER BY created_us DESC, id DESC LIMIT $2",
                )
                .bind(owner)
                .bind(fetch)
                .fetch_all(&self.pool)
                .await?
            }
            Some(cursor) => {
                let anchor =
                    sqlx::query("SELECT created_us FROM sessions WHERE id = $1 AND owner = $2")
                        .bind(cursor)
                        .bind(owner)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or(SessionError::NotFound)?;
                let anchor_us: i64 = anchor.try_get("created_us")?;
                sqlx::query(
                    "SELECT id, created_at, metadata FROM sessions WHERE owner = $1 \
                     AND (created_us < $2 OR (created_us = $2 AND id < $3)) \
                     ORDER BY created_us DESC, id DESC LIMIT $4",
                )
                .bind(owner)
                .bind(anchor_us)
                .bind(cursor)
                .bind(fetch)
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut sessions = rows
            .iter()
            .map(session_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let has_more = sessions.len() > limit;
        sessions.truncate(limit);
        Ok((sessions, has_more))
    }

    /// The session, its system prompt and its messages in order.
    pub async fn get(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<(Session, Option<String>, Vec<StoredMessage>), SessionError> {
        self.get_all(owner, id)
            .await
            .map_err(|e| self.writer.failed("read", e))
    }

    async fn get_all(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<(Session, Option<String>, Vec<StoredMessage>), SessionError> {
        let row = sqlx::query(
            "SELECT id, created_at, metadata, system_prompt FROM sessions WHERE id = $1 AND owner = $2",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(SessionError::NotFound)?;
        let session = session_from_row(&row)?;
        let system: Option<String> = row.try_get("system_prompt")?;
        let messages = self.messages(id).await?;
        Ok((session, system, messages))
    }

    async fn messages(&self, id: &str) -> Result<Vec<StoredMessage>, SessionError> {
        let rows = sqlx::query(
            "SELECT message, created_at FROM messages WHERE session_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredMessage {
                    json: r.try_get("message")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Deletes the session and its messages from storage (not just hides them).
    pub async fn delete(&self, owner: &str, id: &str) -> Result<(), SessionError> {
        let mut conn = self.writer.acquire("delete").await?;
        let result = async {
            let mut tx = conn.begin().await?;
            let deleted = sqlx::query("DELETE FROM sessions WHERE id = $1 AND owner = $2")
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            if deleted.rows_affected() == 0 {
                return Err(SessionError::NotFound);
            }
            sqlx::query("DELETE FROM messages WHERE session_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        self.cache.remove(id);
        self.writer.finish("delete", conn, result)
    }

    /// True while the store takes writes (for `GET /health/ready`).
    pub async fn ready(&self) -> bool {
        self.writer.ready().await
    }

    /// Number of stored sessions, for metrics.
    pub async fn count(&self) -> Result<i64, SessionError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM sessions")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

fn session_from_row(row: &AnyRow) -> Result<Session, SessionError> {
    let metadata: String = row.try_get("metadata")?;
    Ok(Session {
        id: row.try_get("id")?,
        object: "session",
        created_at: row.try_get("created_at")?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
    })
}
