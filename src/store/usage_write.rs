//! Token usage, written in batches off the request path: counts add up in memory per key, model and UTC day, and are flushed every second (and at shutdown).
//!
//! A flush is one transaction of `INSERT … ON CONFLICT DO UPDATE` upserts (the same
//! statement on SQLite and PostgreSQL) through the store's writer, so a failure is
//! counted and marks the store unready like any other write. A failed flush keeps its
//! counts for the next one, up to [`MAX_PENDING`] rows; past that, new rows are dropped
//! and logged once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use sqlx::Connection;

use super::writer::Writer;
use super::SessionError;

/// How often the counts are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Rows (key, model, day) held while the store cannot be written.
const MAX_PENDING: usize = 100_000;

/// One turn's tokens, by what they bill (the metric's kinds).
pub use crate::telemetry::TokenKinds as TokenCounts;

#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    counts: TokenCounts,
    requests: u64,
    estimated_requests: u64,
}

impl Sums {
    fn add(&mut self, other: &Sums) {
        let (a, b) = (&mut self.counts, &other.counts);
        a.input += b.input;
        a.output += b.output;
        a.cached_input += b.cached_input;
        a.reasoning += b.reasoning;
        self.requests += other.requests;
        self.estimated_requests += other.estimated_requests;
    }
}

/// (key name, model, day)
type RowKey = (String, String, String);

/// The counts not yet written.
#[derive(Default)]
pub struct UsageBuffer {
    pending: Mutex<HashMap<RowKey, Sums>>,
    /// A full buffer was reported (once, until it drains).
    overflow_logged: AtomicBool,
    /// A failed flush was reported (once, until a flush succeeds).
    failure_logged: AtomicBool,
}

impl UsageBuffer {
    fn add(&self, row: RowKey, sums: &Sums) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let full = pending.len() >= MAX_PENDING;
        match pending.get_mut(&row) {
            Some(existing) => existing.add(sums),
            None if full => {
                if !self.overflow_logged.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        rows = MAX_PENDING,
                        "token usage cannot be written and its buffer is full; new usage rows are dropped until the store accepts writes"
                    );
                }
            }
            None => {
                pending.insert(row, *sums);
            }
        }
    }

    /// Adds one turn's tokens to its key's row for the model and today (UTC).
    pub fn add_turn(&self, key: &str, model: &str, counts: &TokenCounts, estimated: bool) {
        let day = crate::wire::time::utc_day(SystemTime::now());
        let sums = Sums {
            counts: *counts,
            requests: 1,
            estimated_requests: u64::from(estimated),
        };
        self.add((key.to_string(), model.to_string(), day), &sums);
    }

    /// Writes the counts added so far.
    pub async fn flush(&self, writer: &Writer) -> Result<(), SessionError> {
        flush(writer, self).await
    }

    fn take(&self) -> HashMap<RowKey, Sums> {
        self.pending
            .lock()
            .map(|mut pending| std::mem::take(&mut *pending))
            .unwrap_or_default()
    }
}

/// Flushes `buffer` every [`FLUSH_EVERY`] until the store is dropped.
pub fn spawn_flusher(writer: Arc<Writer>, buffer: Weak<UsageBuffer>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(buffer) = buffer.upgrade() else {
                return;
            };
            // A failure is counted and logged by the writer and by `flush`.
            let _ = flush(&writer, &buffer).await;
        }
    });
}

async fn flush(writer: &Writer, buffer: &UsageBuffer) -> Result<(), SessionError> {
    let rows = buffer.take();
    if rows.is_empty() {
        return Ok(());
    }
    let result = upsert(writer, &rows).await;
    match &result {
        Ok(()) => {
            buffer.failure_logged.store(false, Ordering::Relaxed);
            buffer.overflow_logged.store(false, Ordering::Relaxed);
        }
        Err(err) => {
            if !buffer.failure_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %err, rows = rows.len(), "token usage could not be written; kept for the next flush");
            }
            for (row, sums) in rows {
                buffer.add(row, &sums);
            }
        }
    }
    result
}

const UPSERT: &str = "INSERT INTO token_usage (key_name, model, day, input_tokens, output_tokens, \
     cached_input_tokens, reasoning_tokens, requests, estimated_requests) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (key_name, day, model) DO UPDATE SET \
     input_tokens = token_usage.input_tokens + excluded.input_tokens, \
     output_tokens = token_usage.output_tokens + excluded.output_tokens, \
     cached_input_tokens = token_usage.cached_input_tokens + excluded.cached_input_tokens, \
     reasoning_tokens = token_usage.reasoning_tokens + excluded.reasoning_tokens, \
     requests = token_usage.requests + excluded.requests, \
     estimated_requests = token_usage.estimated_requests + excluded.estimated_requests";

/// All rows in one transaction: either every count is added or none is.
async fn upsert(writer: &Writer, rows: &HashMap<RowKey, Sums>) -> Result<(), SessionError> {
    let mut conn = writer.acquire("usage").await?;
    let result = async {
        let mut tx = conn.begin().await?;
        for ((key, model, day), sums) in rows {
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            let c = &sums.counts;
            sqlx::query(UPSERT)
                .bind(key.as_str())
                .bind(model.as_str())
                .bind(day.as_str())
                .bind(n(c.input))
                .bind(n(c.output))
                .bind(n(c.cached_input))
                .bind(n(c.reasoning))
                .bind(n(sums.requests))
                .bind(n(sums.estimated_requests))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
    .await;
    writer.finish("usage", conn, result)
}
