//! A key's tenancy policy beyond its rate: the models it may use, its token budgets, when it expires and whether it is disabled; and the one check of a policy as people write it.

use super::expiry::parse_rfc3339;

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

    /// Why a key that matched may not be used at `now` (Unix seconds): the one place
    /// that decides it. `None`: it may.
    pub fn refusal(&self, now: i64) -> Option<KeyRefusal> {
        if self.disabled {
            return Some(KeyRefusal::Disabled);
        }
        match self.expires_at {
            Some(at) if now >= at => Some(KeyRefusal::Expired),
            _ => None,
        }
    }
}

/// Why a known key is refused (401). Neither says anything about the key itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRefusal {
    Disabled,
    Expired,
}

/// A policy as written in `[[keys]]`, the admin API or `gatewayd keys create`, before
/// it is checked: `expires_at` is still RFC 3339 text.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct PolicyText {
    pub models: Option<Vec<String>>,
    pub tokens_per_day: Option<u64>,
    pub tokens_per_month: Option<u64>,
    pub tokens_total: Option<u64>,
    pub expires_at: Option<String>,
    pub disabled: Option<bool>,
}

impl PolicyText {
    /// The checked policy, or what is wrong in words an operator can act on (never
    /// naming the entry: the caller does). `models = ["*"]` allows every model.
    pub fn check(&self) -> Result<KeyPolicy, String> {
        let models = match &self.models {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(
                    "models is empty, so the key could use no model at all; list \
                            the models it may use, or write [\"*\"] for every model"
                        .into(),
                )
            }
            Some(list) => {
                if let Some(bad) = list
                    .iter()
                    .find(|m| m.is_empty() || m.trim_end_matches('*').contains('*'))
                {
                    return Err(format!(
                        "model pattern {bad:?} is not valid: write an exact model name, or a \
                         prefix ending in a single '*' (\"gpt-4o*\"), or \"*\" for every model"
                    ));
                }
                (!list.iter().any(|m| m == "*")).then(|| list.clone())
            }
        };
        for (name, value) in [
            ("tokens_per_day", self.tokens_per_day),
            ("tokens_per_month", self.tokens_per_month),
            ("tokens_total", self.tokens_total),
        ] {
            if value == Some(0) {
                return Err(format!(
                    "{name} must be above 0; leave it out for no limit, or set disabled = true \
                     to stop the key"
                ));
            }
        }
        let expires_at = match &self.expires_at {
            None => None,
            Some(text) => Some(parse_rfc3339(text).ok_or_else(|| {
                format!(
                    "expires_at {:?} is not an RFC 3339 time; write it like \
                     \"2027-01-31T23:59:59Z\" (or with an offset such as +02:00)",
                    text.chars().take(64).collect::<String>()
                )
            })?),
        };
        Ok(KeyPolicy {
            models,
            tokens_per_day: self.tokens_per_day,
            tokens_per_month: self.tokens_per_month,
            tokens_total: self.tokens_total,
            expires_at,
            disabled: self.disabled.unwrap_or(false),
        })
    }
}

/// Where a key is defined: the config file (never changed through the admin API) or
/// the store (created at run time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyOrigin {
    #[default]
    Config,
    Runtime,
}

/// Everything a runtime key carries besides its name and digest: its policy and its
/// overrides of the `[limits]` rate and concurrency.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySettings {
    pub policy: KeyPolicy,
    pub requests_per_minute: Option<u32>,
    pub concurrent_requests: Option<u32>,
}
