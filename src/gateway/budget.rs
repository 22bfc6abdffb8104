//! Step 2 for tokens: reserve a turn's worst case against its key's budgets before the upstream call.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::state::Gateway;
use crate::config::keys::ClientKey;
use crate::limits::{self, BudgetScope, Floors, Reservation};
use crate::wire::error::ApiError;

/// Reserves `input_estimate` plus `max_tokens` (or `[limits] budget_default_max_tokens`
/// when the request sets none) against every budget window of `key`, or refuses with 429
/// `budget_exceeded`. `None` when the key has no budget. The reservation is exactly
/// that sum, with no padding; a reservation alone over a window's limit is refused too.
pub async fn reserve(
    gateway: &Gateway,
    key: &Arc<ClientKey>,
    input_estimate: u64,
    max_tokens: Option<u64>,
) -> Result<Option<Reservation>, ApiError> {
    if !key.policy.has_budget() {
        return Ok(None);
    }
    let output = max_tokens.unwrap_or(gateway.config.limits.budget_default_max_tokens);
    let amount = input_estimate.saturating_add(output);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let name: Arc<str> = Arc::from(key.name.as_str());
    let floors = floors(gateway, &name, now).await?;
    let scope = BudgetScope {
        name,
        windows: limits::windows(&key.policy, now),
        floors,
    };
    gateway.limiter.reserve(scope, amount).await.map(Some)
}

/// What the store says the key has spent in each window, read at most once a second per
/// key. A store that cannot answer refuses the turn: a budget is never judged blind.
async fn floors(gateway: &Gateway, name: &Arc<str>, now: i64) -> Result<Floors, ApiError> {
    let store = gateway.session_store()?;
    gateway
        .limiter
        .budget_floors(name, || async {
            let (day, month) = limits::day_and_month(now);
            let spent = store.spent(name, &day, &month).await.map_err(|error| {
                tracing::warn!(%error, "budget floors could not be read from the store");
                ApiError::StorageUnavailable
            })?;
            Ok(Floors {
                day: spent.day,
                month: spent.month,
                total: spent.total,
            })
        })
        .await
}
