//! Where every write to the store goes: a failed write discards its connection, is counted, and marks the store unready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::any::AnyArguments;
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Any, AnyPool};

use super::headroom::Headroom;
use super::SessionError;

/// Counter of failed storage operations, labelled by `op`.
pub const STORAGE_ERRORS: &str = "gatewayd_storage_errors_total";
/// How often an unready store may be probed with a test write.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// After a failed write the store is reported unready for at least this long before a
/// probe may say otherwise: a small probe can fit where the failed turn did not, and a
/// load balancer should not send the turn straight back.
const UNREADY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Size of the probe row: larger than a typical turn, so a store too full for one turn
/// (several KiB over a few rows and index entries) is not reported ready because a
/// smaller write still squeezes into its last free pages.
const PROBE_BYTES: usize = 16 * 1024;

/// The write side of the store. For SQLite a single connection (SQLite has one writer at
/// a time, and queueing here is cheaper than SQLITE_BUSY retries); for PostgreSQL the
/// shared pool.
pub struct Writer {
    pool: AnyPool,
    writable: AtomicBool,
    last_probe: Mutex<Option<Instant>>,
    last_failure: Mutex<Option<Instant>>,
    /// SQLite only: keeps the write-ahead log small and room to checkpoint it.
    headroom: Option<Headroom>,
}

impl Writer {
    pub fn new(pool: AnyPool, headroom: Option<Headroom>) -> Self {
        // At zero from the start, so dashboards and alerts see the series before the
        // first failure.
        crate::telemetry::handle();
        for op in [
            "read", "create", "append", "delete", "lease", "purge", "probe", "usage",
        ] {
            metrics::counter!(STORAGE_ERRORS, "op" => op).absolute(0);
        }
        Writer {
            pool,
            writable: AtomicBool::new(true),
            last_probe: Mutex::new(None),
            last_failure: Mutex::new(None),
            headroom,
        }
    }

    /// A connection for one write operation. Hand it back through [`Writer::finish`].
    /// On SQLite, a write-ahead log that outgrew its checkpoints is checkpointed first,
    /// so that it stays a small part of the volume (see `headroom.rs`).
    pub async fn acquire(&self, op: &'static str) -> Result<PoolConnection<Any>, SessionError> {
        match self.pool.acquire().await {
            Ok(mut conn) => {
                if let Some(headroom) = &self.headroom {
                    headroom.before_write(&mut conn).await;
                }
                Ok(conn)
            }
            Err(err) => Err(self.failed(op, SessionError::Storage(err))),
        }
    }

    /// Settles a write. On a storage failure the connection is closed instead of going
    /// back to the pool: after SQLITE_FULL or a lost PostgreSQL backend it may sit inside
    /// a transaction the server already rolled back, and every later "commit" on it would
    /// silently do nothing. The next write opens a fresh connection.
    pub fn finish<T>(
        &self,
        op: &'static str,
        mut conn: PoolConnection<Any>,
        result: Result<T, SessionError>,
    ) -> Result<T, SessionError> {
        match result {
            Ok(value) => {
                // Only a write that adds data shows there is room again; a lease taken or
                // released, or a delete, succeeds on a full disk too.
                if !matches!(op, "lease" | "delete" | "purge") {
                    self.writable.store(true, Ordering::Relaxed);
                }
                Ok(value)
            }
            Err(err) if err.is_storage_failure() => {
                conn.close_on_drop();
                Err(self.failed(op, err))
            }
            Err(refusal) => Err(refusal),
        }
    }

    /// One statement on a writer connection, settled as [`Writer::finish`] settles it.
    /// Returns how many rows it touched.
    pub async fn execute<'q>(
        &self,
        op: &'static str,
        statement: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<u64, SessionError> {
        let mut conn = self.acquire(op).await?;
        let result = statement
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
            .map_err(SessionError::from);
        self.finish(op, conn, result)
    }

    /// Counts and logs a failed read or write (the operation and the error, never content).
    pub fn failed(&self, op: &'static str, err: SessionError) -> SessionError {
        if err.is_storage_failure() {
            if op != "read" {
                self.writable.store(false, Ordering::Relaxed);
            }
            if op != "read" && op != "probe" {
                if let Ok(mut last) = self.last_failure.lock() {
                    *last = Some(Instant::now());
                }
            }
            metrics::counter!(STORAGE_ERRORS, "op" => op).increment(1);
            tracing::error!(op, error = %err, "session storage failed");
        }
        err
    }

    /// True while the store takes writes. After a failed write it is false until a write
    /// succeeds, or, once `UNREADY_AFTER_FAILURE` has passed, a probe write (at most once
    /// a second) succeeds: a row big enough to need new pages, committed, then removed.
    pub async fn ready(&self) -> bool {
        if self.writable.load(Ordering::Relaxed) {
            return true;
        }
        let recent_failure = self.last_failure.lock().map_or(true, |last| {
            last.is_some_and(|at| at.elapsed() < UNREADY_AFTER_FAILURE)
        });
        if recent_failure {
            return false;
        }
        {
            let Ok(mut last) = self.last_probe.lock() else {
                return false;
            };
            if last.is_some_and(|at| at.elapsed() < PROBE_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let Ok(mut conn) = self.acquire("probe").await else {
            return false;
        };
        let result = probe(&mut conn).await;
        self.finish("probe", conn, result).is_ok()
    }
}

async fn probe(conn: &mut PoolConnection<Any>) -> Result<(), SessionError> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    sqlx::query("DELETE FROM store_probe WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO store_probe (id, payload) VALUES (1, $1)")
        .bind("x".repeat(PROBE_BYTES))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    sqlx::query("DELETE FROM store_probe WHERE id = 1")
        .execute(&mut **conn)
        .await?;
    Ok(())
}
