//! Where a turn is committed: reading a session's history, and storing a finished turn under its lease.

use std::sync::Arc;

use sqlx::Row;

use super::{History, ResponseRecord, SessionError, SessionLease, SessionStore};

impl SessionStore {
    /// What a continuation sends before the request's own messages. Read under the
    /// session's lease, so no other turn can slip in before this one is stored. Served
    /// from the history cache when its entry is at the version the lease saw.
    pub async fn history(&self, lease: &SessionLease) -> Result<Arc<History>, SessionError> {
        let (owner, id) = (lease.owner.as_str(), lease.id.as_str());
        if let Some(history) = self.cache.get(id, owner, lease.version) {
            return Ok(history);
        }
        // One round trip: the session row joined with its messages (if any), in order.
        let rows = sqlx::query(
            "SELECT s.system_prompt, s.byte_count, s.next_seq, s.message_count, m.message FROM sessions s \
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
        let version = super::group_sql::version_of(first)?;
        let system: Option<String> = first.try_get("system_prompt")?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(message) = row.try_get::<Option<String>, _>("message")? {
                messages.push(message);
            }
        }
        let history = Arc::new(History {
            system,
            messages,
            bytes: bytes.max(0) as usize,
        });
        // Cached at the version read with it (the lease's, unless an item was deleted
        // since): an entry always pairs a history with the version it belongs to.
        self.cache.put(id, owner, version, history.clone());
        Ok(history)
    }

    /// Stores a finished chat turn of a session (see [`SessionStore::commit`]).
    pub async fn commit_turn(
        self: &Arc<Self>,
        owner: &str,
        lease: SessionLease,
        messages: &[String],
    ) -> Result<(), SessionError> {
        self.commit(owner, Some(lease), messages, None).await
    }

    /// THE commit point of every turn, chat or Responses: appends the turn's messages to
    /// the leased session (if any) and stores the response record (if any) in one
    /// transaction, checks the limits inside it, and releases the lease in the same
    /// UPDATE. Either all of it is durable when this returns Ok, or none of it is. The
    /// transaction is a group commit shared with other sessions' turns (see `group`):
    /// Ok comes only after it committed; a storage failure fails all of its turns.
    ///
    /// The commit runs in a task of its own, which holds the lease until the batch holding
    /// the turn is done: a caller that goes away meanwhile (a client that left mid-stream)
    /// cannot free the session for another turn while this one is still being written.
    pub async fn commit(
        self: &Arc<Self>,
        owner: &str,
        lease: Option<SessionLease>,
        messages: &[String],
        response: Option<&ResponseRecord>,
    ) -> Result<(), SessionError> {
        if lease.is_none() && response.is_none() {
            return Ok(());
        }
        let (store, owner, messages) = (self.clone(), owner.to_string(), messages.to_vec());
        let response = response.cloned();
        let committing = tokio::spawn(async move {
            store
                .commit_held(&owner, lease, &messages, response.as_ref())
                .await
        });
        committing.await.unwrap_or_else(|_| {
            Err(SessionError::Setup(
                "the commit task ended without an answer".into(),
            ))
        })
    }

    async fn commit_held(
        &self,
        owner: &str,
        lease: Option<SessionLease>,
        messages: &[String],
        response: Option<&ResponseRecord>,
    ) -> Result<(), SessionError> {
        let session = lease.as_ref().map(|l| (l.id.clone(), l.token.clone()));
        let committed = self
            .committer
            .commit(owner, session, messages.to_vec(), response.cloned())
            .await;
        if let (Ok(_), None, Some(record)) = (&committed, &lease, response) {
            self.remember_response(owner, record);
        }
        if let Some(mut lease) = lease {
            match committed {
                Ok(total) => {
                    // Released by the commit itself.
                    lease.released = true;
                    let n = messages.len() as i64;
                    let before = (total.0 - n, total.1 - n);
                    self.cache.append(&lease.id, before, total, messages);
                }
                // On failure, dropping the lease releases it.
                Err(_) => self.cache.remove(&lease.id),
            }
        }
        committed.map(drop)
    }

    pub fn limit_error(&self) -> SessionError {
        super::limit_error(self.limits())
    }

    /// THE limit rule, checked before a turn is sent upstream (the commit checks the same
    /// counts again, atomically): `max_messages` counts the messages a session stores —
    /// its history, this turn's input, and the one reply when `reply` — and never the
    /// system prompt, which is stored apart; `max_bytes` counts the stored text, the
    /// system prompt included, plus this turn's input.
    pub fn admits(
        &self,
        history: &History,
        input: &[String],
        reply: bool,
    ) -> Result<(), SessionError> {
        let limits = self.limits();
        let messages = history.messages.len() + input.len() + usize::from(reply);
        let bytes = history.bytes + input.iter().map(String::len).sum::<usize>();
        if messages > limits.max_messages || bytes > limits.max_bytes {
            return Err(super::limit_error(limits));
        }
        Ok(())
    }
}
