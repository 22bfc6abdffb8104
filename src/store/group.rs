//! Group commit: one task commits the waiting turns of many sessions in one transaction, and answers each only after that commit.
//!
//! A turn whose own checks fail (its session's limits, a lost lease, a deleted session,
//! its owner's response quota, a previous response deleted meanwhile) changes nothing:
//! responses are claimed first, and the one UPDATE that appends every turn of the batch
//! carries each turn's conditions, so a refused turn's rows are simply not touched (a
//! claimed quota is given back), and the others commit. A storage failure anywhere (the
//! UPDATE, an INSERT, the COMMIT) rolls the whole transaction back, and every turn of the
//! batch gets that failure (503): none is stored.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{Any, Connection, Transaction};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::group_sql::{
    bind_turns, insert_statement, leased_in_id_order, moved, queue_messages, refusal,
    update_statement, Job, INSERT_ROWS,
};
use super::response_commit::{self, Claim};
use super::writer::Writer;
use super::{now, LiveLimits, ResponseRecord, SessionError, SessionLimits, Version};

/// Turns per transaction at most (5 bind parameters each in the UPDATE).
const MAX_BATCH: usize = 256;

/// The queue in front of the committing task. The task ends when this is dropped.
pub struct Committer {
    queue: mpsc::UnboundedSender<Job>,
}

/// How a batch is written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// A transaction of plain statements, which both databases read the same way; a
    /// batch of chat turns in two trips to the connection's thread (`group_sqlite.rs`).
    Sqlite,
    /// PostgreSQL: a batch of chat turns in one statement (`group_pg.rs`), and several
    /// batches in flight at once.
    Postgres,
}

impl Dialect {
    /// Batches committing at once. SQLite has one writer. PostgreSQL spends most of a
    /// commit waiting for its log to reach the disk, and flushes the logs of commits
    /// that wait together once: a batch that starts while others flush shares their
    /// flush instead of queueing behind it. Rows are always locked in the same order
    /// (owners, then sessions by id), so batches in flight together cannot deadlock on
    /// them; a second turn of one session (only after a lost lease) is refused by its
    /// token whichever batch it is in.
    fn batches_in_flight(self) -> usize {
        match self {
            Dialect::Sqlite => 1,
            Dialect::Postgres => 4,
        }
    }
}

impl Committer {
    pub fn spawn(writer: Arc<Writer>, limits: LiveLimits, dialect: Dialect) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(writer, limits, dialect, jobs));
        Committer { queue }
    }

    /// Queues a turn; the answer says whether the transaction holding it committed.
    pub async fn commit(
        &self,
        owner: &str,
        session: Option<(String, String)>,
        messages: Vec<String>,
        response: Option<ResponseRecord>,
    ) -> Result<Version, SessionError> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            owner: owner.to_string(),
            session,
            messages,
            response,
            done,
        };
        if self.queue.send(job).is_err() {
            return Err(batch_error("the committer has stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(batch_error("the committer dropped the turn")))
    }
}

async fn run(
    writer: Arc<Writer>,
    limits: LiveLimits,
    dialect: Dialect,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let writer_slots = Arc::new(Semaphore::new(dialect.batches_in_flight()));
    let mut carried: Vec<Job> = Vec::new();
    loop {
        if carried.is_empty() {
            match jobs.recv().await {
                Some(job) => carried.push(job),
                None => return,
            }
        }
        // Waits while every slot commits: the turns arriving meanwhile join this batch.
        let Ok(slot) = writer_slots.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued up while the last batch committed goes into this one.
        while carried.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => carried.push(job),
                Err(_) => break,
            }
        }
        // One turn per session per batch: a second one (only possible after a lost
        // lease) waits for the next batch.
        let mut seen = HashSet::new();
        let (batch, later): (Vec<Job>, Vec<Job>) = carried.drain(..).partition(|job| {
            job.session
                .as_ref()
                .is_none_or(|(id, _)| seen.insert(id.clone()))
        });
        carried = later;
        let (writer, limits) = (writer.clone(), **limits.load());
        tokio::spawn(async move {
            commit_batch(&writer, limits, dialect, batch).await;
            drop(slot);
        });
    }
}

