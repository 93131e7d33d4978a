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

    /// Forgets `key`, recorded by a [`first_use`](Self::first_use) whose operation then failed,
    /// so that the sender's retry is taken as a first use again rather than as a replay.
    async fn release(&self, key: &str) -> Result<(), StoreError>;
}

/// The in-memory replay cache. Every use first drops identifiers that expired more than a
/// minute before (a few hundred at most), so memory stays bounded by the number of identifiers
/// seen within their lifetimes (plus a minute).
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

/// How long past its expiry an identifier is still held. Callers pass their own clock reading,
/// and two requests can reach the cache out of order (or after a clock step back): a use whose
/// `now` is earlier than one already seen must still find every identifier that is live at its
/// `now`. Forgetting only what expired this long before the `now` at hand keeps them.
const FORGET_AFTER_SECS: i64 = 60;

/// How many identifiers one use forgets at most. A use inserts at most one, so steady traffic
/// keeps up; after a quiet spell many may have expired at once, and forgetting them all under
/// the lock would stall every `private_key_jwt` authentication, so they go a few hundred per use
/// (as the memory ledger forgets hops).
const FORGET_PER_USE: usize = 256;

impl Seen {
    /// Forgets up to `budget` of the identifiers that expired at or before `cutoff`.
    fn forget_expired_before(&mut self, cutoff: i64, budget: usize) {
        for _ in 0..budget {
            match self.by_expiry.first() {
                Some((expiry, _)) if *expiry <= cutoff => {}
                _ => break,
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
        seen.forget_expired_before(now.saturating_sub(FORGET_AFTER_SECS), FORGET_PER_USE);
        match seen.until.get(key).copied() {
            Some(expiry) if expiry > now => Ok(false),
            held => {
                if let Some(expired) = held {
                    seen.by_expiry.remove(&(expired, key.to_owned()));
                }
                seen.until.insert(key.to_owned(), until);
                seen.by_expiry.insert((until, key.to_owned()));
                Ok(true)
            }
        }
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| StoreError::Corrupt("replay cache lock poisoned".into()))?;
        if let Some(expiry) = seen.until.remove(key) {
            seen.by_expiry.remove(&(expiry, key.to_owned()));
        }
        Ok(())
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
    async fn expired_entries_are_forgotten_a_bounded_number_per_use() {
        let cache = MemoryReplayCache::new();
        for i in 0..2000 {
            cache.first_use(&format!("k{i}"), 50 + i, 10).await.unwrap();
        }
        // At 1109, what expired a minute or more before (k0..=k999, at 50..=1049) is due: one
        // use forgets a bounded part of it, the next uses the rest; k1000.. are held.
        cache.first_use("late-0", 5000, 1109).await.unwrap();
        assert_eq!(cache.len(), 2000 - FORGET_PER_USE + 1);
        for i in 1..4 {
            let key = format!("late-{i}");
            cache.first_use(&key, 5000, 1109).await.unwrap();
        }
        assert_eq!(cache.len(), 1000 + 4);
        assert!(!cache.first_use("k1999", 9000, 1109).await.unwrap());
    }

    #[tokio::test]
    async fn a_key_used_again_after_expiry_is_held_until_its_new_expiry() {
        let cache = MemoryReplayCache::new();
        assert!(cache.first_use("k", 100, 10).await.unwrap());
        // Expired but not yet forgotten: usable again, and held until its new expiry.
        assert!(cache.first_use("k", 300, 100).await.unwrap());
        assert!(!cache.first_use("k", 400, 150).await.unwrap());
        // Long after the first expiry, its index entry must not take the second use with it.
        assert!(!cache.first_use("k", 400, 299).await.unwrap());
        assert!(cache.first_use("k", 500, 300).await.unwrap());
        assert_eq!(cache.len(), 1);
    }

    /// Two requests read the clock in one order and reach the cache in the other: the later
    /// reading must not make the earlier one forget an identifier that is live at its time.
    #[tokio::test]
    async fn a_use_with_an_earlier_clock_reading_still_sees_what_is_live_then() {
        let cache = MemoryReplayCache::new();
        assert!(cache.first_use("k", 100, 10).await.unwrap());
        assert!(cache.first_use("other", 500, 130).await.unwrap());
        assert!(!cache.first_use("k", 100, 99).await.unwrap());
    }

    #[tokio::test]
    async fn the_memory_cache_meets_the_contract() {
        crate::contract::replay(&MemoryReplayCache::new()).await;
    }
}
