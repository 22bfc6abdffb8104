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
use std::mem::size_of;
use std::sync::{Arc, Mutex};

use super::{History, Version};

/// `[sessions] cache_bytes` when not set: what all entries may hold together.
pub const DEFAULT_BUDGET_BYTES: u64 = 64 * 1024 * 1024;
/// What one entry costs besides its texts: the map's slot and hash, the entry, the
/// shared history's header and the allocator's rounding (measured, rounded up).
const ENTRY_OVERHEAD: usize = 192;

struct Entry {
    owner: String,
    version: Version,
    /// Shared with the turns reading it: a hit hands out a reference, not a copy.
    history: Arc<History>,
    /// What the entry holds in memory, counted against the budget.
    footprint: usize,
}

/// The memory an entry for `id` holding `history` takes: every text (id, owner, system
/// prompt, messages), each message's string header, and the fixed overhead.
fn footprint(id: &str, owner: &str, history: &History) -> usize {
    let texts = id.len()
        + owner.len()
        + history.system.as_ref().map_or(0, String::len)
        + history.messages.iter().map(String::capacity).sum::<usize>();
    texts + history.messages.capacity() * size_of::<String>() + ENTRY_OVERHEAD
}

pub struct HistoryCache {
    inner: Mutex<Inner>,
    /// What all entries may hold together (`[sessions] cache_bytes`); 0 caches nothing.
    budget: usize,
}

impl Default for HistoryCache {
    fn default() -> Self {
        HistoryCache::with_budget(DEFAULT_BUDGET_BYTES)
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

impl Inner {
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let old = self.entries.remove(id)?;
        self.bytes -= old.footprint;
        Some(old)
    }

    fn insert(&mut self, id: &str, mut entry: Entry, budget: usize) {
        self.remove(id);
        entry.footprint = footprint(id, &entry.owner, &entry.history);
        // A history larger than a sixteenth of the budget is never cached: it would push
        // out too many others.
        if entry.footprint > budget / 16 {
            return;
        }
        // Over budget: drop entries in the map's (arbitrary) order until it fits.
        while self.bytes + entry.footprint > budget {
            let Some(victim) = self.entries.keys().next().cloned() else {
                break;
            };
            self.remove(&victim);
        }
        self.bytes += entry.footprint;
        self.entries.insert(id.to_string(), entry);
    }
}

impl HistoryCache {
    /// A cache holding at most `budget` bytes of entries (0: nothing is cached).
    pub fn with_budget(budget: u64) -> Self {
        HistoryCache {
            inner: Mutex::default(),
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
        }
    }

    /// The history of `id` at `version`, if cached for that version and owner.
    pub fn get(&self, id: &str, owner: &str, version: Version) -> Option<Arc<History>> {
        let inner = self.inner.lock().ok()?;
        let entry = inner.entries.get(id)?;
        (entry.version == version && entry.owner == owner).then(|| entry.history.clone())
    }

    /// The version `id` is cached at, if cached for `owner`.
    pub fn version(&self, id: &str, owner: &str) -> Option<Version> {
        let inner = self.inner.lock().ok()?;
        let entry = inner.entries.get(id)?;
        (entry.owner == owner).then_some(entry.version)
    }

    /// Removes and returns the history of `id` at `version`, if cached for that version and
    /// owner: for a new state built on it, with no copy unless a turn still reads it.
    pub fn take(&self, id: &str, owner: &str, version: Version) -> Option<History> {
        let mut inner = self.inner.lock().ok()?;
        let entry = inner.entries.get(id)?;
        if entry.version != version || entry.owner != owner {
            return None;
        }
        let entry = inner.remove(id)?;
        drop(inner);
        Some(Arc::unwrap_or_clone(entry.history))
    }

    /// Remembers `history` as the state of `id` at `version` (read from the database).
    pub fn put(&self, id: &str, owner: &str, version: Version, history: Arc<History>) {
        if self.budget == 0 {
            return;
        }
        if let Ok(mut inner) = self.inner.lock() {
            let entry = Entry {
                owner: owner.to_string(),
                version,
                history,
                footprint: 0,
            };
            inner.insert(id, entry, self.budget);
        }
    }

