//! Runtime keys as stored (`api_keys`): a name, the key's SHA-256 and its policy as JSON; never the key itself.

use sqlx::Row;

use super::{now, SessionError, SessionStore};
use crate::config::keys::{KeyDigest, KeyPolicy, KeySettings};

/// One runtime key as the store holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub name: String,
    pub digest: KeyDigest,
    pub settings: KeySettings,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("name", &self.name)
            .field("digest", &"[REDACTED]")
            .field("settings", &self.settings)
            .finish()
    }
}

/// The `policy` column: every setting of the key, each optional, so a row written by
/// an older gatewayd still reads (missing fields are "no limit").
#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
struct PolicyJson {
    models: Option<Vec<String>>,
    tokens_per_day: Option<u64>,
    tokens_per_month: Option<u64>,
    tokens_total: Option<u64>,
    expires_at: Option<i64>,
    disabled: bool,
    requests_per_minute: Option<u32>,
    concurrent_requests: Option<u32>,
}

impl From<&KeySettings> for PolicyJson {
    fn from(s: &KeySettings) -> Self {
        let p = &s.policy;
        PolicyJson {
            models: p.models.clone(),
            tokens_per_day: p.tokens_per_day,
            tokens_per_month: p.tokens_per_month,
            tokens_total: p.tokens_total,
            expires_at: p.expires_at,
            disabled: p.disabled,
            requests_per_minute: s.requests_per_minute,
            concurrent_requests: s.concurrent_requests,
        }
    }
}

impl From<PolicyJson> for KeySettings {
    fn from(j: PolicyJson) -> Self {
        KeySettings {
            policy: KeyPolicy {
                models: j.models,
                tokens_per_day: j.tokens_per_day,
                tokens_per_month: j.tokens_per_month,
                tokens_total: j.tokens_total,
                expires_at: j.expires_at,
                disabled: j.disabled,
            },
            requests_per_minute: j.requests_per_minute,
            concurrent_requests: j.concurrent_requests,
        }
    }
}

fn policy_text(settings: &KeySettings) -> Result<String, SessionError> {
    serde_json::to_string(&PolicyJson::from(settings))
        .map_err(|e| SessionError::Setup(format!("cannot encode a key policy: {e}")))
}

/// What creating a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// A key with this name (or, in practice never, this digest) is already stored.
    Exists,
}

impl SessionStore {
    /// Stores a new runtime key by its digest. An existing name is left as it is.
    pub async fn create_key(
        &self,
        name: &str,
        digest: &KeyDigest,
        settings: &KeySettings,
    ) -> Result<Created, SessionError> {
        let at = now().0;
        let insert = sqlx::query(
            "INSERT INTO api_keys (name, sha256, policy, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
        )
        .bind(name.to_string())
        .bind(hex::encode(digest))
        .bind(policy_text(settings)?)
        .bind(at);
        Ok(match self.writer.execute("create", insert).await? {
            0 => Created::Exists,
            _ => Created::Created,
        })
    }

    /// Every runtime key, by name. Not logged here: the key poller reads this every few
    /// seconds and reports an outage once, not on every try.
    pub async fn list_keys(&self) -> Result<Vec<StoredKey>, SessionError> {
        let rows = sqlx::query(
            "SELECT name, sha256, policy, created_at, updated_at FROM api_keys ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_key).collect()
    }

    /// One runtime key by name.
    pub async fn get_key(&self, name: &str) -> Result<Option<StoredKey>, SessionError> {
        let row = sqlx::query(
            "SELECT name, sha256, policy, created_at, updated_at FROM api_keys WHERE name = $1",
        )
        .bind(name.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.writer.failed("read", e.into()))?;
        row.as_ref().map(stored_key).transpose()
    }

    /// Replaces a runtime key's settings; `false` when no key has that name.
    pub async fn update_key(
        &self,
        name: &str,
        settings: &KeySettings,
    ) -> Result<bool, SessionError> {
        let update =
            sqlx::query("UPDATE api_keys SET policy = $1, updated_at = $2 WHERE name = $3")
                .bind(policy_text(settings)?)
                .bind(now().0)
                .bind(name.to_string());
        Ok(self.writer.execute("append", update).await? > 0)
    }

    /// Revokes a runtime key; `false` when no key has that name.
    pub async fn delete_key(&self, name: &str) -> Result<bool, SessionError> {
        let delete = sqlx::query("DELETE FROM api_keys WHERE name = $1").bind(name.to_string());
        Ok(self.writer.execute("delete", delete).await? > 0)
    }
}

fn stored_key(row: &sqlx::any::AnyRow) -> Result<StoredKey, SessionError> {
    let name: String = row.try_get("name")?;
    let hex_digest: String = row.try_get("sha256")?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&hex_digest, &mut digest)
        .map_err(|_| SessionError::Setup(format!("stored key {name:?} has a malformed digest")))?;
    let policy: String = row.try_get("policy")?;
    let json: PolicyJson = serde_json::from_str(&policy).map_err(|e| {
        SessionError::Setup(format!("stored key {name:?} has an unreadable policy: {e}"))
    })?;
    Ok(StoredKey {
        name,
        digest,
        settings: json.into(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
