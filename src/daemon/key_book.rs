//! The keys in force: config keys (file and environment) plus runtime keys from the store, merged into the one `KeySet` the auth layer reads, and the poller that keeps the runtime half fresh.
//!
//! Two writers feed it: a SIGHUP reload replaces the config half, the poller the runtime
//! half. Either one republishes the merge, so a reload never drops the runtime keys and
//! a poll never brings back a key the file no longer has.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::keys::{ClientKey, KeyOrigin, KeySet};
use crate::store::{SessionStore, StoredKey};

/// How often the runtime keys are read again: a key created or revoked on any instance
/// sharing the store is in force everywhere within this (plus one read).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

pub struct KeyBook {
    config: ArcSwap<KeySet>,
    runtime: ArcSwap<Vec<Arc<ClientKey>>>,
    /// What the auth layer reads (the `AppState`'s key set).
    published: Arc<ArcSwap<KeySet>>,
    /// Serialises publishing, and remembers the name clashes already logged.
    clashes: Mutex<HashSet<String>>,
}

impl KeyBook {
    /// A book over `published`, whose current content is the config half.
    pub fn new(published: Arc<ArcSwap<KeySet>>) -> Arc<KeyBook> {
        Arc::new(KeyBook {
            config: ArcSwap::new(published.load_full()),
            runtime: ArcSwap::from_pointee(Vec::new()),
            published,
            clashes: Mutex::new(HashSet::new()),
        })
    }

    /// The config-file and environment keys alone (what a reload compares against).
    pub fn config_keys(&self) -> Arc<KeySet> {
        self.config.load_full()
    }

    /// A reload's new config keys, published with the runtime keys kept.
    pub fn set_config(&self, keys: KeySet) {
        self.config.store(Arc::new(keys));
        self.publish();
    }

    fn set_runtime(&self, keys: Vec<Arc<ClientKey>>) {
        self.runtime.store(Arc::new(keys));
        self.publish();
    }

    fn publish(&self) {
        let Ok(mut logged) = self.clashes.lock() else {
            return;
        };
        let (merged, clashes) = merge(&self.config.load(), &self.runtime.load());
        for name in clashes {
            if logged.insert(name.clone()) {
                tracing::warn!(
                    key = %name,
                    "a runtime key has the name of a key in the config file; the config key \
                     wins and the runtime key is not accepted. Revoke it and create it again \
                     under another name"
                );
            }
        }
        self.published.store(Arc::new(merged));
    }

    /// Reads the runtime keys once (so they are in force before the first request),
    /// then every [`POLL_INTERVAL`] until `shutdown`. A failed read keeps the keys last
    /// read (never an empty set), logged once per outage.
    pub async fn start_polling(
        self: Arc<Self>,
        store: Arc<SessionStore>,
        shutdown: CancellationToken,
    ) {
        let mut failing = self.refresh(&store, false).await;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                }
                failing = self.refresh(&store, failing).await;
            }
        });
    }

    /// One read of the runtime keys, published with the config keys. Returns whether
    /// the store is failing now; `failing` says whether it was (an outage is logged at
    /// its start and end only). On failure the keys read last stay.
    pub async fn refresh(&self, store: &SessionStore, failing: bool) -> bool {
        match store.list_keys().await {
            Ok(stored) => {
                if failing {
                    tracing::info!("runtime keys can be read from the store again");
                }
                self.set_runtime(stored.into_iter().map(runtime_key).collect());
                false
            }
            Err(error) => {
                if !failing {
                    tracing::error!(
                        %error,
                        "cannot read the runtime keys from the store; the keys read last \
                         stay in force until it answers again"
                    );
                }
                true
            }
        }
    }
}

/// A stored key as the auth layer takes it.
pub fn runtime_key(stored: StoredKey) -> Arc<ClientKey> {
    Arc::new(ClientKey {
        name: stored.name,
        digest: stored.digest,
        requests_per_minute: stored.settings.requests_per_minute,
        concurrent_requests: stored.settings.concurrent_requests,
        policy: stored.settings.policy,
        origin: KeyOrigin::Runtime,
    })
}

/// Config keys, then the runtime keys whose names (and digests) no config key has.
/// Returns the names of the runtime keys left out.
pub fn merge(config: &KeySet, runtime: &[Arc<ClientKey>]) -> (KeySet, Vec<String>) {
    let mut keys = config.keys.clone();
    let mut clashes = Vec::new();
    for key in runtime {
        let taken = config
            .keys
            .iter()
            .any(|c| c.name == key.name || c.digest == key.digest);
        if taken {
            clashes.push(key.name.clone());
        } else {
            keys.push(key.clone());
        }
    }
    let merged = KeySet {
        keys,
        warnings: config.warnings.clone(),
    };
    (merged, clashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, byte: u8, origin: KeyOrigin) -> Arc<ClientKey> {
        Arc::new(ClientKey {
            name: name.into(),
            digest: [byte; 32],
            requests_per_minute: None,
            concurrent_requests: None,
            policy: Default::default(),
            origin,
        })
    }

    #[test]
    fn config_keys_win_a_name_clash() {
        let config = KeySet {
            keys: vec![key("ops", 1, KeyOrigin::Config)],
            warnings: vec![],
        };
        let runtime = [
            key("ops", 2, KeyOrigin::Runtime),
            key("team-a", 3, KeyOrigin::Runtime),
        ];
        let (merged, clashes) = merge(&config, &runtime);
        assert_eq!(merged.names(), vec!["ops", "team-a"]);
        assert_eq!(merged.keys[0].digest, [1; 32]);
        assert_eq!(clashes, vec!["ops".to_string()]);
    }

    #[test]
    fn a_reload_keeps_the_runtime_keys() {
        let published = Arc::new(ArcSwap::from_pointee(KeySet::default()));
        let book = KeyBook::new(published.clone());
        book.set_runtime(vec![key("team-a", 3, KeyOrigin::Runtime)]);
        book.set_config(KeySet {
            keys: vec![key("ops", 1, KeyOrigin::Config)],
            warnings: vec![],
        });
        assert_eq!(published.load().names(), vec!["ops", "team-a"]);
        assert_eq!(book.config_keys().names(), vec!["ops"]);
    }
}
