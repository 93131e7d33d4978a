use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::StoreError;

/// Remembers single-use identifiers (client assertion `jti`s, ID-JAG `jti`s) until they expire.
#[async_trait]
pub trait ReplayCache: Send + Sync + std::fmt::Debug {
    /// Records `key` as used until `until` (seconds since the epoch) and returns `true`, or
    /// returns `false` when it is already recorded and not yet expired. `now` is the caller's
    /// clock reading, in seconds.
    async fn first_use(&self, key: &str, until: i64, now: i64) -> Result<bool, StoreError>;
}

/// The in-memory replay cache. Every use first drops the identifiers that have expired, so memory
/// stays bounded by the number of identifiers seen within their lifetimes.
#[derive(Debug, Default)]
pub struct MemoryReplayCache {
    seen: Mutex<Seen>,
}

/// Each use does work in proportion to what it inserts and what has expired, never to the size
/// of the cache: the expired entries are the front of `by_expiry`, and B-trees grow a node at a
/// time (a hash map doubles and rehashes everything at once, and a sweep visits everything, both
/// under the lock every `private_key_jwt` authentication needs).
#[derive(Debug, Default)]
struct Seen {
    until: BTreeMap<String, i64>,
    by_expiry: BTreeSet<(i64, String)>,
}

impl Seen {
    fn forget_expired(&mut self, now: i64) {
        while let Some((expiry, _)) = self.by_expiry.first() {
            if *expiry > now {
                break;
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.until.remove(&key);
            }
        }
    }
}

impl MemoryReplayCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many identifiers are held (expired ones not yet forgotten included).
    pub fn len(&self) -> usize {
        self.seen.lock().map(|s| s.until.len()).unwrap_or(0)
    }

    /// Whether no identifier is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn first_use(&self, key: &str, until: i64, now: i64) -> Result<bool, StoreError> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| StoreError::Corrupt("replay cache lock poisoned".into()))?;
        // Whatever is left afterwards expires after `now`: a key still held is a replay.
        seen.forget_expired(now);
        if seen.until.contains_key(key) {
            return Ok(false);
        }
        seen.until.insert(key.to_owned(), until);
        seen.by_expiry.insert((until, key.to_owned()));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_use_within_lifetime_is_refused() {
        let cache = MemoryReplayCache::new();
        assert!(cache.first_use("c1:j1", 100, 10).await.unwrap());
        assert!(!cache.first_use("c1:j1", 100, 99).await.unwrap());
        assert!(cache.first_use("c2:j1", 100, 10).await.unwrap());
    }

    #[tokio::test]
    async fn an_expired_entry_may_be_used_again() {
        let cache = MemoryReplayCache::new();
        assert!(cache.first_use("k", 100, 10).await.unwrap());
        assert!(cache.first_use("k", 300, 100).await.unwrap());
    }

    #[tokio::test]
    async fn expired_entries_are_forgotten_at_the_next_use() {
        let cache = MemoryReplayCache::new();
        for i in 0..2000 {
            cache.first_use(&format!("k{i}"), 50 + i, 10).await.unwrap();
        }
        // At 1049, k0..=k999 (expiring at 50..=1049) are gone, k1000.. are held.
        cache.first_use("late", 5000, 1049).await.unwrap();
        assert_eq!(cache.len(), 1001);
        assert!(!cache.first_use("k1000", 9000, 1049).await.unwrap());
        assert!(cache.first_use("k999", 9000, 1049).await.unwrap());
    }

    #[tokio::test]
    async fn a_key_used_again_after_expiry_is_held_until_its_new_expiry() {
        let cache = MemoryReplayCache::new();
        assert!(cache.first_use("k", 100, 10).await.unwrap());
        assert!(cache.first_use("k", 300, 100).await.unwrap());
        // The first expiry (100) passing must not forget the second use.
        assert!(!cache.first_use("k", 400, 150).await.unwrap());
        assert!(cache.first_use("k", 500, 300).await.unwrap());
    }

    #[tokio::test]
    async fn the_memory_cache_meets_the_contract() {
        crate::contract::replay(&MemoryReplayCache::new()).await;
    }
}
