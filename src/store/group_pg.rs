//! PostgreSQL's commit of a batch of chat turns (no stored responses): one statement, so one round trip and one flush.
//!
//! The statement does what `group::append_all` does for such a batch in a transaction
//! of four statements: the UPDATE that checks each session's lease and limits and moves
//! its counters, and the INSERT of the messages of exactly the sessions it moved (a
//! data-modifying `WITH`, which PostgreSQL runs atomically as one statement). A turn whose
//! conditions do not hold changes nothing and is told why afterwards, by a read.

use sqlx::AnyConnection;

use super::group_sql::{bind_turns, leased_in_id_order, moved, refusal, Job, Leased};
use super::{now, SessionError, SessionLimits, Version};

/// Appends every turn of `batch` (each with a session and no response) in one
/// statement. `Err` only for a storage failure: then nothing of the batch is stored.
pub(super) async fn append_turns(
    conn: &mut AnyConnection,
    limits: SessionLimits,
    batch: &[Job],
) -> Result<Vec<Result<Version, SessionError>>, SessionError> {
    let (created_at, _, _) = now();
    let leased = leased_in_id_order(batch.iter());
    let sql = statement(&leased);
    let mut query = bind_turns(sqlx::query(&sql), created_at, limits, &leased);
    for &(job, id, _) in &leased {
        for (offset, message) in job.messages.iter().enumerate() {
            query = query.bind(id).bind(offset as i64).bind(message.as_str());
        }
    }
    let totals = moved(&query.fetch_all(&mut *conn).await?)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        let Some((id, token)) = &job.session else {
            outcomes.push(Ok((0, 0)));
            continue;
        };
        match totals.get(id) {
            Some(&total) => outcomes.push(Ok(total)),
            None => outcomes.push(Err(refusal(conn, limits, &job.owner, id, token).await?)),
        }
    }
    Ok(outcomes)
}

/// The statement for `leased` turns: `$1` the time, `$2`/`$3` the limits, then five
/// parameters per turn, then three per message (session, offset in its turn, text).
fn statement(leased: &[Leased]) -> String {
    let mut turns = Vec::with_capacity(leased.len());
    let mut messages = Vec::new();
    let mut p = 3;
    for _ in leased {
        turns.push(format!(
            "(${}::text, ${}::text, ${}::text, ${}::bigint, ${}::bigint)",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5
        ));
        p += 5;
    }
    for (job, _, _) in leased {
        for _ in &job.messages {
            messages.push(format!(
                "(${}::text, ${}::bigint, ${}::text)",
                p + 1,
                p + 2,
                p + 3
            ));
            p += 3;
        }
    }
    let inserted = match messages.is_empty() {
        true => String::new(),
        false => format!(
            ", m (session_id, k, message) AS (VALUES {}), \
             inserted AS (INSERT INTO messages (session_id, seq, message, created_at) \
             SELECT m.session_id, moved.next_seq - v.n + m.k, m.message, $1 \
             FROM m JOIN moved ON moved.id = m.session_id JOIN v ON v.id = m.session_id)",
            messages.join(", ")
        ),
    };
    format!(
        "WITH v (id, owner, token, n, bytes) AS (VALUES {}), \
         moved AS (UPDATE sessions SET message_count = message_count + v.n, \
         byte_count = byte_count + v.bytes, next_seq = next_seq + v.n, \
         updated_at = $1, lease_token = NULL, lease_until_ms = 0 FROM v \
         WHERE sessions.id = v.id AND sessions.owner = v.owner \
         AND COALESCE(sessions.lease_token, '') = v.token \
         AND sessions.message_count + v.n <= $2 AND sessions.byte_count + v.bytes <= $3 \
         RETURNING sessions.id, sessions.next_seq, sessions.message_count){inserted} \
         SELECT id, next_seq, message_count FROM moved",
        turns.join(", ")
    )
}
