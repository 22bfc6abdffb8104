//! A key's tenancy policy beyond its rate: the models it may use, its token budgets, when it expires and whether it is disabled.

/// What one key may do, from `[[keys]]` or from a runtime key in the store. The default
/// allows every model, sets no budget and never expires.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyPolicy {
    /// Exact model names or trailing-`*` patterns; `None` allows every model.
    pub models: Option<Vec<String>>,
    /// Input plus output tokens per UTC calendar day, month, and ever.
    pub tokens_per_day: Option<u64>,
    pub tokens_per_month: Option<u64>,
    pub tokens_total: Option<u64>,
    /// Unix seconds; from then on the key gets 401.
    pub expires_at: Option<i64>,
    pub disabled: bool,
}

impl KeyPolicy {
    /// Whether `model` is one of `models` (exact, or a trailing-`*` prefix pattern).
    pub fn allows_model(&self, model: &str) -> bool {
        let Some(patterns) = &self.models else {
            return true;
        };
        patterns
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => pattern == model,
            })
    }

    /// Whether any token budget applies (a reservation is needed).
    pub fn has_budget(&self) -> bool {
        self.tokens_per_day.is_some()
            || self.tokens_per_month.is_some()
            || self.tokens_total.is_some()
    }
}

/// Where a key is defined: the config file (never changed through the admin API) or
/// the store (created at run time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyOrigin {
    #[default]
    Config,
    Runtime,
}
