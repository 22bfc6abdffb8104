//! SQLite connection pools for the session store: the PRAGMAs every connection runs when it opens.

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use super::headroom;
use super::SessionError;

/// A pool of `connections` connections to the SQLite database at `url`; `max_pages`
/// caps the file (0: no cap).
pub(super) async fn sqlite_pool(
    url: &str,
    connections: u32,
    max_pages: u64,
) -> Result<AnyPool, SessionError> {
    Ok(AnyPoolOptions::new()
        .max_connections(connections)
        // A SQLite connection is a file handle in this process: nothing to ping.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if max_pages > 0 {
                    // `max_database_bytes`: the file stops growing here, and writes that
                    // need more room fail exactly as on a full disk.
                    sqlx::query(&format!("PRAGMA max_page_count = {max_pages}"))
                        .execute(&mut *conn)
                        .await?;
                }
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
                // A small write-ahead log, checkpointed often (see `headroom.rs`).
                for pragma in headroom::pragmas() {
                    sqlx::query(&pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await?)
}
