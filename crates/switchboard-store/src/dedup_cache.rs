//! A bounded in-memory copy of recently committed dedup keys.
//!
//! Senders retry soon after the first attempt (Genesys and EventBridge retry within minutes), so
//! nearly every duplicate is a key committed moments ago. Answering those from memory keeps a
//! retry storm off the writer thread: no queue slot, no transaction, no two context switches.
//!
//! The cache is only ever a subset of the `dedup` table: the writer adds a key after the
//! transaction that wrote (or read) it has committed, and nothing deletes a dedup row before it
//! expires. A hit is therefore exactly the answer the table would give; a miss just falls through
//! to the writer. Eviction is first-in, first-out, which for retries is close to LRU and needs
//! no bookkeeping on a hit.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Keys or ids longer than this are not cached (they are answered from the table), so the
/// cache's memory stays near `capacity` × 200 bytes whatever senders put in a delivery-id header.
const MAX_CACHED_BYTES: usize = 256;

/// One committed key: the event that claimed it and when the claim ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedKey {
    pub(crate) key: String,
    pub(crate) event_id: String,
    pub(crate) expires_at_ms: i64,
}

#[derive(Debug)]
pub(crate) struct DedupCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

/// Keys come from senders, so the hasher is seeded per process; foldhash instead of SipHash
/// because every ingest looks a key up here (SipHash of a ~100-byte key was 1 % of ingest CPU).
type Map = HashMap<String, (String, i64), foldhash::quality::RandomState>;

#[derive(Debug, Default)]
struct Inner {
    map: Map,
    /// Insertion order of the keys in `map`, oldest first; each key appears once.
    order: VecDeque<String>,
}

impl DedupCache {
    /// `capacity` 0 disables the cache (every lookup misses, inserts are dropped).
    pub(crate) fn new(capacity: usize) -> DedupCache {
        DedupCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The original event id if `key` is cached and its window is still open at `now_ms`
    /// (the same `expires_at_ms > now` rule the writer applies to the table).
    pub(crate) fn lookup(&self, key: &str, now_ms: i64) -> Option<String> {
        if self.capacity == 0 {
            return None;
        }
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.map.get(key) {
            Some((id, expires)) if *expires > now_ms => Some(id.clone()),
            _ => None,
        }
    }

    /// Adds keys from a committed transaction, evicting the oldest beyond capacity.
    pub(crate) fn insert_committed(&self, keys: Vec<CachedKey>) {
        if self.capacity == 0 || keys.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            if k.key.len() > MAX_CACHED_BYTES || k.event_id.len() > MAX_CACHED_BYTES {
                continue;
            }
            if let Some(slot) = inner.map.get_mut(&k.key) {
                // A re-claimed (expired) key keeps its place in the order: it ages out a bit
                // early, which only costs a later miss.
                *slot = (k.event_id, k.expires_at_ms);
                continue;
            }
            inner.order.push_back(k.key.clone());
            inner.map.insert(k.key, (k.event_id, k.expires_at_ms));
            while inner.map.len() > self.capacity {
                match inner.order.pop_front() {
                    Some(old) => {
                        inner.map.remove(&old);
                    }
                    None => break,
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str, id: &str, exp: i64) -> CachedKey {
        CachedKey {
            key: k.into(),
            event_id: id.into(),
            expires_at_ms: exp,
        }
    }

    #[test]
    fn hit_only_inside_the_window() {
        let c = DedupCache::new(10);
        c.insert_committed(vec![key("a", "e1", 100)]);
        assert_eq!(c.lookup("a", 99).as_deref(), Some("e1"));
        assert_eq!(
            c.lookup("a", 100),
            None,
            "expires_at is exclusive, as in the table"
        );
        assert_eq!(c.lookup("b", 0), None);
    }

    #[test]
    fn evicts_oldest_first_and_stays_bounded() {
        let c = DedupCache::new(3);
        for i in 0..10 {
            c.insert_committed(vec![key(&format!("k{i}"), &format!("e{i}"), 1_000)]);
            assert!(c.len() <= 3);
        }
        assert_eq!(c.lookup("k6", 0), None);
        for i in 7..10 {
            assert_eq!(c.lookup(&format!("k{i}"), 0), Some(format!("e{i}")));
        }
    }

    #[test]
    fn reclaimed_key_takes_the_new_event() {
        let c = DedupCache::new(2);
        c.insert_committed(vec![key("a", "e1", 10), key("b", "e2", 10)]);
        c.insert_committed(vec![key("a", "e3", 50)]);
        assert_eq!(c.lookup("a", 20).as_deref(), Some("e3"));
        c.insert_committed(vec![key("c", "e4", 50)]);
        assert_eq!(c.lookup("a", 20), None, "a was first in, so first out");
        assert_eq!(c.lookup("b", 0).as_deref(), Some("e2"));
    }

    #[test]
    fn oversized_keys_and_ids_are_left_to_the_table() {
        let c = DedupCache::new(10);
        let long = "k".repeat(MAX_CACHED_BYTES + 1);
        c.insert_committed(vec![
            key(&long, "e1", 100),
            key("a", &long, 100),
            key("b", "e2", 100),
        ]);
        assert_eq!(c.lookup(&long, 0), None);
        assert_eq!(c.lookup("a", 0), None);
        assert_eq!(c.lookup("b", 0).as_deref(), Some("e2"));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn zero_capacity_disables() {
        let c = DedupCache::new(0);
        c.insert_committed(vec![key("a", "e1", 100)]);
        assert_eq!(c.lookup("a", 0), None);
    }
}
