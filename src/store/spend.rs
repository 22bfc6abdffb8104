//! What a key has spent (input plus output tokens) in its budget windows, summed over
//! the stored token usage: the floors its budget counters never go below.

use sqlx::Row;

use super::{SessionError, SessionStore};

/// A key's stored spend today, this month and in total (UTC calendar windows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub day: u64,
    pub month: u64,
    pub total: u64,
}

impl SessionStore {
    /// The tokens key `name` has spent on `day` (`YYYY-MM-DD`), in `month` (`YYYY-MM`)
    /// and ever, as the usage rows written so far say. One indexed query.
    pub async fn spent(&self, name: &str, day: &str, month: &str) -> Result<Spent, SessionError> {
        let row = sqlx::query(
            "SELECT \
             CAST(COALESCE(SUM(CASE WHEN day = $2 THEN input_tokens + output_tokens ELSE 0 END), 0) AS BIGINT) AS spent_day, \
             CAST(COALESCE(SUM(CASE WHEN substr(day, 1, 7) = $3 THEN input_tokens + output_tokens ELSE 0 END), 0) AS BIGINT) AS spent_month, \
             CAST(COALESCE(SUM(input_tokens + output_tokens), 0) AS BIGINT) AS spent_total \
             FROM token_usage WHERE key_name = $1",
        )
        .bind(name)
        .bind(day)
        .bind(month)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.writer.failed("read", e.into()))?;
        let tokens = |column: &str| -> Result<u64, SessionError> {
            let value: i64 = row.try_get(column)?;
            Ok(value.max(0) as u64)
        };
        Ok(Spent {
            day: tokens("spent_day")?,
            month: tokens("spent_month")?,
            total: tokens("spent_total")?,
        })
    }
}
