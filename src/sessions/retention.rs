//! Retention: sessions idle past `retention_days` are deleted in the background, in small batches.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use super::{now, SessionError, SessionStore};

const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Sessions deleted per transaction, so a purge never holds the writer for long.
const BATCH: i64 = 500;

impl SessionStore {
    /// Deletes sessions (and their messages) not continued for `idle`, skipping any
    /// whose lease is live. Returns how many were deleted.
    pub async fn purge_idle(&self, idle: Duration) -> Result<u64, SessionError> {
        let (now_secs, _, now_ms) = now();
        let cutoff = now_secs - idle.as_secs() as i64;
        let mut total = 0;
        loop {
            let mut conn = self.writer.acquire("purge").await?;
            let result = async {
                let mut tx = conn.begin().await?;
                // The same ordered batch twice: messages first, then their sessions.
                let selected = "SELECT id FROM sessions WHERE updated_at < $1 \
                     AND (lease_token IS NULL OR lease_until_ms < $2) ORDER BY id LIMIT $3";
                sqlx::query(&format!(
                    "DELETE FROM messages WHERE session_id IN ({selected})"
                ))
                .bind(cutoff)
                .bind(now_ms)
                .bind(BATCH)
                .execute(&mut *tx)
                .await?;
                let deleted =
                    sqlx::query(&format!("DELETE FROM sessions WHERE id IN ({selected})"))
                        .bind(cutoff)
                        .bind(now_ms)
                        .bind(BATCH)
                        .execute(&mut *tx)
                        .await?;
                tx.commit().await?;
                Ok(deleted.rows_affected())
            }
            .await;
            let deleted = self.writer.finish("purge", conn, result)?;
            total += deleted;
            if deleted < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// With `retention_days` set, purges idle sessions now and then every hour until
    /// `shutdown`.
    pub fn spawn_retention(self: &Arc<Self>, shutdown: CancellationToken) {
        let Some(idle) = self.limits().retention else {
            return;
        };
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                match store.purge_idle(idle).await {
                    Ok(0) => {}
                    Ok(count) => tracing::info!(count, "purged idle sessions"),
                    Err(err) => tracing::warn!(error = %err, "purging idle sessions failed"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(PURGE_EVERY) => {}
                }
            }
        });
    }
}
