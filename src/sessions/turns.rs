//! Where a turn is committed: reading a session's history, and storing a finished turn under its lease.

use sqlx::pool::PoolConnection;
use sqlx::{Any, Connection, Row};

use super::{now, History, SessionError, SessionLease, SessionStore};

impl SessionStore {
    /// What a continuation sends before the request's own messages. Read under the
    /// session's lease, so no other turn can slip in before this one is stored.
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
        .await
        .map_err(|e| self.writer.failed("read", e.into()))?;
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

    /// THE commit point of every turn: appends the request's messages and the reply in
    /// one transaction, checks the limits inside it, and releases the lease in the same
    /// UPDATE. Either all of it is durable when this returns Ok, or none of it is.
    pub async fn commit_turn(
        &self,
        owner: &str,
        mut lease: SessionLease,
        messages: &[String],
    ) -> Result<(), SessionError> {
        let mut conn = self.writer.acquire("append").await?;
        let result = self.append(&mut conn, owner, &lease, messages).await;
        let committed = self.writer.finish("append", conn, result);
        // Released by the commit itself; on failure, dropping the lease releases it.
        lease.released = committed.is_ok();
        committed
    }

    async fn append(
        &self,
        conn: &mut PoolConnection<Any>,
        owner: &str,
        lease: &SessionLease,
        messages: &[String],
    ) -> Result<(), SessionError> {
        let id = lease.id.as_str();
        let count = messages.len() as i64;
        let bytes: i64 = messages.iter().map(|m| m.len() as i64).sum();
        let (created_at, _, _) = now();
        let limits = self.limits();
        let mut tx = conn.begin().await?;
        let updated = sqlx::query(
            "UPDATE sessions SET message_count = message_count + $1, byte_count = byte_count + $2, \
             updated_at = $3, lease_token = NULL, lease_until_ms = 0 \
             WHERE id = $4 AND owner = $5 AND lease_token = $6 \
             AND message_count + $1 <= $7 AND byte_count + $2 <= $8 \
             RETURNING message_count",
        )
        .bind(count)
        .bind(bytes)
        .bind(created_at)
        .bind(id)
        .bind(owner)
        .bind(lease.token.as_str())
        .bind(limits.max_messages as i64)
        .bind(limits.max_bytes as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = updated else {
            let seen = sqlx::query("SELECT lease_token FROM sessions WHERE id = $1 AND owner = $2")
                .bind(id)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match seen {
                None => SessionError::NotFound,
                Some(row) => match row.try_get::<Option<String>, _>("lease_token")? {
                    Some(token) if token == lease.token => self.limit_error(),
                    _ => SessionError::LeaseLost,
                },
            });
        };
        let total: i64 = row.try_get("message_count")?;
        if !messages.is_empty() {
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
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub fn limit_error(&self) -> SessionError {
        let limits = self.limits();
        SessionError::LimitExceeded(format!(
            "This session would exceed its limits ({} messages, {} bytes). Start a new session.",
            limits.max_messages, limits.max_bytes
        ))
    }
}
