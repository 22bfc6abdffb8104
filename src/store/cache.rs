//! A bounded, write-through cache of recent session histories, each valid only for the version it was read or written at.
//!
//! Every entry pairs a history with the session's version at that state (`next_seq` and
//! `message_count`, which every commit and item delete change in the same transaction as
//! the messages). A turn's lease returns the row's current version (`UPDATE … RETURNING`), and the
//! cached history is used only when the two are equal, so another instance's write on a
//! shared PostgreSQL (or anything else that changed the row) makes the entry a miss, and
//! the history is read from the database as before. Deletes drop entries only to free
//! memory early: a deleted session has no row, so its lease is refused before any read.
//!
//! Stored responses' contexts share the cache under their response ids, at one fixed
//! version: a response's context never changes, and its row is checked before an entry
//! is used (`chain.rs`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{History, Version};

/// What all cached histories may hold together (their stored bytes).
const BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// A history larger than this is never cached: it would push out too many others.
const MAX_ENTRY_BYTES: usize = BUDGET_BYTES / 16;

struct Entry {
    owner: String,
    version: Version,
    history: History,
}

#[derive(Default)]
pub struct HistoryCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

impl Inner {
    fn remove(&mut self, id: &str) {
        if let Some(old) = self.entries.remove(id) {
            self.bytes -= old.history.bytes;
        }
    }

    fn insert(&mut self, id: &str, entry: Entry) {
        self.remove(id);
        if entry.history.bytes > MAX_ENTRY_BYTES {
            return;
        }
        // Over budget: drop entries in the map's (arbitrary) order until it fits.
        while self.bytes + entry.history.bytes > BUDGET_BYTES {
            let Some(victim) = self.entries.keys().next().cloned() else {
                break;
            };
            self.remove(&victim);
        }
        self.bytes += entry.history.bytes;
        self.entries.insert(id.to_string(), entry);
    }
}

impl HistoryCache {
    /// The history of `id` at `version`, if cached for that version and owner.
    pub fn get(&self, id: &str, owner: &str, version: Version) -> Option<History> {
        let inner = self.inner.lock().ok()?;
        let entry = inner.entries.get(id)?;
        (entry.version == version && entry.owner == owner).then(|| entry.history.clone())
    }

    /// Removes and returns the history of `id` at `version`, if cached for that version and
    /// owner: for a new state built on it, with no copy.
    pub fn take(&self, id: &str, owner: &str, version: Version) -> Option<History> {
        let mut inner = self.inner.lock().ok()?;
        let entry = inner.entries.get(id)?;
        if entry.version != version || entry.owner != owner {
            return None;
        }
        let entry = inner.entries.remove(id)?;
        inner.bytes -= entry.history.bytes;
        Some(entry.history)
    }

    /// Remembers `history` as the state of `id` at `version` (read from the database).
    pub fn put(&self, id: &str, owner: &str, version: Version, history: History) {
        if let Ok(mut inner) = self.inner.lock() {
            let owner = owner.to_string();
            inner.insert(
                id,
                Entry {
                    owner,
                    version,
                    history,
                },
            );
        }
    }

    /// A committed turn moved `id` from version `before` to `after` by appending
    /// `messages`. An entry for `before` becomes the entry for `after`; any other entry
    /// is stale and dropped.
    pub fn append(&self, id: &str, before: Version, after: Version, messages: &[String]) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some(mut entry) = inner.entries.remove(id) else {
            return;
        };
        inner.bytes -= entry.history.bytes;
        if entry.version != before {
            return;
        }
        entry.version = after;
        entry.history.messages.extend(messages.iter().cloned());
        entry.history.bytes += messages.iter().map(String::len).sum::<usize>();
        inner.insert(id, entry);
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.remove(id);
        }
    }

    pub fn clear(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            *inner = Inner::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(messages: &[&str]) -> History {
        let messages: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
        History {
            system: None,
            bytes: messages.iter().map(String::len).sum(),
            messages,
        }
    }

    #[test]
    fn an_entry_serves_only_its_version_and_owner() {
        let cache = HistoryCache::default();
        cache.put("s", "k", (2, 2), history(&["a", "b"]));
        assert!(cache.get("s", "k", (3, 3)).is_none());
        assert!(cache.get("s", "other", (2, 2)).is_none());
        assert_eq!(cache.get("s", "k", (2, 2)).unwrap().messages, ["a", "b"]);
        cache.append("s", (2, 2), (4, 4), &["c".into(), "d".into()]);
        assert!(cache.get("s", "k", (2, 2)).is_none());
        let now = cache.get("s", "k", (4, 4)).unwrap();
        assert_eq!((now.messages.len(), now.bytes), (4, 4));
        // A commit from a version the entry does not hold drops it.
        cache.append("s", (5, 4), (6, 5), &["x".into()]);
        assert!(cache.get("s", "k", (6, 5)).is_none());
        assert!(cache.get("s", "k", (4, 4)).is_none());
        assert_eq!(cache.inner.lock().unwrap().bytes, 0);
    }

    #[test]
    fn take_moves_an_entry_out_for_its_version_and_owner_only() {
        let cache = HistoryCache::default();
        cache.put("r", "k", (-1, -1), history(&["a", "b"]));
        assert!(cache.take("r", "other", (-1, -1)).is_none());
        assert!(cache.take("r", "k", (0, 0)).is_none());
        assert_eq!(cache.take("r", "k", (-1, -1)).unwrap().messages, ["a", "b"]);
        assert!(cache.get("r", "k", (-1, -1)).is_none());
        assert_eq!(cache.inner.lock().unwrap().bytes, 0);
    }

    #[test]
    fn the_budget_holds() {
        let cache = HistoryCache::default();
        let big = "x".repeat(MAX_ENTRY_BYTES);
        for i in 0..40 {
            cache.put(&format!("s{i}"), "k", (0, 0), history(&[big.as_str()]));
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.bytes <= BUDGET_BYTES);
        assert_eq!(inner.bytes, inner.entries.len() * MAX_ENTRY_BYTES);
        drop(inner);
        cache.put(
            "huge",
            "k",
            (0, 0),
            history(&[&"y".repeat(MAX_ENTRY_BYTES + 1)]),
        );
        assert!(cache.get("huge", "k", (0, 0)).is_none());
    }
}
