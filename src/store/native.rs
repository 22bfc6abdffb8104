//! Who owns each response id at a native Responses upstream: recorded, looked up per key, forgotten.

use sqlx::Row;

use super::{now, SessionError, SessionStore};

impl SessionStore {
    /// Records that `owner` created response `id` at `upstream`. An id already recorded
    /// keeps its first owner: a repeated id never hands a response to another key.
    pub async fn record_native(
        &self,
        owner: &str,
        id: &str,
        upstream: &str,
    ) -> Result<(), SessionError> {
        let record = sqlx::query(
            "INSERT INTO native_responses (id, owner, upstream, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(owner)
        .bind(upstream)
        .bind(now().0);
        if self.writer.execute("record", record).await? == 0 {
            tracing::warn!(
                upstream,
                "a native upstream repeated a response id; the first owner keeps it"
            );
        }
        Ok(())
    }

    /// The upstream holding `owner`'s native response `id`; another key's id is
    /// `NotFound` as well.
    pub async fn native_upstream(&self, owner: &str, id: &str) -> Result<String, SessionError> {
        let row = sqlx::query("SELECT upstream FROM native_responses WHERE id = $1 AND owner = $2")
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.writer.failed("read", e.into()))?
            .ok_or(SessionError::NotFound)?;
        Ok(row.try_get("upstream")?)
    }

    /// Forgets `owner`'s native response `id` (after the upstream deleted it).
    pub async fn forget_native(&self, owner: &str, id: &str) -> Result<(), SessionError> {
        let forget = sqlx::query("DELETE FROM native_responses WHERE id = $1 AND owner = $2")
            .bind(id)
            .bind(owner);
        self.writer.execute("delete", forget).await.map(drop)
    }
}