    /// A committed turn moved `id` from version `before` to `after` by appending
    /// `messages`. An entry for `before` becomes the entry for `after` (copied only if a
    /// turn still reads the old one); any other entry is stale and dropped.
    pub fn append(&self, id: &str, before: Version, after: Version, messages: &[String]) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some(mut entry) = inner.remove(id) else {
            return;
        };
        if entry.version != before {
            return;
        }
        entry.version = after;
        let history = Arc::make_mut(&mut entry.history);
        history.messages.extend(messages.iter().cloned());
        history.bytes += messages.iter().map(String::len).sum::<usize>();
        inner.insert(id, entry, self.budget);
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

    fn history(messages: &[&str]) -> Arc<History> {
        let messages: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
        Arc::new(History {
            system: None,
            bytes: messages.iter().map(String::len).sum(),
            messages,
        })
    }

    #[test]
    fn an_entry_serves_only_its_version_and_owner() {
        let cache = HistoryCache::default();
        cache.put("s", "k", (2, 2), history(&["a", "b"]));
        assert!(cache.get("s", "k", (3, 3)).is_none());
        assert!(cache.get("s", "other", (2, 2)).is_none());
        assert_eq!(cache.version("s", "k"), Some((2, 2)));
        assert_eq!(cache.version("s", "other"), None);
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
    fn a_hit_shares_the_history_and_an_append_leaves_a_reader_s_copy_alone() {
        let cache = HistoryCache::default();
        cache.put("s", "k", (1, 1), history(&["a"]));
        let first = cache.get("s", "k", (1, 1)).unwrap();
        let second = cache.get("s", "k", (1, 1)).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "a hit copies nothing");
        cache.append("s", (1, 1), (2, 2), &["b".into()]);
        assert_eq!(
            first.messages,
            ["a"],
            "a turn's history does not change under it"
        );
        drop((first, second));
        let after = cache.get("s", "k", (2, 2)).unwrap();
        let ptr = Arc::as_ptr(&after);
        drop(after);
        // With no reader left, the next append grows the entry in place.
        cache.append("s", (2, 2), (3, 3), &["c".into()]);
        let last = cache.get("s", "k", (3, 3)).unwrap();
        assert_eq!(Arc::as_ptr(&last), ptr);
        assert_eq!(last.messages, ["a", "b", "c"]);
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
    fn the_budget_counts_real_bytes_and_holds() {
        let budget = 64 * 1024;
        let cache = HistoryCache::with_budget(budget);
        let text = "x".repeat(1000);
        for i in 0..200 {
            cache.put(
                &format!("s{i}"),
                "k",
                (0, 0),
                history(&[text.as_str(), "y"]),
            );
        }
        let inner = cache.inner.lock().unwrap();
        let one = footprint("s100", "k", &history(&[text.as_str(), "y"]));
        // Texts, two string headers and the entry's overhead, not the text alone.
        assert_eq!(one, 4 + 1 + 1001 + 2 * size_of::<String>() + ENTRY_OVERHEAD);
        assert!(inner.bytes <= budget as usize);
        assert!(inner.entries.len() < 64, "{} entries", inner.entries.len());
        assert!(inner.entries.len() >= 50, "{} entries", inner.entries.len());
        let counted: usize = inner.entries.values().map(|e| e.footprint).sum();
        assert_eq!(inner.bytes, counted);
        drop(inner);
        // An entry above a sixteenth of the budget is not cached.
        let huge = "z".repeat(budget as usize / 16);
        cache.put("huge", "k", (0, 0), history(&[huge.as_str()]));
        assert!(cache.get("huge", "k", (0, 0)).is_none());
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = HistoryCache::with_budget(0);
        cache.put("s", "k", (1, 1), history(&["a"]));
        assert!(cache.get("s", "k", (1, 1)).is_none());
        assert_eq!(cache.version("s", "k"), None);
    }
}
