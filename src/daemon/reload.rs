//! SIGHUP: re-read every key source and swap the key set atomically, or keep the old one;
//! the same for the listener's certificate, the upstreams with their routing (health kept
//! by name) and each upstream's TLS files.
//!
//! The re-read runs on its own thread under a deadline, never on the async workers: a
//! key or config file on a hung filesystem delays nothing but the reload itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::api::state::AppState;
use crate::config;
use crate::config::keys::{self, Env, KeySet, ProcessEnv};

/// How long one reload may take before it is abandoned (the old keys stay in force).
pub const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("the new key set is empty; a reload never turns authentication off")]
    WouldDisableAuth,
    #[error("the reload did not finish within {} s; a key or config file may be on a hung filesystem", RELOAD_DEADLINE.as_secs())]
    TimedOut,
    #[error("an earlier reload is still running (stuck reading a file); this one is skipped")]
    StillRunning,
    #[error("the reload thread could not start: {0}")]
    Thread(String),
}

/// Re-reads API_SERVER_KEY_FILE, $CREDENTIALS_DIRECTORY/api_server_key and the config
/// file's [[keys]], applying the same policy as startup. Blocking, and it swaps nothing:
/// [`Reloader::reload`] installs the result only if it arrives within the deadline.
pub fn fresh_keys(state: &AppState, env: &dyn Env) -> Result<KeySet, ReloadError> {
    let entries = config::reread_key_entries(state.config.config_path.as_deref())?;
    let fresh: KeySet = keys::load(env, &entries)?;
    if fresh.is_empty() && !state.keys.load().is_empty() {
        return Err(ReloadError::WouldDisableAuth);
    }
    Ok(fresh)
}

/// Re-reads the listener's certificate and key and every upstream's `ca_file` and
/// client certificate (blocking). Each is swapped only when good; each outcome is logged.
pub fn reload_tls(state: &AppState) {
    if let Some(tls) = &state.tls {
        match tls.reload() {
            Ok(()) => tracing::info!("TLS certificate reloaded"),
            Err(err) => tracing::error!(
                error = %err,
                "TLS certificate reload rejected; the previous certificate and key stay in force"
            ),
        }
    }
    for (upstream, outcome) in state.upstreams.reload_tls() {
        match outcome {
            Ok(()) => tracing::info!(%upstream, "upstream TLS files reloaded"),
            Err(err) => tracing::error!(
                %upstream,
                error = %err,
                "upstream TLS reload rejected; its previous TLS settings stay in force"
            ),
        }
    }
}

/// Re-reads `[[upstreams]]` and `[routing]` and swaps in the new upstreams, pools and
/// strategies (blocking). Upstreams whose name is unchanged keep their health: an open
/// one stays open. Anything invalid is logged and the previous upstreams stay.
pub fn reload_upstreams(state: &AppState) {
    if state.config.config_path.is_none() {
        return; // nothing to re-read: the upstreams came from flags
    }
    let built = config::reread_upstreams(&state.config)
        .map_err(|e| e.to_string())
        .and_then(|(upstreams, routing)| {
            let count = upstreams.len();
            let swapped = state.upstreams.reload(&upstreams, &routing);
            swapped.map(|()| count).map_err(|e| e.to_string())
        });
    match built {
        Ok(upstreams) => tracing::info!(upstreams, "upstreams and routing reloaded"),
        Err(error) => tracing::error!(
            %error,
            "upstream reload rejected; the previous upstreams and routing stay in force"
        ),
    }
}

/// Runs reloads one at a time on a detached thread (not tokio's blocking pool, whose
/// threads would hold up shutdown), each under [`RELOAD_DEADLINE`].
#[derive(Default)]
pub struct Reloader {
    running: Arc<AtomicBool>,
}

impl Reloader {
    /// On success the new set takes effect for the next request and is returned (for its
    /// warnings); on any error, including the deadline, the old set stays in force.
    pub async fn reload(&self, state: &AppState) -> Result<Arc<KeySet>, ReloadError> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(ReloadError::StillRunning);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let running = self.running.clone();
        let worker = state.clone();
        let spawned = std::thread::Builder::new()
            .name("key-reload".into())
            .spawn(move || {
                let result = fresh_keys(&worker, &ProcessEnv);
                reload_upstreams(&worker);
                reload_tls(&worker);
                running.store(false, Ordering::Release);
                let _ = tx.send(result);
            });
        if let Err(err) = spawned {
            self.running.store(false, Ordering::Release);
            return Err(ReloadError::Thread(err.to_string()));
        }
        match tokio::time::timeout(RELOAD_DEADLINE, rx).await {
            Ok(Ok(result)) => {
                let fresh = Arc::new(result?);
                state.keys.store(fresh.clone());
                Ok(fresh)
            }
            Ok(Err(_)) => Err(ReloadError::Thread("the reload thread ended early".into())),
            Err(_) => Err(ReloadError::TimedOut),
        }
    }
}
