//! SIGHUP: re-read every key source and swap the key set atomically, or keep the old one.

use std::sync::Arc;

use crate::config;
use crate::keys::{self, Env, KeySet};
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("the new key set is empty; a reload never turns authentication off")]
    WouldDisableAuth,
}

/// Re-reads API_SERVER_KEY_FILE, $CREDENTIALS_DIRECTORY/api_server_key and the config
/// file's [[keys]], applying the same policy as startup. On success the new set takes
/// effect for the next request; on any error the old set stays in force.
pub fn reload_keys(state: &AppState, env: &dyn Env) -> Result<usize, ReloadError> {
    let entries = config::reread_key_entries(state.config.config_path.as_deref())?;
    let fresh: KeySet = keys::load(env, &entries)?;
    if fresh.is_empty() && !state.keys.load().is_empty() {
        return Err(ReloadError::WouldDisableAuth);
    }
    let count = fresh.keys.len();
    state.keys.store(Arc::new(fresh));
    Ok(count)
}
