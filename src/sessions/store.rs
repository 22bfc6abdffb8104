//! Where sessions are written: one SQL store over SQLite (embedded) or PostgreSQL (shared).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{new_session_id, History, Session, SessionError, SessionLimits};

/// Continuations of one session are serialised through one of these locks (by id hash).
/// Striped, so there is no global lock and no map to clean up.
const LOCK_STRIPES: usize = 1024;

/// One migration set for both backends: the schema uses only SQL that SQLite and
/// PostgreSQL read the same way (TEXT, BIGINT, a foreign key, plain indexes).
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("src/sessions/migrations");

pub struct SessionStore {
    pool: AnyPool,
    /// Where writes go. For SQLite a single connection: SQLite has one writer at a time,
    /// and queueing here (async) is far cheaper than SQLITE_BUSY retries with sleeps.
    /// For PostgreSQL the same pool as reads.
    writer: AnyPool,
    limits: SessionLimits,
    locks: Vec<Arc<Mutex<()>>>,
    backend: &'static str,
}

/// A stored message: its JSON as sent, and when it was stored.
pub struct StoredMessage {
    pub json: String,
    pub created_at: i64,
}

fn now() -> (i64, i64) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    (since.as_secs() as i64, since.as_micros() as i64)
}

impl SessionStore {
    /// Opens (creating if needed) `data_dir/sessions.db` in WAL mode. The directory is
    /// created with mode 0700: it holds people's conversations.
    pub async fn open_sqlite(data_dir: &Path, limits: SessionLimits) -> Result<Self, SessionError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| {
                SessionError::Setup(format!(
                    "cannot create data dir {}: {e}",
                    data_dir.display()
                ))
            })?;
        let path = data_dir.join("sessions.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        sqlx::any::install_default_drivers();
        let pool = sqlite_pool(&url, 8).await?;
        let writer = sqlite_pool(&url, 1).await?;
        MIGRATIONS.run(&writer).await?;
        Ok(Self::with_pools(pool, writer, limits, "sqlite"))
    }

    /// Connects to PostgreSQL, shared by every gatewayd instance behind a load balancer.
    pub async fn open_postgres(url: &str, limits: SessionLimits) -> Result<Self, SessionError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        MIGRATIONS.run(&pool).await?;
        Ok(Self::with_pools(pool.clone(), pool, limits, "postgres"))
    }

    fn with_pools(
        pool: AnyPool,
        writer: AnyPool,
        limits: SessionLimits,
        backend: &'static str,
    ) -> Self {
        SessionStore {
            pool,
            writer,
            limits,
            locks: (0..LOCK_STRIPES)
                .map(|_| Arc::new(Mutex::new(())))
                .collect(),
            backend,
        }
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Held for a whole continuation (read history → upstream → append).
    pub async fn lock(&self, id: &str) -> OwnedMutexGuard<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        let stripe = (hasher.finish() as usize) % LOCK_STRIPES;
        self.locks[stripe].clone().lock_owned().await
    }

    pub async fn create(
        &self,
        owner: &str,
        metadata: BTreeMap<String, String>,
        system: Option<String>,
    ) -> Result<Session, SessionError> {
        let id = new_session_id()?;
        let (created_at, created_us) = now();
        let metadata_json =
            serde_json::to_string(&metadata).map_err(|e| SessionError::Setup(e.to_string()))?;
        let bytes = system.as_ref().map_or(0, |s| s.len()) as i64;
        sqlx::query(
            "INSERT INTO sessions (id, owner, created_at, created_us, metadata, system_prompt, message_count, byte_count) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
        )
        .bind(&id)
        .bind(owner)
        .bind(created_at)
        .bind(created_us)
        .bind(metadata_json)
        .bind(system)
        .bind(bytes)
        .execute(&self.writer)
        .await?;
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

    /// What a continuation sends before the request's own messages.
    pub async fn history(&self, owner: &str, id: &str) -> Result<History, SessionError> {
        // One round trip: the session row joined with its messages (if any), in order.
        let rows = sqlx::query(
            "SELECT s.system_prompt, s.byte_count, m.message FROM sessions s \
             LEFT JOIN messages m ON m.session_id = s.id \
             WHERE s.id = $1 AND s.owner = $2 ORDER BY m.seq",
        )
        .bind(id)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        let first = rows.first().ok_or(SessionError::NotFound)?;
        let bytes: i64 = first.try_get("byte_count")?;
        let system: Option<String> = first.try_get("system_prompt")?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(message) = row.try_get::<Option<String>, _>("message")? {
                messages.push(message);
            }
        }
        Ok(History {
            system,
            messages,
            bytes: bytes.max(0) as usize,
        })
    }

    /// Appends one turn (the request's messages and the reply) in one transaction, or
    /// nothing: limits are checked inside the same transaction.
    pub async fn append(
        &self,
        owner: &str,
        id: &str,
        messages: &[String],
    ) -> Result<(), SessionError> {
        let count = messages.len() as i64;
        let bytes: i64 = messages.iter().map(|m| m.len() as i64).sum();
        let (created_at, _) = now();
        let mut tx = self.writer.begin().await?;
        // The UPDATE comes first so it takes the write lock (SQLite) or the row lock
        // (PostgreSQL) at once; concurrent appends to one session queue here.
        let updated = sqlx::query(
            "UPDATE sessions SET message_count = message_count + $1, byte_count = byte_count + $2 \
             WHERE id = $3 AND owner = $4 AND message_count + $1 <= $5 AND byte_count + $2 <= $6 \
             RETURNING message_count",
        )
        .bind(count)
        .bind(bytes)
        .bind(id)
        .bind(owner)
        .bind(self.limits.max_messages as i64)
        .bind(self.limits.max_bytes as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = updated else {
            let exists = sqlx::query("SELECT 1 AS one FROM sessions WHERE id = $1 AND owner = $2")
                .bind(id)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match exists {
                Some(_) => self.limit_error(),
                None => SessionError::NotFound,
            });
        };
        let total: i64 = row.try_get("message_count")?;
        // One multi-row INSERT: one round trip for the whole turn.
        let placeholders: Vec<String> = (0..messages.len())
            .map(|i| {
                format!(
                    "(${}, ${}, ${}, ${})",
                    4 * i + 1,
                    4 * i + 2,
                    4 * i + 3,
                    4 * i + 4
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO messages (session_id, seq, message, created_at) VALUES {}",
            placeholders.join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for (offset, message) in messages.iter().enumerate() {
            insert = insert
                .bind(id)
                .bind(total - count + offset as i64)
                .bind(message.as_str())
                .bind(created_at);
        }
        if !messages.is_empty() {
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub fn limit_error(&self) -> SessionError {
        SessionError::LimitExceeded(format!(
            "This session would exceed its limits ({} messages, {} bytes). Start a new session.",
            self.limits.max_messages, self.limits.max_bytes
        ))
    }

    /// Deletes the session and its messages from storage (not just hides them).
    pub async fn delete(&self, owner: &str, id: &str) -> Result<(), SessionError> {
        let mut tx = self.writer.begin().await?;
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

    /// Number of stored sessions, for metrics.
    pub async fn count(&self) -> Result<i64, SessionError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM sessions")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

async fn sqlite_pool(url: &str, connections: u32) -> Result<AnyPool, SessionError> {
    Ok(AnyPoolOptions::new()
        .max_connections(connections)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // WAL + NORMAL: a committed turn survives a process crash (SIGKILL);
                // the busy timeout covers other processes touching the file.
                for pragma in [
                    "PRAGMA journal_mode = WAL",
                    "PRAGMA synchronous = NORMAL",
                    "PRAGMA busy_timeout = 5000",
                    "PRAGMA foreign_keys = ON",
                    // No mmap: mapped database pages would count as gatewayd's RSS and
                    // grow with the file (measured in the soak), hiding real leaks.
                ] {
                    sqlx::query(pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await?)
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
