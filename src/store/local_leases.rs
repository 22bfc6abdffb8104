//! SQLite's session leases, held in this process's memory: one lock per session with a turn running or waiting.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Mutex;

/// SQLite's leases: one lock per session with a turn running or waiting.
#[derive(Default)]
pub struct LocalLeases(DashMap<String, Arc<Mutex<()>>>);

impl LocalLeases {
    /// The lock of session `id`, made on first use.
    pub fn lock_of(&self, id: &str) -> Arc<Mutex<()>> {
        self.0.entry(id.to_string()).or_default().clone()
    }

    /// Drops the session's lock once nobody holds or waits for it.
    pub fn forget_if_idle(&self, id: &str) {
        self.0.remove_if(id, |_, lock| Arc::strong_count(lock) == 1);
    }
}
