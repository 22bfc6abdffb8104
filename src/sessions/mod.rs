//! Server-side conversation sessions: types, ids, limits and the store over SQLite or PostgreSQL.

mod assemble;
mod store;

use std::collections::BTreeMap;

pub use assemble::{message_from_reply, ReplyAssembler};
pub use store::SessionStore;

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
    /// The history as a comma-separated list of JSON message objects, system first.
    pub fn to_json_list(&self) -> String {
        let mut parts = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = &self.system {
            parts.push(serde_json::json!({"role": "system", "content": system}).to_string());
        }
        parts.extend(self.messages.iter().cloned());
        parts.join(",")
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
    #[error("session storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("session storage migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("session storage setup failed: {0}")]
    Setup(String),
}

/// `sess_` + 128 random bits as 32 lowercase hex characters. Never derived from content.
pub fn new_session_id() -> Result<String, SessionError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| SessionError::Setup(e.to_string()))?;
    Ok(format!("sess_{}", hex::encode(bytes)))
}

/// The id if it is well-formed, so storage is never asked about arbitrary strings.
pub fn parse_session_id(id: &str) -> Result<&str, SessionError> {
    if is_valid_session_id(id) {
        Ok(id)
    } else {
        Err(SessionError::InvalidId)
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

/// Per-session limits from `[sessions]`.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
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
}
