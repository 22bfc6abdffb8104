//! SQLite's commit of a batch of chat turns (no stored responses): the same statements as every batch, in two trips to the database's thread instead of four.
//!
//! A SQLite connection runs on a thread of its own, and each statement sent to it is a
//! hand-over between threads, which on a loaded machine waits for a free core. The
//! transaction's `BEGIN` travels with the UPDATE and its `COMMIT` with the INSERT. If a
//! statement fails, the rest of its trip does not run and the transaction is left open;
//! the writer then closes the connection (`Writer::finish`), and closing rolls it back.

use std::collections::HashMap;

use sqlx::{AnyConnection, Row};

use super::group_sql::{insert_statement, refusal, update_statement, Job, INSERT_ROWS};
use super::{now, SessionError, SessionLimits, Version};

/// Appends every turn of `batch` (each with a session and no response) in one
/// transaction. `Err` only for a storage failure: then nothing of the batch is stored.
pub(super) async fn append_turns(
    conn: &mut AnyConnection,
    limits: SessionLimits,
    batch: &[Job],
) -> Result<Vec<Result<Version, SessionError>>, SessionError> {
    let (created_at, _, _) = now();
    let mut leased: Vec<(&Job, &str, &str)> = batch
        .iter()
        .filter_map(|job| {
            let (id, token) = job.session.as_ref()?;
            Some((job, id.as_str(), token.as_str()))
        })
        .collect();
    leased.sort_by_key(|&(_, id, _)| id);
    let sql = format!("BEGIN; {}", update_statement(leased.len()));
    let mut update = sqlx::query(&sql)
        .bind(created_at)
        .bind(limits.max_messages as i64)
        .bind(limits.max_bytes as i64);
    for &(job, id, token) in &leased {
        let bytes: i64 = job.messages.iter().map(|m| m.len() as i64).sum();
        update = update
            .bind(id)
            .bind(job.owner.as_str())
            .bind(token)
            .bind(job.messages.len() as i64)
            .bind(bytes);
    }
    let mut totals = HashMap::new();
    for row in update.fetch_all(&mut *conn).await? {
        let version = super::group_sql::version_of(&row)?;
        totals.insert(row.try_get::<String, _>("id")?, version);
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut inserts: Vec<(&str, i64, &str)> = Vec::new();
    for job in batch {
        let Some((id, token)) = &job.session else {
            outcomes.push(Ok((0, 0)));
            continue;
        };
        match totals.get(id) {
            Some(&total) => {
                let first = total.0 - job.messages.len() as i64;
                for (offset, message) in job.messages.iter().enumerate() {
                    inserts.push((id.as_str(), first + offset as i64, message.as_str()));
                }
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
