//! SQLite's commit of a batch of chat turns (no stored responses): the same statements as every batch, in two trips to the database's thread instead of four.
//!
//! A SQLite connection runs on a thread of its own, and each statement sent to it is a
//! hand-over between threads, which on a loaded machine waits for a free core. The
//! transaction's `BEGIN` travels with the UPDATE and its `COMMIT` with the INSERT. If a
//! statement fails, the rest of its trip does not run and the transaction is left open;
//! the writer then closes the connection (`Writer::finish`), and closing rolls it back.

use sqlx::AnyConnection;

use super::group_sql::{
    bind_turns, insert_statement, leased_in_id_order, moved, queue_messages, refusal,
    update_statement, Job, INSERT_ROWS,
};
use super::{now, SessionError, SessionLimits, Version};

/// Appends every turn of `batch` (each with a session and no response) in one
/// transaction. `Err` only for a storage failure: then nothing of the batch is stored.
pub(super) async fn append_turns(
    conn: &mut AnyConnection,
    limits: SessionLimits,
    batch: &[Job],
) -> Result<Vec<Result<Version, SessionError>>, SessionError> {
    let (created_at, _, _) = now();
    let leased = leased_in_id_order(batch.iter());
    let sql = format!("BEGIN; {}", update_statement(leased.len()));
    let update = bind_turns(sqlx::query(&sql), created_at, limits, &leased);
    let totals = moved(&update.fetch_all(&mut *conn).await?)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut inserts: Vec<(&str, i64, &str)> = Vec::new();
    for job in batch {
        let Some((id, token)) = &job.session else {
            outcomes.push(Ok((0, 0)));
            continue;
        };
        match totals.get(id) {
            Some(&total) => {
                queue_messages(job, id, total, &mut inserts);
                outcomes.push(Ok(total));
            }
            None => outcomes.push(Err(refusal(conn, limits, &job.owner, id, token).await?)),
        }
    }
    let chunks: Vec<&[(&str, i64, &str)]> = inserts.chunks(INSERT_ROWS).collect();
    if chunks.is_empty() {
        sqlx::query("COMMIT").execute(&mut *conn).await?;
    }
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let sql = match last {
            true => format!("{}; COMMIT", insert_statement(chunk.len())),
            false => insert_statement(chunk.len()),
        };
        let mut insert = sqlx::query(&sql).bind(created_at);
        for (id, seq, message) in *chunk {
            insert = insert.bind(*id).bind(*seq).bind(*message);
        }
        insert.execute(&mut *conn).await?;
    }
    Ok(outcomes)
}