async fn commit_batch(writer: &Writer, limits: SessionLimits, dialect: Dialect, batch: Vec<Job>) {
    let conn = writer.acquire("append").await;
    // Chat turns only: the common case, written with fewer round trips.
    let chat_only = batch
        .iter()
        .all(|job| job.session.is_some() && job.response.is_none());
    let result = match conn {
        Err(err) => Err(err),
        Ok(mut conn) => {
            let result = async {
                match (chat_only, dialect) {
                    (true, Dialect::Postgres) => {
                        return super::group_pg::append_turns(&mut conn, limits, &batch).await
                    }
                    (true, Dialect::Sqlite) => {
                        return super::group_sqlite::append_turns(&mut conn, limits, &batch).await
                    }
                    (false, _) => {}
                }
                let mut tx = conn.begin().await?;
                let outcomes = append_all(&mut tx, limits, &batch).await?;
                tx.commit().await?;
                Ok(outcomes)
            }
            .await;
            // A batch of refusals only stored nothing: it must not mark the store ready.
            // A failed batch is a failed append (counted and logged as one).
            let refused_only =
                result
                    .as_ref()
                    .is_ok_and(|outcomes: &Vec<Result<Version, SessionError>>| {
                        !outcomes.iter().any(Result::is_ok)
                    });
            writer.finish(if refused_only { "lease" } else { "append" }, conn, result)
        }
    };
    match result {
        Ok(outcomes) => {
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                let _ = job.done.send(outcome);
            }
        }
        Err(err) => {
            let message = err.to_string();
            for job in batch {
                let _ = job.done.send(Err(batch_error(&message)));
            }
        }
    }
}

fn batch_error(message: &str) -> SessionError {
    SessionError::Storage(sqlx::Error::Protocol(message.to_string()))
}

/// Appends every turn of the batch; `Err` only for a storage failure (the batch fails).
async fn append_all(
    tx: &mut Transaction<'_, Any>,
    limits: SessionLimits,
    batch: &[Job],
) -> Result<Vec<Result<Version, SessionError>>, SessionError> {
    let (created_at, _, _) = now();
    // Responses first: a turn whose response cannot be stored (its parent is gone, or
    // its owner's quota is full) touches no session either.
    let mut refusals = claim_responses(tx, batch).await?;
    let claimed: Vec<bool> = batch
        .iter()
        .zip(&refusals)
        .map(|(job, refusal)| job.response.is_some() && refusal.is_none())
        .collect();
    let unrefused = batch.iter().zip(&refusals).filter(|(_, r)| r.is_none());
    let leased = leased_in_id_order(unrefused.map(|(job, _)| job));
    let mut totals = std::collections::HashMap::new();
    if !leased.is_empty() {
        // One UPDATE for every session of the batch; each row's own conditions decide.
        let sql = update_statement(leased.len());
        let update = bind_turns(sqlx::query(&sql), created_at, limits, &leased);
        totals = moved(&update.fetch_all(&mut **tx).await?)?;
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut inserts: Vec<(&str, i64, &str)> = Vec::new();
    for (job, refused) in batch.iter().zip(refusals.iter_mut()) {
        if let Some(refused) = refused.take() {
            outcomes.push(Err(refused));
            continue;
        }
        let Some((id, token)) = &job.session else {
            outcomes.push(Ok((0, 0)));
            continue;
        };
        match totals.get(id) {
            Some(&total) => {
                queue_messages(job, id, total, &mut inserts);
                outcomes.push(Ok(total));
            }
            None => {
                let why = refusal(tx, limits, &job.owner, id, token).await?;
                outcomes.push(Err(why))
            }
        }
    }
    for chunk in inserts.chunks(INSERT_ROWS) {
        let sql = insert_statement(chunk.len());
        let mut insert = sqlx::query(&sql).bind(created_at);
        for (id, seq, message) in chunk {
            insert = insert.bind(*id).bind(*seq).bind(*message);
        }
        insert.execute(&mut **tx).await?;
    }
    for ((job, outcome), claimed) in batch.iter().zip(&outcomes).zip(claimed) {
        let Some(record) = job.response.as_ref().filter(|_| claimed) else {
            continue;
        };
        match outcome {
            Ok(total) => {
                // Made in a conversation: its context is the session's messages before
                // this turn's, linked rather than copied.
                let session = job.session.as_ref().map(|(id, _)| {
                    let first = total.0 - job.messages.len() as i64;
                    (id.as_str(), first)
                });
                response_commit::insert(tx, &job.owner, record, session).await?;
            }
            // Claimed, but its session refused the turn: the bytes go back.
            Err(_) => {
                let bytes = i64::try_from(record.bytes()).unwrap_or(i64::MAX);
                response_commit::release_usage(tx, &job.owner, bytes).await?;
            }
        }
    }
    Ok(outcomes)
}

/// The batch's responses claimed (see [`response_commit::claim_all`]): per job, why it
/// is refused, if it is.
async fn claim_responses(
    tx: &mut Transaction<'_, Any>,
    batch: &[Job],
) -> Result<Vec<Option<SessionError>>, SessionError> {
    let mut at = Vec::new();
    let mut claims = Vec::new();
    for (i, job) in batch.iter().enumerate() {
        if let Some(record) = &job.response {
            at.push(i);
            claims.push(Claim {
                owner: &job.owner,
                record,
            });
        }
    }
    let mut refusals: Vec<Option<SessionError>> = batch.iter().map(|_| None).collect();
    if claims.is_empty() {
        return Ok(refusals);
    }
    let claimed = response_commit::claim_all(tx, &claims).await?;
    for (i, refusal) in at.into_iter().zip(claimed) {
        if let Some(slot) = refusals.get_mut(i) {
            *slot = refusal;
        }
    }
    Ok(refusals)
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
