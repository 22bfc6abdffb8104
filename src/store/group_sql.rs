//! What a batch commit writes and reads: the turn it carries, the SQL of its UPDATE and INSERT, a session row's version, and why a turn was refused.

use std::collections::HashMap;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Row};
use tokio::sync::oneshot;

use super::{ResponseRecord, SessionError, SessionLimits, Version};

/// Message rows per INSERT statement (4 bind parameters each).
pub(super) const INSERT_ROWS: usize = 1000;

/// One turn waiting to be committed.
pub(super) struct Job {
    pub(super) owner: String,
    /// The leased session (id, lease token) the messages go to, if any.
    pub(super) session: Option<(String, String)>,
    pub(super) messages: Vec<String>,
    pub(super) response: Option<ResponseRecord>,
    /// The session's version after the commit ((0, 0) without a session).
    pub(super) done: oneshot::Sender<Result<Version, SessionError>>,
}

/// A turn of a batch that goes to a session: its job, the session's id and lease token.
pub(super) type Leased<'a> = (&'a Job, &'a str, &'a str);

/// The turns of `jobs` that go to a session, in session id order: PostgreSQL's plan for
/// the UPDATE (a nested loop over the VALUES, as EXPLAIN shows) locks the rows in this
/// order, so two batches that meet on a row (possible only after a lost lease) lock in
/// the same order. Should they still deadlock, PostgreSQL aborts one transaction and its
/// turns get 503: nothing is lost.
pub(super) fn leased_in_id_order<'a>(jobs: impl Iterator<Item = &'a Job>) -> Vec<Leased<'a>> {
    let mut leased: Vec<Leased<'a>> = jobs
        .filter_map(|job| {
            let (id, token) = job.session.as_ref()?;
            Some((job, id.as_str(), token.as_str()))
        })
        .collect();
    leased.sort_by_key(|&(_, id, _)| id);
    leased
}

/// Binds the parameters [`update_statement`] numbers first: the time, the limits, then
/// five per turn (id, owner, lease token, messages, bytes).
pub(super) fn bind_turns<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    created_at: i64,
    limits: SessionLimits,
    leased: &[Leased<'q>],
) -> Query<'q, Any, AnyArguments<'q>> {
    let mut query = query
        .bind(created_at)
        .bind(limits.max_messages as i64)
        .bind(limits.max_bytes as i64);
    for &(job, id, token) in leased {
        let bytes: i64 = job.messages.iter().map(|m| m.len() as i64).sum();
        query = query
            .bind(id)
            .bind(job.owner.as_str())
            .bind(token)
            .bind(job.messages.len() as i64)
            .bind(bytes);
    }
    query
}

/// The sessions the UPDATE moved (its `RETURNING` rows), each with its new version.
pub(super) fn moved(rows: &[AnyRow]) -> Result<HashMap<String, Version>, SessionError> {
    rows.iter()
        .map(|row| Ok((row.try_get::<String, _>("id")?, version_of(row)?)))
        .collect()
}

/// Queues the rows of `job`'s messages for the INSERT, numbered up to the session's new
/// `total` version.
pub(super) fn queue_messages<'a>(
    job: &'a Job,
    id: &'a str,
    total: Version,
    rows: &mut Vec<(&'a str, i64, &'a str)>,
) {
    let first = total.0 - job.messages.len() as i64;
    for (offset, message) in job.messages.iter().enumerate() {
        rows.push((id, first + offset as i64, message.as_str()));
    }
}

/// The version columns of a session row (`next_seq`, `message_count`).
pub(super) fn version_of(row: &sqlx::any::AnyRow) -> Result<Version, SessionError> {
    Ok((row.try_get("next_seq")?, row.try_get("message_count")?))
}

/// Why a turn's conditions did not hold: its session is gone, its lease was lost, or the
/// turn would pass the session's limits.
pub(super) async fn refusal(
    conn: &mut AnyConnection,
    limits: SessionLimits,
    owner: &str,
    id: &str,
    token: &str,
) -> Result<SessionError, SessionError> {
    let seen = sqlx::query("SELECT lease_token FROM sessions WHERE id = $1 AND owner = $2")
        .bind(id)
        .bind(owner)
        .fetch_optional(conn)
        .await?;
    Ok(match seen {
        None => SessionError::NotFound,
        // An in-memory (SQLite) lease presents '' and leaves the row's token NULL.
        Some(row) => match row.try_get::<Option<String>, _>("lease_token")? {
            held if held.as_deref().unwrap_or_default() == token => super::limit_error(limits),
            _ => SessionError::LeaseLost,
        },
    })
}

/// The UPDATE that appends `turns` turns to their sessions, each only if its lease and
/// limits hold: `$1` the time, `$2`/`$3` the limits, then five parameters per turn (id,
/// owner, lease token, messages, bytes). Returns the moved sessions' new versions.
pub(super) fn update_statement(turns: usize) -> String {
    let rows: Vec<String> = (0..turns)
        .map(|i| {
            let p = 3 + 5 * i;
            format!(
                "(${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5
            )
        })
        .collect();
    format!(
        "UPDATE sessions SET message_count = message_count + v.column4, \
         byte_count = byte_count + v.column5, next_seq = next_seq + v.column4, \
         updated_at = $1, lease_token = NULL, lease_until_ms = 0 \
         FROM (VALUES {}) AS v \
         WHERE sessions.id = v.column1 AND sessions.owner = v.column2 \
         AND COALESCE(sessions.lease_token, '') = v.column3 \
         AND sessions.message_count + v.column4 <= $2 \
         AND sessions.byte_count + v.column5 <= $3 \
         RETURNING id, next_seq, message_count",
        rows.join(", ")
    )
}

/// The INSERT of `rows` messages: `$1` the time, then three parameters per message
/// (session id, seq, text).
pub(super) fn insert_statement(rows: usize) -> String {
    let rows: Vec<String> = (0..rows)
        .map(|i| format!("(${}, ${}, ${}, $1)", 3 * i + 2, 3 * i + 3, 3 * i + 4))
        .collect();
    format!(
        "INSERT INTO messages (session_id, seq, message, created_at) VALUES {}",
        rows.join(", ")
    )
}
