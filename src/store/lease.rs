//! Session leases: one continuation at a time per session, across every instance sharing the store.
//!
//! On PostgreSQL, shared by several instances, a lease is a token and an expiry on the
//! session's row, taken and released by single atomic UPDATEs. No database connection is
//! held while the upstream answers: the holder renews the expiry in the background, and
//! a crashed holder's lease simply runs out.
//!
//! On SQLite one process owns the file (the data dir is locked), so leases live in that
//! process's memory: taking one writes nothing and releasing one cannot fail, even on a
//! full disk, where a lease written to the file could never be cleared again.
//! Waiting for one session never touches any other session.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::Row;
use tokio::sync::OwnedMutexGuard;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::group_sql::version_of;
use super::local_leases::LocalLeases;
use super::{random_hex, SessionError, SessionStore, Version};

/// The database's own time in milliseconds (PostgreSQL): row leases are taken, renewed
/// and judged by one clock, so instances whose clocks disagree cannot take each other's
/// live leases. (Row leases exist only on PostgreSQL; SQLite's are in memory.)
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// A condition every lease-writing UPDATE carries (PostgreSQL): its transaction commits
/// without waiting for the write-ahead log to reach the disk. A row that is written has
/// met every condition, so the setting was made in that statement's own transaction.
/// Only the lease is written there, and a lease lost in a database crash costs only that
/// turn (its commit then finds another token and stores nothing): not worth a disk flush,
/// which on this project's machine takes 3 ms. The turn itself is committed durably.
const UNFLUSHED: &str = "set_config('synchronous_commit', 'off', true) = 'off'";

/// How long a lease lasts without renewal: what a crashed holder costs its session.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(10);
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// The right to run one turn of a session. Committing the turn releases it in the same
/// statement; dropping it without a commit releases it in the background.
pub struct SessionLease {
    store: Arc<SessionStore>,
    pub(super) id: String,
    pub(super) owner: String,
    pub(super) token: String,
    /// The session's version when the lease was taken: whether a cached history is
    /// still the stored one.
    pub(super) version: Version,
    pub(super) released: bool,
    /// PostgreSQL: keeps the row's lease alive while the turn runs.
    renewer: Option<JoinHandle<()>>,
    /// SQLite: the in-memory lease itself; dropping it releases the session.
    local: Option<OwnedMutexGuard<()>>,
}

/// The token a commit presents for an in-memory lease: the row's `lease_token` stays
/// NULL, which the commit reads as `''` (see `group.rs`).
pub(super) const LOCAL_TOKEN: &str = "";

enum Attempt {
    Taken(Version),
    Held,
    Missing,
}

