//! Removing a stored response without breaking the chains that continue from it, and giving its bytes back to its owner's quota.
//!
//! A response that later responses continue from is hidden rather than deleted: it can no
//! longer be read or continued, its response object and input items are dropped, and only
//! the messages it added stay, for those responses' context. A response nothing continues
//! from is deleted, and so is every hidden ancestor that no longer has a child. Every
//! hidden row therefore has at least one child, and deleting the last response of a
//! chain removes the chain.

use sqlx::{Any, Row, Transaction};

use super::response_commit::{is_postgres, release_usage};
use super::SessionError;

/// The most hidden ancestors one removal deletes. Chains are shorter than a session's
/// `max_messages`; what a longer one leaves is collected by the next purge.
const MAX_COLLECTED: usize = 100_000;

/// Removes `owner`'s readable response `id` in `tx` (hidden or deleted, as above) and
/// takes its bytes off the owner's total. `false` when there is no such response.
pub(super) async fn remove(
    tx: &mut Transaction<'_, Any>,
    owner: &str,
    id: &str,
) -> Result<bool, SessionError> {
    // On PostgreSQL the row is locked first: a commit continuing from it holds it
    // share-locked, so this waits for that commit and then sees its child.
    let lock = lock_clause(tx);
    let sql = format!(
        "SELECT parent_id, bytes FROM responses WHERE id = $1 AND owner = $2 AND hidden = 0{lock}"
    );
    let Some(row) = sqlx::query(&sql)
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(false);
    };
    let bytes: i64 = row.try_get("bytes")?;
    let freed = match has_children(tx, id).await? {
        true => {
            let kept = sqlx::query(
                "UPDATE responses SET hidden = 1, response = '', input_items = '', \
                 bytes = CAST(octet_length(context) AS BIGINT) WHERE id = $1 RETURNING bytes",
            )
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
            bytes - kept.try_get::<i64, _>("bytes")?
        }
        false => {
            delete_row(tx, id).await?;
            let parent: Option<String> = row.try_get("parent_id")?;
            bytes + collect_hidden(tx, parent).await?
        }
    };
    release_usage(tx, owner, freed).await?;
    Ok(true)
}

/// Deletes hidden rows without children (left by a removal that stopped at
/// [`MAX_COLLECTED`]), at most `batch` of them, in `tx`. Returns how many.
pub(super) async fn collect_orphans(
    tx: &mut Transaction<'_, Any>,
    batch: i64,
) -> Result<u64, SessionError> {
    let rows = sqlx::query(
        "SELECT r.id, r.owner, r.parent_id, r.bytes FROM responses r WHERE r.hidden = 1 \
         AND NOT EXISTS (SELECT 1 FROM responses c WHERE c.parent_id = r.id) LIMIT $1",
    )
    .bind(batch)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let (id, owner): (String, String) = (row.try_get("id")?, row.try_get("owner")?);
        delete_row(tx, &id).await?;
        let parent: Option<String> = row.try_get("parent_id")?;
        let freed = row.try_get::<i64, _>("bytes")? + collect_hidden(tx, parent).await?;
        release_usage(tx, &owner, freed).await?;
    }
    Ok(rows.len() as u64)
}

/// Deletes `parent` and the hidden ancestors above it while each is hidden and has no
/// child left; returns the bytes they held (all one owner's: a chain has one owner).
async fn collect_hidden(
    tx: &mut Transaction<'_, Any>,
    mut parent: Option<String>,
) -> Result<i64, SessionError> {
    let lock = lock_clause(tx);
    let sql = format!("SELECT parent_id, bytes FROM responses WHERE id = $1 AND hidden = 1{lock}");
    let mut freed = 0;
    for _ in 0..MAX_COLLECTED {
        let Some(id) = parent else {
            break;
        };
        let Some(row) = sqlx::query(&sql)
            .bind(&id)
            .fetch_optional(&mut **tx)
            .await?
        else {
            break;
        };
        if has_children(tx, &id).await? {
            break;
        }
        delete_row(tx, &id).await?;
        freed += row.try_get::<i64, _>("bytes")?;
        parent = row.try_get("parent_id")?;
    }
    Ok(freed)
}

async fn has_children(tx: &mut Transaction<'_, Any>, id: &str) -> Result<bool, SessionError> {
    let child = sqlx::query("SELECT id FROM responses WHERE parent_id = $1 LIMIT 1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(child.is_some())
}

async fn delete_row(tx: &mut Transaction<'_, Any>, id: &str) -> Result<(), SessionError> {
    sqlx::query("DELETE FROM responses WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Row locks for PostgreSQL, where several instances write; SQLite has one writer.
fn lock_clause(tx: &Transaction<'_, Any>) -> &'static str {
    if is_postgres(tx) {
        " FOR UPDATE"
    } else {
        ""
    }
}
