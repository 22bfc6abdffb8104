//! Stored Responses API responses: read (per key), delete, and purge past `[responses] retention_days`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::{now, SessionError, SessionStore};

const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// A stored response and what it continued from.
pub struct StoredResponse {
    pub response: String,
    pub context: String,
    pub input_items: String,
}

impl SessionStore {
    /// `owner`'s stored response `id`; another key's response is `NotFound` as well.
    pub async fn response(&self, owner: &str, id: &str) -> Result<StoredResponse, SessionError> {
        let row = sqlx::query(
            "SELECT response, context, input_items FROM responses WHERE id = $1 AND owner = $2",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.writer.failed("read", e.into()))?
        .ok_or(SessionError::NotFound)?;
        Ok(StoredResponse {
            response: row.try_get("response")?,
            context: row.try_get("context")?,
            input_items: row.try_get("input_items")?,
        })
    }

    pub async fn delete_response(&self, owner: &str, id: &str) -> Result<(), SessionError> {
        let delete = sqlx::query("DELETE FROM responses WHERE id = $1 AND owner = $2")
            .bind(id)
            .bind(owner);
        match self.writer.execute("delete", delete).await? {
            0 => Err(SessionError::NotFound),
            _ => Ok(()),
        }
    }

    /// Deletes responses (and native responses' owner records) created more than `age`
    /// ago; returns how many.
    pub async fn purge_responses(&self, age: Duration) -> Result<u64, SessionError> {
        let cutoff = now().0 - age.as_secs() as i64;
        let mut purged = 0;
        for sql in [
            "DELETE FROM responses WHERE created_at < $1",
            "DELETE FROM native_responses WHERE created_at < $1",
        ] {
            purged += self
                .writer
                .execute("purge", sqlx::query(sql).bind(cutoff))
                .await?;
        }
        Ok(purged)
    }

    /// Purges stored responses older than `age` now and then every hour until `shutdown`.
    pub fn spawn_response_retention(self: &Arc<Self>, age: Duration, shutdown: CancellationToken) {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                match store.purge_responses(age).await {
                    Ok(0) => {}
                    Ok(count) => tracing::info!(count, "purged expired responses"),
                    Err(err) => tracing::warn!(error = %err, "purging expired responses failed"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(PURGE_EVERY) => {}
                }
            }
        });
    }
}
