//! Token budgets shared through Redis: one script reserves against every window of a
//! key at once, one settles. `None` from a call means "Redis could not decide"; the
//! caller (`mod.rs`) applies the failure policy.
//!
//! Counters are named `{prefix}:{b:<caller tag>}:<period>` (the key's name or a digest
//! of it, never a key) and expire a day after their window ends; the total's counter
//! lives 35 days past its last use, after which it is seeded again from the store.

use super::budget::BudgetScope;
use super::scripts::{BUDGET_RESERVE, BUDGET_SETTLE};
use super::shared::{caller_tag, SharedLimiter};
use super::windows::Window;

/// A day and month counter outlives its window by this long, so a late settle finds it.
const KEEP_PAST_END_SECS: i64 = 86_400;

impl SharedLimiter {
    /// Reserves `amount` in every window of `scope` or in none: `Some(Err(i))` names
    /// the first window it would pass.
    pub async fn reserve_budget(
        &self,
        scope: &BudgetScope,
        amount: u64,
    ) -> Option<Result<(), usize>> {
        let keys = self.budget_keys(scope);
        let refused: i64 = self
            .call(|mut conn| {
                let mut script = BUDGET_RESERVE.prepare_invoke();
                for key in &keys {
                    script.key(key);
                }
                script.arg(amount);
                for window in &scope.windows {
                    script
                        .arg(window.limit)
                        .arg(scope.floors.of(window.kind))
                        .arg(expire_at(window));
                }
                async move { script.invoke_async(&mut conn).await }
            })
            .await?;
        Some(match refused {
            0 => Ok(()),
            i => Err((i.max(1) - 1) as usize),
        })
    }

    /// Moves every window of `scope` by `spent - reserved`. `None` when Redis could not
    /// take it; it is not retried.
    pub async fn settle_budget(
        &self,
        scope: &BudgetScope,
        reserved: u64,
        spent: u64,
    ) -> Option<()> {
        let keys = self.budget_keys(scope);
        let _: i64 = self
            .call(|mut conn| {
                let mut script = BUDGET_SETTLE.prepare_invoke();
                for key in &keys {
                    script.key(key);
                }
                script.arg(reserved).arg(spent);
                for window in &scope.windows {
                    script
                        .arg(scope.floors.of(window.kind))
                        .arg(expire_at(window));
                }
                async move { script.invoke_async(&mut conn).await }
            })
            .await?;
        Some(())
    }

    fn budget_keys(&self, scope: &BudgetScope) -> Vec<String> {
        let tag = caller_tag(&scope.name);
        scope
            .windows
            .iter()
            .map(|window| self.key(&format!("{{b:{tag}}}:{}", window.period)))
            .collect()
    }
}

/// Unix seconds at which a window's counter expires; 0 for the total (a sliding ttl).
fn expire_at(window: &Window) -> i64 {
    window
        .resets_at
        .map_or(0, |at| at.saturating_add(KEEP_PAST_END_SECS))
}
