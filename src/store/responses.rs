//! Stored Responses API responses: read (per key), the owner's quota, delete, and purge past `[responses] retention_days`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, Row};
use tokio_util::sync::CancellationToken;

use super::response_links::{collect_orphans, remove};
use super::{now, SessionError, SessionStore};

const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Responses removed per purge transaction, so a purge never holds the writer for long.
const PURGE_BATCH: i64 = 500;

/// A stored response as `GET /v1/responses/{id}` and its input items read it.
pub struct StoredResponse {
    pub response: String,
    pub input_items: String,
}

impl SessionStore {
    /// `owner`'s stored response `id`; another key's, a deleted and an expired response
    /// are `NotFound` as well.
    pub async fn response(&self, owner: &str, id: &str) -> Result<StoredResponse, SessionError> {
        let row = sqlx::query(
            "SELECT response, input_items FROM responses \
             WHERE id = $1 AND owner = $2 AND hidden = 0",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.writer.failed("read", e.into()))?
        .ok_or(SessionError::NotFound)?;
        Ok(StoredResponse {
            response: row.try_get("response")?,
            input_items: row.try_get("input_items")?,
        })
    }

    /// The bytes `owner`'s stored responses hold together (one row, kept with every write).
    pub async fn response_bytes(&self, owner: &str) -> Result<u64, SessionError> {
        let row = sqlx::query("SELECT bytes FROM response_usage WHERE owner = $1")
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.writer.failed("read", e.into()))?;
        let bytes = match row {
            Some(row) => row.try_get::<i64, _>("bytes")?,
            None => 0,
        };
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// THE quota rule, checked before a turn that stores a response goes upstream (the
    /// commit checks it again, atomically, with the whole response): `owner`'s stored
    /// responses plus `incoming` bytes (the turn's input) must fit `limit` (0 = none).
    pub async fn admits_response(
        &self,
        owner: &str,
        incoming: u64,
        limit: u64,
    ) -> Result<(), SessionError> {
        if limit == 0 {
            return Ok(());
        }
        let used = self.response_bytes(owner).await?;
        if used.saturating_add(incoming) > limit {
            return Err(SessionError::ResponseQuota(limit));
        }
        Ok(())
    }

    /// Deletes `owner`'s response `id` and gives its bytes back to the owner's quota.
    /// Responses that continue from it keep their context: it stays, hidden, until none
    /// does (see `response_links`).
    pub async fn delete_response(&self, owner: &str, id: &str) -> Result<(), SessionError> {
        let mut conn = self.writer.acquire("delete").await?;
        let result = async {
            let mut tx = conn.begin().await?;
            if !remove(&mut tx, owner, id).await? {
                return Err(SessionError::NotFound);
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        self.cache.remove(id);
        self.writer.finish("delete", conn, result)
    }

    /// Removes responses (and native responses' owner records) created more than `age`
    /// ago, as a delete removes them; returns how many.
    pub async fn purge_responses(&self, age: Duration) -> Result<u64, SessionError> {
        let cutoff = now().0 - age.as_secs() as i64;
        let mut purged = 0;
        loop {
            let removed = self.purge_batch(cutoff).await?;
            purged += removed;
            if removed < PURGE_BATCH as u64 {
                break;
            }
        }
        // Hidden rows left without a child by a removal that stopped early.
        while self.collect_batch().await? == PURGE_BATCH as u64 {}
        let native = sqlx::query("DELETE FROM native_responses WHERE created_at < $1").bind(cutoff);
        purged += self.writer.execute("purge", native).await?;
        Ok(purged)
    }

    /// Removes up to one batch of responses created before `cutoff`, in one transaction.
    async fn purge_batch(&self, cutoff: i64) -> Result<u64, SessionError> {
        let mut conn = self.writer.acquire("purge").await?;
        let mut removed_ids = Vec::new();
        let result = async {
            let mut tx = conn.begin().await?;
            let rows = sqlx::query(
                "SELECT id, owner FROM responses WHERE created_at < $1 AND hidden = 0 \
                 ORDER BY created_at, id LIMIT $2",
            )
            .bind(cutoff)
            .bind(PURGE_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let (id, owner): (String, String) = (row.try_get("id")?, row.try_get("owner")?);
                if remove(&mut tx, &owner, &id).await? {
                    removed_ids.push(id);
                }
            }
            tx.commit().await?;
            Ok(rows.len() as u64)
        }
        .await;
        for id in &removed_ids {
            self.cache.remove(id);
        }
        self.writer.finish("purge", conn, result)
    }

    /// Deletes up to one batch of hidden responses nothing continues from any more.
    async fn collect_batch(&self) -> Result<u64, SessionError> {
        let mut conn = self.writer.acquire("purge").await?;
        let result = async {
            let mut tx = conn.begin().await?;
            let collected = collect_orphans(&mut tx, PURGE_BATCH).await?;
            tx.commit().await?;
            Ok(collected)
        }
        .await;
        self.writer.finish("purge", conn, result)
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