impl SessionStore {
    /// Takes the lease on `owner`'s session `id`, waiting up to `busy_timeout` while
    /// another turn holds it. Unknown and foreign ids are `NotFound`.
    pub async fn lease(
        self: &Arc<Self>,
        owner: &str,
        id: &str,
    ) -> Result<SessionLease, SessionError> {
        if let Some(leases) = &self.local_leases {
            return self.lease_locally(leases, owner, id).await;
        }
        let token = random_hex()?;
        let deadline = Instant::now() + self.limits().busy_timeout;
        let mut pause = FIRST_PAUSE;
        let mut look_first = false;
        loop {
            let attempt = if look_first {
                match self.peek_lease(owner, id).await? {
                    Attempt::Taken(_) => self.try_take(owner, id, &token).await?,
                    other => other,
                }
            } else {
                self.try_take(owner, id, &token).await?
            };
            match attempt {
                Attempt::Taken(version) => return Ok(self.held(owner, id, token, version)),
                Attempt::Missing => {
                    self.cache.remove(id);
                    return Err(SessionError::NotFound);
                }
                Attempt::Held => {}
            }
            if Instant::now() + pause >= deadline {
                return Err(SessionError::Busy);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
            look_first = true;
        }
    }

    /// SQLite: waits for the session's in-memory lock, then takes the session's version
    /// from the history cache, or reads it (a read, so it works on a full disk too).
    /// Unknown and foreign ids are `NotFound`.
    ///
    /// The cache is trusted here because one process owns the file and every change to a
    /// session goes through this store, which moves or drops the session's entry in step:
    /// a commit appends to it under the lease, item and session deletes drop it, a purge
    /// clears the cache. A continued session whose history is cached costs no query.
    async fn lease_locally(
        self: &Arc<Self>,
        leases: &LocalLeases,
        owner: &str,
        id: &str,
    ) -> Result<SessionLease, SessionError> {
        // Whose session it is, before waiting: another key's busy session must answer
        // 404 at once, like an unknown one, not 409 after the busy timeout.
        if self.cache.version(id, owner).is_none() {
            self.local_version(owner, id).await?;
        }
        let lock = leases.lock_of(id);
        let held = tokio::time::timeout(self.limits().busy_timeout, lock.lock_owned()).await;
        let Ok(guard) = held else {
            leases.forget_if_idle(id);
            return Err(SessionError::Busy);
        };
        let mut lease = SessionLease {
            store: self.clone(),
            id: id.to_string(),
            owner: owner.to_string(),
            token: LOCAL_TOKEN.to_string(),
            version: (0, 0),
            released: false,
            renewer: None,
            local: Some(guard),
        };
        // Looked up again under the lock: the turn before may have changed it.
        lease.version = match self.cache.version(id, owner) {
            Some(version) => version,
            None => self.local_version(owner, id).await?,
        };
        Ok(lease)
    }

    /// `owner`'s session `id`'s version (a read, so it works on a full disk too).
    async fn local_version(&self, owner: &str, id: &str) -> Result<Version, SessionError> {
        let row = sqlx::query(
            "SELECT next_seq, message_count FROM sessions WHERE id = $1 AND owner = $2",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.writer.failed("read", e.into()))?;
        match row {
            Some(row) => version_of(&row),
            None => {
                self.cache.remove(id);
                Err(SessionError::NotFound)
            }
        }
    }

    /// One atomic UPDATE: the lease is taken only if free or expired. It returns the
    /// session's version, so a cached history is validated without another round trip.
    async fn try_take(&self, owner: &str, id: &str, token: &str) -> Result<Attempt, SessionError> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE sessions SET lease_token = $1, lease_until_ms = {DB_NOW_MS} + $2 \
                 WHERE id = $3 AND owner = $4 AND (lease_token IS NULL OR lease_until_ms < {DB_NOW_MS}) \
                 AND {UNFLUSHED} RETURNING next_seq, message_count"
            )
        });
        let take = sqlx::query(SQL.as_str())
            .bind(token)
            .bind(LEASE_TTL.as_millis() as i64)
            .bind(id)
            .bind(owner);
        let mut conn = self.writer.acquire("lease").await?;
        // fetch_all, not fetch_optional: SQLite commits an autocommit UPDATE … RETURNING
        // only when the statement runs to its end, and a commit that fails there (a full
        // disk) must refuse the lease, not hand out one that was never stored.
        let taken = take
            .fetch_all(&mut *conn)
            .await
            .map_err(SessionError::from)
            .and_then(|rows| rows.first().map(version_of).transpose());
        if let Some(version) = self.writer.finish("lease", conn, taken)? {
            return Ok(Attempt::Taken(version));
        }
        self.peek_lease(owner, id).await.map(|seen| match seen {
            // Freed between the UPDATE and the look: try again after the pause.
            Attempt::Taken(_) => Attempt::Held,
            other => other,
        })
    }

    /// A read-only look, so waiters do not queue on the writer: `Taken` means free now.
    async fn peek_lease(&self, owner: &str, id: &str) -> Result<Attempt, SessionError> {
        let sql = format!(
            "SELECT lease_token, lease_until_ms < {DB_NOW_MS} AS expired FROM sessions \
             WHERE id = $1 AND owner = $2"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.writer.failed("read", e.into()))?;
        let Some(row) = row else {
            return Ok(Attempt::Missing);
        };
        let holder: Option<String> = row.try_get("lease_token")?;
        let expired: bool = row.try_get("expired")?;
        Ok(if holder.is_none() || expired {
            Attempt::Taken((0, 0))
        } else {
            Attempt::Held
        })
    }

    fn held(
        self: &Arc<Self>,
        owner: &str,
        id: &str,
        token: String,
        version: Version,
    ) -> SessionLease {
        let store = self.clone();
        let (renew_id, renew_token) = (id.to_string(), token.clone());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if let Err(err) = store.renew(&renew_id, &renew_token).await {
                    tracing::warn!(error = %err, "could not renew a session lease");
                }
            }
        });
        SessionLease {
            store: self.clone(),
            id: id.to_string(),
            owner: owner.to_string(),
            token,
            version,
            released: false,
            renewer: Some(renewer),
            local: None,
        }
    }

    async fn renew(&self, id: &str, token: &str) -> Result<(), SessionError> {
        let sql = format!(
            "UPDATE sessions SET lease_until_ms = {DB_NOW_MS} + $1 \
             WHERE id = $2 AND lease_token = $3 AND {UNFLUSHED}"
        );
        let renew = sqlx::query(&sql)
            .bind(LEASE_TTL.as_millis() as i64)
            .bind(id)
            .bind(token);
        self.writer.execute("lease", renew).await.map(drop)
    }

    async fn release(&self, id: &str, token: &str) -> Result<(), SessionError> {
        let sql = format!(
            "UPDATE sessions SET lease_token = NULL, lease_until_ms = 0 \
             WHERE id = $1 AND lease_token = $2 AND {UNFLUSHED}"
        );
        let release = sqlx::query(&sql).bind(id).bind(token);
        self.writer.execute("lease", release).await.map(drop)
    }
}

impl Drop for SessionLease {
    fn drop(&mut self) {
        if let Some(guard) = self.local.take() {
            // In memory: released here and now, whatever state the file is in.
            drop(guard);
            if let Some(leases) = &self.store.local_leases {
                leases.forget_if_idle(&self.id);
            }
            return;
        }
        if let Some(renewer) = &self.renewer {
            renewer.abort();
        }
        if self.released {
            return;
        }
        let (store, id, token) = (
            self.store.clone(),
            std::mem::take(&mut self.id),
            std::mem::take(&mut self.token),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // If this fails the lease still runs out after LEASE_TTL.
                let _ = store.release(&id, &token).await;
            });
        }
    }
}
