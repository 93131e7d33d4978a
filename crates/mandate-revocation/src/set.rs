//! An in-process copy of the live revocation entries, deciding exactly as the store's check
//! does ([`verdict`]): what the stream follower and the verifier SDK's feed mode keep.

use std::collections::HashMap;

use crate::{verdict, RevocationKind, RevocationRecord, TokenFacts, Verdict};

/// Live entries by kind and id, merged from snapshots and stream records: for one (kind, id) the
/// record with the later `at` wins (T only grows), so replaying older records — a snapshot taken
/// before a record already applied, a stream read again after a reconnection — never moves an
/// entry backwards. An entry is forgotten only when [`prune`](Self::prune) finds it expired.
#[derive(Clone, Debug, Default)]
pub struct RevocationSet {
    entries: HashMap<RevocationKind, HashMap<String, RevocationRecord>>,
}

impl RevocationSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `record`, or replaces the one held for its (kind, id) unless that one has a later
    /// `at`.
    pub fn insert(&mut self, record: RevocationRecord) {
        let by_id = self.entries.entry(record.kind).or_default();
        if by_id
            .get(&record.id)
            .is_some_and(|held| held.at > record.at)
        {
            return;
        }
        by_id.insert(record.id.clone(), record);
    }

    /// The entry held for (kind, id), expired or not.
    pub fn get(&self, kind: RevocationKind, id: &str) -> Option<&RevocationRecord> {
        self.entries.get(&kind).and_then(|by_id| by_id.get(id))
    }

    /// Drops the entries whose `until` is not after `now_ms` (the store's clock).
    pub fn prune(&mut self, now_ms: i64) {
        for by_id in self.entries.values_mut() {
            by_id.retain(|_, record| record.until > now_ms);
        }
        self.entries.retain(|_, by_id| !by_id.is_empty());
    }

    /// The store's decision for `facts` at `now_ms` (the store's clock): [`verdict`] over the
    /// entries for `facts.keys()` whose `until` is after `now_ms`.
    pub fn verdict(&self, facts: &TokenFacts, now_ms: i64) -> Verdict {
        let found: Vec<Option<RevocationRecord>> = facts
            .keys()
            .into_iter()
            .map(|(kind, id)| {
                self.get(kind, id)
                    .filter(|record| record.until > now_ms)
                    .cloned()
            })
            .collect();
        verdict(facts, &found)
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.values().map(HashMap::len).sum()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: RevocationKind, id: &str, at: i64, until: i64) -> RevocationRecord {
        RevocationRecord {
            kind,
            id: id.into(),
            at,
            until,
            reason: String::new(),
            by: String::new(),
        }
    }

    #[test]
    fn the_later_at_wins() {
        let mut set = RevocationSet::new();
        set.insert(record(RevocationKind::Agent, "a", 200, 900));
        set.insert(record(RevocationKind::Agent, "a", 100, 950));
        assert_eq!(set.get(RevocationKind::Agent, "a").map(|r| r.at), Some(200));
        set.insert(record(RevocationKind::Agent, "a", 300, 990));
        assert_eq!(set.get(RevocationKind::Agent, "a").map(|r| r.at), Some(300));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn decides_like_the_store_and_forgets_only_expired_entries() {
        let mut set = RevocationSet::new();
        set.insert(record(RevocationKind::Hop, "h1", 1_000, 5_000));
        set.insert(record(RevocationKind::Subject, "corp|alice", 1_000, 9_000));
        let child = TokenFacts {
            hop: Some("h2".into()),
            ancestors: vec!["h1".into()],
            issued_at: 2,
            ..TokenFacts::default()
        };
        assert_eq!(
            set.verdict(&child, 4_999),
            Verdict::Revoked {
                kind: RevocationKind::Hop,
                id: "h1".into()
            }
        );
        // Expired entries do not count, even before they are pruned.
        assert_eq!(set.verdict(&child, 5_000), Verdict::Live);
        // A subject entry covers only what was issued at or before its T.
        let later = TokenFacts {
            subject: Some("corp|alice".into()),
            issued_at: 2,
            ..TokenFacts::default()
        };
        assert_eq!(set.verdict(&later, 1_500), Verdict::Live);
        let earlier = TokenFacts {
            issued_at: 1,
            ..later
        };
        assert!(matches!(
            set.verdict(&earlier, 1_500),
            Verdict::Revoked { .. }
        ));
        set.prune(5_000);
        assert_eq!(set.len(), 1);
        set.prune(9_000);
        assert!(set.is_empty());
    }
}
