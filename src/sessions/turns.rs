//! Where a turn is committed: reading a session's history, and storing a finished turn under its lease.

use sqlx::{Any, Connection, Row, Transaction};

use super::{now, History, ResponseRecord, SessionError, SessionLease, SessionStore};

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

    /// Stores a finished chat turn of a session (see [`SessionStore::commit`]).
    pub async fn commit_turn(
        &self,
        owner: &str,
        lease: SessionLease,
        messages: &[String],
    ) -> Result<(), SessionError> {
        self.commit(owner, Some(lease), messages, None).await
    }

    /// THE commit point of every turn, chat or Responses: appends the turn's messages to
    /// the leased session (if any) and stores the response record (if any) in one
    /// transaction, checks the limits inside it, and releases the lease in the same
    /// UPDATE. Either all of it is durable when this returns Ok, or none of it is.
    pub async fn commit(
        &self,
        owner: &str,
        lease: Option<SessionLease>,
        messages: &[String],
        response: Option<&ResponseRecord>,
    ) -> Result<(), SessionError> {
        if lease.is_none() && response.is_none() {
            return Ok(());
        }
        let mut conn = self.writer.acquire("append").await?;
        let result = async {
            let mut tx = conn.begin().await?;
            if let Some(lease) = &lease {
                self.append(&mut tx, owner, lease, messages).await?;
            }
            if let Some(record) = response {
                sqlx::query(
                    "INSERT INTO responses (id, owner, created_at, context, input_items, response) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&record.id)
                .bind(owner)
                .bind(record.created_at)
                .bind(&record.context)
                .bind(&record.input_items)
                .bind(&record.response)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        let committed = self.writer.finish("append", conn, result);
        if let Some(mut lease) = lease {
            // Released by the commit itself; on failure, dropping the lease releases it.
            lease.released = committed.is_ok();
        }
        committed
    }

    async fn append(
        &self,
        tx: &mut Transaction<'_, Any>,
        owner: &str,
        lease: &SessionLease,
        messages: &[String],
    ) -> Result<(), SessionError> {
        let id = lease.id.as_str();
        let count = messages.len() as i64;
        let bytes: i64 = messages.iter().map(|m| m.len() as i64).sum();
        let (created_at, _, _) = now();
        let limits = self.limits();
        let updated = sqlx::query(
            "UPDATE sessions SET message_count = message_count + $1, byte_count = byte_count + $2, \
             next_seq = next_seq + $1, updated_at = $3, lease_token = NULL, lease_until_ms = 0 \
             WHERE id = $4 AND owner = $5 AND lease_token = $6 \
             AND message_count + $1 <= $7 AND byte_count + $2 <= $8 \
             RETURNING next_seq",
        )
        .bind(count)
        .bind(bytes)
        .bind(created_at)
        .bind(id)
        .bind(owner)
        .bind(lease.token.as_str())
        .bind(limits.max_messages as i64)
        .bind(limits.max_bytes as i64)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = updated else {
            let seen = sqlx::query("SELECT lease_token FROM sessions WHERE id = $1 AND owner = $2")
                .bind(id)
                .bind(owner)
                .fetch_optional(&mut **tx)
                .await?;
            return Err(match seen {
                None => SessionError::NotFound,
                Some(row) => match row.try_get::<Option<String>, _>("lease_token")? {
                    Some(token) if token == lease.token => self.limit_error(),
                    _ => SessionError::LeaseLost,
                },
            });
        };
        let total: i64 = row.try_get("next_seq")?;
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
            insert.execute(&mut **tx).await?;
        }
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
