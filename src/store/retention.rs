//! Retention: sessions idle past `retention_days` are deleted in the background, in small batches.

use std::sync::Arc;
use std::time::Duration;

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
            // One statement (messages go by ON DELETE CASCADE), and the conditions stand
            // outside the batch query too: on PostgreSQL a session leased after the batch
            // was chosen is re-checked on its new row and kept.
            let idle = "updated_at < $1 AND (lease_token IS NULL OR lease_until_ms < $2)";
            let sql = format!(
                "DELETE FROM sessions WHERE {idle} AND id IN \
                 (SELECT id FROM sessions WHERE {idle} ORDER BY id LIMIT $3)"
            );
            let batch = sqlx::query(&sql).bind(cutoff).bind(now_ms).bind(BATCH);
            let deleted = self.writer.execute("purge", batch).await?;
            total += deleted;
            if deleted > 0 {
                self.cache.clear();
            }
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
