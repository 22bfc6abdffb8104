//! A stored response's context, rebuilt by walking its chain: parent links checked against the owner at every step, bounded in depth and bytes, served from the history cache when it can be.
//!
//! A response row keeps only the messages it added; its context is its ancestors' added
//! messages, oldest first, down to the chain's root. A root keeps its whole context (each
//! first response, and every row stored before chains existed), or, when it was made in a
//! conversation, the session's messages before its turn, read from the session.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::value::RawValue;
use sqlx::Row;

use super::{History, ResponseRecord, SessionError, SessionStore, Version};

/// The version of every cached response context: a stored response's context never
/// changes, so an entry is valid for as long as the response is readable.
const CONTEXT_VERSION: Version = (-1, -1);

/// Bytes the walk may read beyond twice `max_bytes` (JSON punctuation between messages).
const WALK_MARGIN_BYTES: i64 = 1024 * 1024;

/// The chain from a response up to its root, one row per step, nearest first. Every step
/// must have the same owner, and the walk stops after `$3` steps or once the rows read
/// pass `$4` bytes, so a link that loops or a giant chain cannot run on.
const CHAIN: &str = "WITH RECURSIVE chain \
     (id, parent_id, context, session_id, session_seq, hidden, depth, total) AS ( \
       SELECT id, parent_id, context, session_id, session_seq, hidden, CAST(0 AS BIGINT), \
              CAST(octet_length(context) AS BIGINT) \
       FROM responses WHERE id = $1 AND owner = $2 \
     UNION ALL \
       SELECT r.id, r.parent_id, r.context, r.session_id, r.session_seq, r.hidden, \
              c.depth + 1, c.total + CAST(octet_length(r.context) AS BIGINT) \
       FROM chain c JOIN responses r ON r.id = c.parent_id \
       WHERE r.owner = $2 AND c.depth < $3 AND c.total <= $4 \
     ) \
     SELECT id, parent_id, context, session_id, session_seq, hidden, depth, total \
     FROM chain ORDER BY depth";

impl SessionStore {
    /// The chat messages continuing `owner`'s response `id` sends first: its whole
    /// context, its own input and output last. Unknown, deleted and another key's
    /// responses are `NotFound`; a chain longer or larger than a session may be is
    /// `LimitExceeded`.
    pub async fn response_context(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Arc<History>, SessionError> {
        self.walk_chain(owner, id)
            .await
            .map_err(|e| self.writer.failed("read", e))
    }

    async fn walk_chain(&self, owner: &str, id: &str) -> Result<Arc<History>, SessionError> {
        if let Some(history) = self.cache.get(id, owner, CONTEXT_VERSION) {
            // The entry holds the context; the row says whether it may still be used.
            let readable =
                sqlx::query("SELECT id FROM responses WHERE id = $1 AND owner = $2 AND hidden = 0")
                    .bind(id)
                    .bind(owner)
                    .fetch_optional(&self.pool)
                    .await?;
            return readable.map(|_| history).ok_or(SessionError::NotFound);
        }
        let limits = self.limits();
        let max_depth = i64::try_from(limits.max_messages)
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        let max_bytes = i64::try_from(limits.max_bytes)
            .unwrap_or(i64::MAX)
            .saturating_mul(2)
            .saturating_add(WALK_MARGIN_BYTES);
        let rows = sqlx::query(CHAIN)
            .bind(id)
            .bind(owner)
            .bind(max_depth)
            .bind(max_bytes)
            .fetch_all(&self.pool)
            .await?;
        let first = rows.first().ok_or(SessionError::NotFound)?;
        if first.try_get::<i64, _>("hidden")? != 0 {
            return Err(SessionError::NotFound);
        }
        // Each step's added messages, nearest first, up to the root.
        let mut added: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        let mut expected = id.to_string();
        let mut root = None;
        for row in &rows {
            let step: String = row.try_get("id")?;
            // A link that loops back is as broken as one that leads nowhere.
            if step != expected || !seen.insert(step) {
                return Err(SessionError::NotFound);
            }
            added.push(row.try_get("context")?);
            match row.try_get::<Option<String>, _>("parent_id")? {
                Some(parent) => expected = parent,
                None => {
                    root = Some(row);
                    break;
                }
            }
        }
        let Some(root) = root else {
            let last = rows.last().ok_or(SessionError::NotFound)?;
            let cut = last.try_get::<i64, _>("depth")? >= max_depth
                || last.try_get::<i64, _>("total")? > max_bytes;
            return Err(match cut {
                true => self.limit_error(),
                // A link to a row that is gone or another key's: nothing to continue.
                false => SessionError::NotFound,
            });
        };
        let mut history = History {
            system: None,
            messages: Vec::new(),
            bytes: 0,
        };
        let session: Option<String> = root.try_get("session_id")?;
        if let Some(session) = &session {
            let before: i64 = root.try_get("session_seq")?;
            self.session_prefix(owner, session, before, &mut history)
                .await?;
        }
        for text in added.iter().rev() {
            push_all(&mut history, text)?;
        }
        // A conversation's messages can be deleted later: only a chain of its own is
        // cached.
        let history = Arc::new(history);
        if session.is_none() {
            self.cache.put(id, owner, CONTEXT_VERSION, history.clone());
        }
        Ok(history)
    }

    /// The session's system prompt (as a message) and its messages before seq `before`:
    /// the context of a response made in that conversation.
    async fn session_prefix(
        &self,
        owner: &str,
        id: &str,
        before: i64,
        history: &mut History,
    ) -> Result<(), SessionError> {
        let session =
            sqlx::query("SELECT system_prompt FROM sessions WHERE id = $1 AND owner = $2")
                .bind(id)
                .bind(owner)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(SessionError::NotFound)?;
        if let Some(system) = session.try_get::<Option<String>, _>("system_prompt")? {
            let message = serde_json::json!({"role": "system", "content": system}).to_string();
            history.bytes += message.len();
            history.messages.push(message);
        }
        let rows = sqlx::query(
            "SELECT message FROM messages WHERE session_id = $1 AND seq < $2 ORDER BY seq",
        )
        .bind(id)
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let message: String = row.try_get("message")?;
            history.bytes += message.len();
            history.messages.push(message);
        }
        Ok(())
    }

    /// A response was stored outside any conversation: its context is its parent's (when
    /// cached) plus what it added, cached for the next turn of the chain. The parent's
    /// entry moves to it, so a chain keeps one entry however long it grows; continuing
    /// an older response reads its chain from the database again.
    pub(super) fn remember_response(&self, owner: &str, record: &ResponseRecord) {
        let mut history = match &record.parent {
            None => History {
                system: None,
                messages: Vec::new(),
                bytes: 0,
            },
            Some(parent) => match self.cache.take(parent, owner, CONTEXT_VERSION) {
                Some(history) => history,
                None => return,
            },
        };
        if push_all(&mut history, &record.context).is_ok() {
            self.cache
                .put(&record.id, owner, CONTEXT_VERSION, Arc::new(history));
        }
    }
}

/// Appends the messages of a stored JSON array to `history`.
fn push_all(history: &mut History, array: &str) -> Result<(), SessionError> {
    let messages: Vec<&RawValue> = serde_json::from_str(array).map_err(|_| {
        SessionError::Setup("a stored response's messages are not a JSON array".into())
    })?;
    for message in messages {
        history.bytes += message.get().len();
        history.messages.push(message.get().to_string());
    }
    Ok(())
}
