//! A session's messages one by one, as conversation items: list, delete one, and update metadata.

use std::collections::BTreeMap;

use sqlx::{Connection, Row};

use super::{now, SessionError, SessionStore};

/// One stored message and its position in the session.
pub struct StoredItem {
    pub seq: i64,
    pub json: String,
    pub created_at: i64,
}

impl SessionStore {
    /// The session's messages with their seqs, in order. Unknown and foreign ids are `NotFound`.
    pub async fn items(&self, owner: &str, id: &str) -> Result<Vec<StoredItem>, SessionError> {
        let rows = sqlx::query(
            "SELECT m.seq, m.message, m.created_at FROM sessions s \
             LEFT JOIN messages m ON m.session_id = s.id \
             WHERE s.id = $1 AND s.owner = $2 ORDER BY m.seq",
        )
        .bind(id)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.writer.failed("read", e.into()))?;
        if rows.is_empty() {
            return Err(SessionError::NotFound);
        }
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(seq) = row.try_get::<Option<i64>, _>("seq")? else {
                continue;
            };
            items.push(StoredItem {
                seq,
                json: row
                    .try_get::<Option<String>, _>("message")?
                    .unwrap_or_default(),
                created_at: row.try_get::<Option<i64>, _>("created_at")?.unwrap_or(0),
            });
        }
        Ok(items)
    }

    /// Deletes the message at `seq` and adjusts the session's counts in one transaction.
    /// `NotFound` for an unknown or foreign session; `Ok(false)` for an unknown seq.
    pub async fn delete_item(&self, owner: &str, id: &str, seq: i64) -> Result<bool, SessionError> {
        let mut conn = self.writer.acquire("delete").await?;
        let result = async {
            let mut tx = conn.begin().await?;
            sqlx::query("SELECT id FROM sessions WHERE id = $1 AND owner = $2")
                .bind(id)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(SessionError::NotFound)?;
            let row =
                sqlx::query("SELECT message FROM messages WHERE session_id = $1 AND seq = $2")
                    .bind(id)
                    .bind(seq)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(row) = row else {
                return Ok(false);
            };
            let bytes = row.try_get::<String, _>("message")?.len() as i64;
            sqlx::query("DELETE FROM messages WHERE session_id = $1 AND seq = $2")
                .bind(id)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE sessions SET message_count = message_count - 1, \
                 byte_count = byte_count - $1, updated_at = $2 WHERE id = $3",
            )
            .bind(bytes)
            .bind(now().0)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        }
        .await;
        self.cache.remove(id);
        self.writer.finish("delete", conn, result)
    }

    /// Replaces the session's metadata.
    pub async fn update_metadata(
        &self,
        owner: &str,
        id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), SessionError> {
        let json =
            serde_json::to_string(metadata).map_err(|e| SessionError::Setup(e.to_string()))?;
        let update = sqlx::query("UPDATE sessions SET metadata = $1 WHERE id = $2 AND owner = $3")
            .bind(json)
            .bind(id)
            .bind(owner);
        match self.writer.execute("update", update).await? {
            0 => Err(SessionError::NotFound),
            _ => Ok(()),
        }
    }
}
