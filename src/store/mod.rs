//! Server-side conversation sessions: types, ids, storage errors and the store over SQLite or PostgreSQL.

mod api_keys;
mod cache;
mod chain;
mod group;
mod group_pg;
mod group_sql;
mod group_sqlite;
mod headroom;
mod items;
mod lease;
mod local_leases;
mod native;
mod response_commit;
mod response_links;
mod responses;
mod retention;
mod sessions;
mod spend;
mod sqlite_files;
mod sqlite_pool;
mod turns;
mod usage;
mod usage_write;
mod writer;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::wire::error::ApiError;

pub use crate::config::SessionLimits;
pub use api_keys::{Created, StoredKey};
pub use cache::DEFAULT_BUDGET_BYTES as DEFAULT_CACHE_BYTES;
pub use items::StoredItem;
pub use lease::SessionLease;
pub use responses::StoredResponse;
pub use sessions::{SessionStore, StoredMessage};
pub use spend::Spent;
pub use usage::{is_day, GroupBy, UsageFilter, UsageRow};
pub use usage_write::{TokenCounts, FLUSH_EVERY};

/// A session as listed: no messages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    pub id: String,
    pub object: &'static str,
    pub created_at: i64,
    pub metadata: BTreeMap<String, String>,
}

/// Stored history for a continuation: the system prompt, then messages as raw JSON.
#[derive(Debug, Clone)]
pub struct History {
    pub system: Option<String>,
    pub messages: Vec<String>,
    pub bytes: usize,
}

impl History {
    /// The history as chat messages (JSON text), the system prompt first.
    pub fn to_messages(&self) -> Vec<String> {
        let mut parts = Vec::with_capacity(self.messages.len() + 1);
        parts.extend(self.system_message());
        parts.extend(self.messages.iter().cloned());
        parts
    }

    /// The history as a comma-separated list of JSON message objects, system first,
    /// written once into a string of the right size.
    pub fn to_json_list(&self) -> String {
        let system = self.system_message();
        let parts = system.iter().chain(self.messages.iter());
        let size = parts.clone().map(|m| m.len() + 1).sum::<usize>();
        let mut list = String::with_capacity(size);
        for (i, message) in parts.enumerate() {
            if i > 0 {
                list.push(',');
            }
            list.push_str(message);
        }
        list
    }

    /// The system prompt as a chat message (JSON text), if there is one.
    fn system_message(&self) -> Option<String> {
        let system = self.system.as_ref()?;
        Some(serde_json::json!({"role": "system", "content": system}).to_string())
    }

    /// No system prompt and no messages: nothing to continue.
    pub fn is_empty(&self) -> bool {
        self.system.is_none() && self.messages.is_empty()
    }
}

/// A Responses API response as stored with its turn (see [`SessionStore::commit`]).
///
/// Responses form chains: a response keeps the id of the one it continues and only the
/// messages it added, and its context is rebuilt by walking the chain (`chain.rs`). One
/// made in a conversation is linked to the conversation's messages before it instead.
#[derive(Debug, Clone, Default)]
pub struct ResponseRecord {
    pub id: String,
    pub created_at: i64,
    /// The response this one continues (`previous_response_id`); `None` starts a chain.
    pub parent: Option<String>,
    /// JSON array of the chat messages this response adds: its input, then its output.
    pub context: String,
    /// JSON array of the turn's input items, for `GET /v1/responses/{id}/input_items`.
    pub input_items: String,
    /// The response object as the client received it.
    pub response: String,
    /// `[responses] max_bytes_per_key` for the turn: what its owner's stored responses
    /// may hold together once it is in; 0 = no limit.
    pub max_owner_bytes: u64,
}

impl ResponseRecord {
    /// What the record stores, counted against its owner's quota.
    pub fn bytes(&self) -> u64 {
        (self.context.len() + self.input_items.len() + self.response.len()) as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session not found")]
    NotFound,
    #[error("malformed session id")]
    InvalidId,
    #[error("{0}")]
    LimitExceeded(String),
    /// Another continuation of the session held it for longer than `busy_timeout`.
    #[error("session is busy with another turn")]
    Busy,
    /// The owner already has `max_sessions_per_key` sessions.
    #[error("session quota of {0} reached")]
    QuotaReached(usize),
    /// The owner's stored responses would pass `[responses] max_bytes_per_key` (bytes).
    #[error("stored responses quota of {0} bytes reached")]
    ResponseQuota(u64),
    /// The response a turn continues was deleted or expired before the turn was stored.
    #[error("the previous response is no longer stored")]
    PreviousResponseGone,
    /// The turn's lease expired and another continuation took the session over.
    #[error("session lease lost before the turn was stored")]
    LeaseLost,
    #[error("session storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("session storage migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("session storage setup failed: {0}")]
    Setup(String),
    /// Another process (a running gatewayd) holds the SQLite data dir's owner lock.
    #[error(
        "the data dir {0} is in use by another gatewayd process. SQLite sessions serve one \
             instance; give each instance its own --data-dir, or share sessions through \
             PostgreSQL ([sessions] database_url)"
    )]
    InUse(String),
}

