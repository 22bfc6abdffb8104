//! Token usage as stored: per key, model and UTC day, added per turn (written in batches by `usage_write.rs`) and read back for the admin API and `gatewayd keys usage`.

use sqlx::Row;

use super::usage_write::TokenCounts;
use super::{SessionError, SessionStore};

/// How usage rows are summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One row per key, model and day (nothing summed).
    #[default]
    Day,
    /// One row per key and model over the whole range (`day` is null).
    Model,
    /// One row per key over the whole range (`model` and `day` are null).
    Key,
}

/// Which usage rows to read. Days are `YYYY-MM-DD` (UTC), both ends included.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub key: Option<String>,
    pub model: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: GroupBy,
}

/// One row of the usage report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UsageRow {
    pub key: String,
    pub model: Option<String>,
    pub day: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub reasoning_tokens: i64,
    pub requests: i64,
    /// Requests whose usage is an estimate (a stream that ended before its usage report).
    pub estimated_requests: i64,
}

/// `true` for a well-formed `YYYY-MM-DD`, so only dates reach the query.
pub fn is_day(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

impl SessionStore {
    /// Adds one turn's tokens to its key's row for the model and today (UTC). Never
    /// waits: the row is written by the next flush, within a second.
    pub fn add_usage(&self, key: &str, model: &str, counts: &TokenCounts, estimated: bool) {
        self.usage.add_turn(key, model, counts, estimated);
    }

    /// Writes the usage added so far (the daemon calls it once more at shutdown).
    pub async fn flush_usage(&self) -> Result<(), SessionError> {
        self.usage.flush(&self.writer).await
    }

    /// The usage rows `filter` selects, ordered by key, then model, then day.
    pub async fn usage_rows(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, SessionError> {
        let (columns, group) = match filter.group_by {
            GroupBy::Day => ("key_name, model, day", "GROUP BY key_name, model, day"),
            GroupBy::Model => ("key_name, model", "GROUP BY key_name, model"),
            GroupBy::Key => ("key_name", "GROUP BY key_name"),
        };
        // Every value is bound; only fixed text is formatted into the statement.
        let mut conditions = Vec::new();
        let mut values = Vec::new();
        for (column, op, value) in [
            ("key_name", "=", &filter.key),
            ("model", "=", &filter.model),
            ("day", ">=", &filter.from),
            ("day", "<=", &filter.to),
        ] {
            if let Some(value) = value {
                values.push(value.clone());
                conditions.push(format!("{column} {op} ${}", values.len()));
            }
        }
        let condition = match conditions.is_empty() {
            true => String::new(),
            false => format!("WHERE {}", conditions.join(" AND ")),
        };
        let statement = format!(
            "SELECT {columns}, \
             CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
             CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
             CAST(SUM(cached_input_tokens) AS BIGINT) AS cached_input_tokens, \
             CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens, \
             CAST(SUM(requests) AS BIGINT) AS requests, \
             CAST(SUM(estimated_requests) AS BIGINT) AS estimated_requests \
             FROM token_usage {condition} {group} ORDER BY {columns}"
        );
        let mut query = sqlx::query(&statement);
        for value in &values {
            query = query.bind(value.as_str());
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.writer.failed("read", e.into()))?;
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    key: row.try_get("key_name")?,
                    model: match filter.group_by {
                        GroupBy::Key => None,
                        _ => Some(row.try_get("model")?),
                    },
                    day: match filter.group_by {
                        GroupBy::Day => Some(row.try_get("day")?),
                        _ => None,
                    },
                    input_tokens: row.try_get("input_tokens")?,
                    output_tokens: row.try_get("output_tokens")?,
                    cached_input_tokens: row.try_get("cached_input_tokens")?,
                    reasoning_tokens: row.try_get("reasoning_tokens")?,
                    requests: row.try_get("requests")?,
                    estimated_requests: row.try_get("estimated_requests")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::is_day;

    #[test]
    fn only_dates_are_days() {
        assert!(is_day("2026-12-06"));
        for bad in ["2026-1-06", "2026/12/06", "2026-12-06'", "", "x026-12-06"] {
            assert!(!is_day(bad), "{bad}");
        }
    }
}
