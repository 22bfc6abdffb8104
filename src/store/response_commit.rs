//! The Responses part of a group commit: a response goes in only while the one it continues is still stored and its bytes fit its owner's quota.
//!
//! Every owner's stored bytes are one row of `response_usage`, changed in the same
//! transaction as the rows they count: the quota check is one conditional UPSERT, never
//! a sum over the owner's responses.

use sqlx::{Any, Transaction};

use super::{ResponseRecord, SessionError};

/// One response of a batch and its owner.
pub(super) struct Claim<'a> {
    pub owner: &'a str,
    pub record: &'a ResponseRecord,
}

/// Before any session of the batch is touched: each response's parent must still be
/// stored and readable, and the response's bytes are added to its owner's total if they
/// fit the quota. Per claim, `None` when it was claimed, or why it is refused. `Err` only
/// for a storage failure.
pub(super) async fn claim_all(
    tx: &mut Transaction<'_, Any>,
    claims: &[Claim<'_>],
) -> Result<Vec<Option<SessionError>>, SessionError> {
    let postgres = is_postgres(tx);
    let mut refusals: Vec<Option<SessionError>> = Vec::with_capacity(claims.len());
    // Parents first, then the owners' totals, each batch in the same order: on
    // PostgreSQL a delete locks a response and then its owner's total, so this order
    // cannot wait on it in a cycle.
    for claim in claims {
        let gone = match &claim.record.parent {
            Some(parent) => !parent_stored(tx, postgres, claim.owner, parent).await?,
            None => false,
        };
        refusals.push(gone.then_some(SessionError::PreviousResponseGone));
    }
    let mut order: Vec<usize> = (0..claims.len())
        .filter(|&i| refusals.get(i).is_some_and(Option::is_none))
        .collect();
    order.sort_by_key(|&i| claims.get(i).map(|claim| claim.owner));
    for i in order {
        let Some(claim) = claims.get(i) else {
            continue;
        };
        let (bytes, limit) = (claim.record.bytes(), claim.record.max_owner_bytes);
        if !add_usage(tx, claim.owner, bytes, limit).await? {
            if let Some(refusal) = refusals.get_mut(i) {
                *refusal = Some(SessionError::ResponseQuota(limit));
            }
        }
    }
    Ok(refusals)
}

/// Adds `bytes` to `owner`'s total unless that would pass `limit` (0 = no limit).
async fn add_usage(
    tx: &mut Transaction<'_, Any>,
    owner: &str,
    bytes: u64,
    limit: u64,
) -> Result<bool, SessionError> {
    let limit = match limit {
        0 => i64::MAX,
        n => i64::try_from(n).unwrap_or(i64::MAX),
    };
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    if bytes > limit {
        return Ok(false);
    }
    let added = sqlx::query(
        "INSERT INTO response_usage (owner, bytes) VALUES ($1, $2) \
         ON CONFLICT (owner) DO UPDATE SET bytes = response_usage.bytes + excluded.bytes \
         WHERE response_usage.bytes + excluded.bytes <= $3",
    )
    .bind(owner)
    .bind(bytes)
    .bind(limit)
    .execute(&mut **tx)
    .await?;
    Ok(added.rows_affected() > 0)
}

/// Takes `bytes` off `owner`'s total: a claimed response that was not stored after all,
/// or stored rows that were deleted.
pub(super) async fn release_usage(
    tx: &mut Transaction<'_, Any>,
    owner: &str,
    bytes: i64,
) -> Result<(), SessionError> {
    if bytes == 0 {
        return Ok(());
    }
    sqlx::query(
        "UPDATE response_usage SET bytes = CASE WHEN bytes > $1 THEN bytes - $1 ELSE 0 END \
         WHERE owner = $2",
    )
    .bind(bytes)
    .bind(owner)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stores a claimed response. `session` is the conversation it was made in and the seq
/// its turn's messages start at: its context is that session's messages before them.
pub(super) async fn insert(
    tx: &mut Transaction<'_, Any>,
    owner: &str,
    record: &ResponseRecord,
    session: Option<(&str, i64)>,
) -> Result<(), SessionError> {
    sqlx::query(
        "INSERT INTO responses (id, owner, created_at, context, input_items, response, \
         parent_id, session_id, session_seq, bytes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&record.id)
    .bind(owner)
    .bind(record.created_at)
    .bind(&record.context)
    .bind(&record.input_items)
    .bind(&record.response)
    .bind(record.parent.as_deref())
    .bind(session.map(|(id, _)| id))
    .bind(session.map_or(0, |(_, seq)| seq))
    .bind(i64::try_from(record.bytes()).unwrap_or(i64::MAX))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether `owner`'s response `id` is stored and readable. On PostgreSQL the row is
/// share-locked until the commit: a concurrent delete waits, and then sees the child.
async fn parent_stored(
    tx: &mut Transaction<'_, Any>,
    postgres: bool,
    owner: &str,
    id: &str,
) -> Result<bool, SessionError> {
    let lock = if postgres { " FOR SHARE" } else { "" };
    let sql = format!("SELECT id FROM responses WHERE id = $1 AND owner = $2 AND hidden = 0{lock}");
    let found = sqlx::query(&sql)
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(found.is_some())
}

/// PostgreSQL (several instances, row locks) rather than SQLite (one writer).
pub(super) fn is_postgres(tx: &Transaction<'_, Any>) -> bool {
    tx.backend_name() == "PostgreSQL"
}
