//! The admin API's shapes: a key's settings as sent (create and patch) and as shown (never the key or its digest).

use std::collections::HashMap;

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::config::keys::{ClientKey, KeyOrigin, KeySettings, PolicyText};
use crate::store::{StoredKey, UsageRow};
use crate::wire::error::ApiError;

/// `POST /admin/v1/keys` and `PATCH /admin/v1/keys/{name}`. On a patch, a field left
/// out is kept and `null` removes the setting (no limit, every model, never expires).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFields {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    pub tokens_per_day: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub tokens_per_month: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub tokens_total: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub disabled: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    pub requests_per_minute: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    pub concurrent_requests: Option<Option<u32>>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl KeyFields {
    /// `base` with these fields applied, checked by the same rules as `[[keys]]`.
    pub fn apply(&self, base: &KeySettings) -> Result<KeySettings, ApiError> {
        let text = PolicyText {
            models: self.models.clone().flatten(),
            tokens_per_day: self.tokens_per_day.flatten(),
            tokens_per_month: self.tokens_per_month.flatten(),
            tokens_total: self.tokens_total.flatten(),
            expires_at: self.expires_at.clone().flatten(),
            disabled: self.disabled.flatten(),
        };
        let checked = text.check().map_err(|m| ApiError::bad_request(m, None))?;
        let mut out = base.clone();
        let p = &mut out.policy;
        if self.models.is_some() {
            p.models = checked.models;
        }
        if self.tokens_per_day.is_some() {
            p.tokens_per_day = checked.tokens_per_day;
        }
        if self.tokens_per_month.is_some() {
            p.tokens_per_month = checked.tokens_per_month;
        }
        if self.tokens_total.is_some() {
            p.tokens_total = checked.tokens_total;
        }
        if self.expires_at.is_some() {
            p.expires_at = checked.expires_at;
        }
        if self.disabled.is_some() {
            p.disabled = checked.disabled;
        }
        for (name, value, slot) in [
            (
                "requests_per_minute",
                self.requests_per_minute,
                &mut out.requests_per_minute,
            ),
            (
                "concurrent_requests",
                self.concurrent_requests,
                &mut out.concurrent_requests,
            ),
        ] {
            if value == Some(Some(0)) {
                return Err(ApiError::bad_request(
                    format!("{name} must be above 0; send null for the [limits] default"),
                    None,
                ));
            }
            if let Some(value) = value {
                *slot = value;
            }
        }
        Ok(out)
    }
}

/// A key's settings of a key in force (config or runtime).
pub fn settings_of(key: &ClientKey) -> KeySettings {
    KeySettings {
        policy: key.policy.clone(),
        requests_per_minute: key.requests_per_minute,
        concurrent_requests: key.concurrent_requests,
    }
}

/// Token usage of every key in the three windows a budget counts: today, this month
/// (UTC) and ever.
#[derive(Default)]
pub struct Usage {
    pub day: HashMap<String, UsageRow>,
    pub month: HashMap<String, UsageRow>,
    pub total: HashMap<String, UsageRow>,
}

fn window(rows: &HashMap<String, UsageRow>, name: &str) -> Value {
    let row = rows.get(name).cloned().unwrap_or_default();
    json!({
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "tokens": row.input_tokens + row.output_tokens,
        "requests": row.requests,
    })
}

/// One key as the admin API shows it: name, origin, settings and usage; never the key
/// nor its digest.
pub fn view(
    name: &str,
    origin: KeyOrigin,
    settings: &KeySettings,
    stored: Option<&StoredKey>,
    usage: &Usage,
) -> Value {
    let p = &settings.policy;
    json!({
        "object": "api_key",
        "name": name,
        "origin": origin,
        "models": p.models.clone().unwrap_or_else(|| vec!["*".into()]),
        "tokens_per_day": p.tokens_per_day,
        "tokens_per_month": p.tokens_per_month,
        "tokens_total": p.tokens_total,
        "expires_at": p.expires_at.map(crate::wire::time::rfc3339),
        "disabled": p.disabled,
        "requests_per_minute": settings.requests_per_minute,
        "concurrent_requests": settings.concurrent_requests,
        "created_at": stored.map(|s| s.created_at),
        "updated_at": stored.map(|s| s.updated_at),
        "usage": {
            "day": window(&usage.day, name),
            "month": window(&usage.month, name),
            "total": window(&usage.total, name),
        },
    })
}
