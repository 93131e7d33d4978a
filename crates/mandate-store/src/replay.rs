use std::collections::HashMap;
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

/// The in-memory replay cache. Expired entries are swept as the map grows, so memory stays
/// bounded by the number of identifiers seen within their lifetimes.
#[derive(Debug, Default)]
pub struct MemoryReplayCache {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    until: HashMap<String, i64>,
    sweep_at_len: usize,
    sweep_after: i64,
}

impl MemoryReplayCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many identifiers are held (expired ones not yet swept included).
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
        // Sweep when the map has doubled since the last sweep, and at least once a minute.
        if seen.until.len() >= seen.sweep_at_len || now >= seen.sweep_after {
            seen.until.retain(|_, expiry| *expiry > now);
            seen.sweep_at_len = (seen.until.len() * 2).max(1024);
            seen.sweep_after = now + 60;
        }
        match seen.until.get(key) {
            Some(expiry) if *expiry > now => Ok(false),
            _ => {
                seen.until.insert(key.to_owned(), until);
                Ok(true)
            }
        }
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
    async fn expired_entries_are_swept() {
        let cache = MemoryReplayCache::new();
        for i in 0..2000 {
            cache.first_use(&format!("k{i}"), 50, 10).await.unwrap();
        }
        cache.first_use("late", 500, 100).await.unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn the_memory_cache_meets_the_contract() {
        crate::contract::replay(&MemoryReplayCache::new()).await;
    }
}