/// `sess_` + 128 random bits as 32 lowercase hex characters. Never derived from content.
pub fn new_session_id() -> Result<String, SessionError> {
    Ok(format!("sess_{}", random_hex()?))
}

/// The id if it is well-formed, so storage is never asked about arbitrary strings.
pub fn parse_session_id(id: &str) -> Result<&str, SessionError> {
    if is_valid_session_id(id) {
        Ok(id)
    } else {
        Err(SessionError::InvalidId)
    }
}

/// A conversation is a session: `conv_<hex>` names the session `sess_<hex>` (same 128
/// bits), and a `sess_` id is accepted as a conversation id too.
pub fn session_id_of_conversation(id: &str) -> Result<String, SessionError> {
    let session = match id.strip_prefix("conv_") {
        Some(hex) => format!("sess_{hex}"),
        None => id.to_string(),
    };
    parse_session_id(&session)?;
    Ok(session)
}

/// The conversation id of a session id (`sess_<hex>` → `conv_<hex>`).
pub fn conversation_id_of_session(id: &str) -> String {
    match id.strip_prefix("sess_") {
        Some(hex) => format!("conv_{hex}"),
        None => id.to_string(),
    }
}

pub fn is_valid_session_id(id: &str) -> bool {
    id.strip_prefix("sess_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl SessionError {
    /// True when storage itself failed (as opposed to a refusal such as not found, a
    /// limit or a busy session): counted, logged, and answered with 503.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            SessionError::Storage(_)
                | SessionError::Migration(_)
                | SessionError::Setup(_)
                | SessionError::InUse(_)
        )
    }
}

/// Storage errors as clients see them: unknown and foreign ids get the same 404, so a
/// session's existence is never revealed; storage failures are a 503 `storage_unavailable`
/// (logged, never shown), so a client never mistakes an unstored write for a stored one.
impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::NotFound => ApiError::NotFound {
                message: "No session found with that id.".into(),
                code: Some("session_not_found"),
            },
            SessionError::InvalidId => ApiError::BadRequest {
                message: "Malformed session id: expected 'sess_' followed by 32 hex characters."
                    .into(),
                param: Some("session_id"),
                code: Some("invalid_session_id"),
            },
            SessionError::LimitExceeded(message) => ApiError::PayloadTooLarge(message),
            SessionError::Busy | SessionError::LeaseLost => ApiError::SessionBusy,
            SessionError::QuotaReached(limit) => ApiError::SessionLimitReached(limit),
            SessionError::ResponseQuota(limit) => ApiError::StorageQuotaExceeded(limit),
            SessionError::PreviousResponseGone => ApiError::NotFound {
                message: "No stored response with that previous_response_id: it was deleted or \
                          expired while this turn ran."
                    .into(),
                code: Some("previous_response_not_found"),
            },
            // Counted and logged (operation and cause) where it happened, in the store.
            SessionError::Storage(_)
            | SessionError::Migration(_)
            | SessionError::Setup(_)
            | SessionError::InUse(_) => ApiError::StorageUnavailable,
        }
    }
}

/// A session's state as `(next_seq, message_count)`. A commit raises both, an item
/// delete lowers only the count (so raises `next_seq - message_count`): no two states of
/// a session share a version, and it tells whether a cached history is the stored one.
type Version = (i64, i64);

/// The `[sessions]` limits in force, shared by the store and its committer and swapped
/// whole by a reload.
type LiveLimits = std::sync::Arc<arc_swap::ArcSwap<SessionLimits>>;

/// The refusal of a turn that would pass the session's limits (413).
fn limit_error(limits: SessionLimits) -> SessionError {
    SessionError::LimitExceeded(format!(
        "This session would exceed its limits ({} messages, {} bytes). Start a new session.",
        limits.max_messages, limits.max_bytes
    ))
}

/// Wall-clock time as (seconds, microseconds, milliseconds) since the Unix epoch.
fn now() -> (i64, i64, i64) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    (
        since.as_secs() as i64,
        since.as_micros() as i64,
        since.as_millis() as i64,
    )
}

/// 128 random bits as hex, for session ids and lease tokens.
fn random_hex() -> Result<String, SessionError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| SessionError::Setup(e.to_string()))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_validated() {
        let a = new_session_id().unwrap();
        let b = new_session_id().unwrap();
        assert_ne!(a, b);
        assert!(is_valid_session_id(&a));
        for bad in [
            "",
            "sess_",
            "sess_XYZ",
            "abc",
            &a.to_uppercase(),
            &format!("{a}0"),
            "sess_../../etc",
        ] {
            assert!(!is_valid_session_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_history_lists_its_system_prompt_then_its_messages() {
        let mut history = History {
            system: Some("be \"brief\"".into()),
            messages: vec![r#"{"role":"user","content":"hi"}"#.into(), "{}".into()],
            bytes: 0,
        };
        let list = history.to_json_list();
        assert_eq!(
            list,
            r#"{"content":"be \"brief\"","role":"system"},{"role":"user","content":"hi"},{}"#
        );
        assert_eq!(list, history.to_messages().join(","));
        history.system = None;
        assert_eq!(
            history.to_json_list(),
            r#"{"role":"user","content":"hi"},{}"#
        );
    }
}
