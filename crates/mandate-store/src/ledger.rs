use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::RwLock;

use async_trait::async_trait;
use mandate_chain::{ChainId, ChainPage, ChainStart, HopId, HopRecord, Ledger, StoreFailure};

/// The in-memory hop ledger (one process). Like the Redis ledger, it keeps each hop for
/// `ledger_retention_secs` after the hop was issued and a chain in the index by start time for
/// as long after its first root; it forgets what is older whenever it records a hop, measured
/// on that hop's `issued_at` (the store's clock), so a process that exchanges for months does not
/// keep every hop it ever wrote.
#[derive(Debug)]
pub struct MemoryLedger {
    inner: RwLock<LedgerMaps>,
    retention_secs: i64,
    max_hops: usize,
}

/// How many hops the in-memory ledger keeps unless told otherwise (`[store] memory_max_hops`):
/// about 200 MB of records at 2 KB each.
pub const DEFAULT_MEMORY_MAX_HOPS: usize = 100_000;

/// B-trees, not hash maps: a B-tree grows a node at a time, while a hash map doubles and rehashes
/// every record at once, under the write lock every exchange needs. At 114,688 hops that took
/// 140 ms, during which no exchange could finish (docs/BENCHMARKS.md, change 11).
#[derive(Debug, Default)]
struct LedgerMaps {
    hops: BTreeMap<HopId, HopRecord>,
    /// Each chain's hops in record order, which is close to `issued_at` order, so the hop the
    /// retention forgets is at or near the front.
    chains: BTreeMap<ChainId, VecDeque<HopId>>,
    /// Chains by the `issued_at` of their earliest root.
    starts: BTreeSet<ChainStart>,
    started_at: BTreeMap<ChainId, i64>,
    /// Hops by `issued_at`, the order the retention forgets them in.
    issued: BTreeMap<i64, Vec<HopId>>,
    /// For each consent grant, the chains with a kept root resting on it, and how many such
    /// roots each has: withdrawing a grant finds its chains without reading every hop (which
    /// would hold the lock every exchange needs for as long).
    consents: BTreeMap<String, BTreeMap<ChainId, usize>>,
}

/// How many hops one record forgets at most. Steady traffic forgets about one hop per record;
/// after a quiet spell many may be due at once, and forgetting them all under the lock would
/// stall every exchange, so they go a few hundred per record.
const FORGET_PER_RECORD: usize = 256;

impl LedgerMaps {
    /// Forgets up to `budget` of the hops issued, and of the chain starts made, before
    /// `oldest_kept`.
    fn forget_before(&mut self, oldest_kept: i64, mut budget: usize) {
        while budget > 0 {
            let Some(mut second) = self.issued.first_entry() else {
                break;
            };
            if *second.key() >= oldest_kept {
                break;
            }
            let id = second.get_mut().pop();
            if second.get().is_empty() {
                second.remove();
            }
            if let Some(id) = id {
                self.forget_hop(&id);
                budget -= 1;
            }
        }
        while budget > 0 {
            match self.starts.first() {
                Some(start) if start.started_at < oldest_kept => {}
                _ => break,
            }
            if let Some(start) = self.starts.pop_first() {
                self.started_at.remove(&start.chain_id);
            }
            budget -= 1;
        }
    }

    /// Forgets the oldest hops (by `issued_at`) until at most `max_hops` are kept.
    fn forget_beyond(&mut self, max_hops: usize) {
        while self.hops.len() > max_hops {
            let Some(mut oldest) = self.issued.first_entry() else {
                break;
            };
            let id = oldest.get_mut().pop();
            if oldest.get().is_empty() {
                oldest.remove();
            }
            if let Some(id) = id {
                self.forget_hop(&id);
            }
        }
    }

    /// Removes the hop and its places in its chain's list and in the consent index.
    fn forget_hop(&mut self, id: &HopId) {
        let Some(hop) = self.hops.remove(id) else {
            return;
        };
        for consent in hop.rooted_consents() {
            if let Some(chains) = self.consents.get_mut(consent) {
                if let Some(roots) = chains.get_mut(&hop.chain_id) {
                    *roots -= 1;
                    if *roots == 0 {
                        chains.remove(&hop.chain_id);
                    }
                }
                if chains.is_empty() {
                    self.consents.remove(consent);
                }
            }
        }
        if let Some(listed) = self.chains.get_mut(&hop.chain_id) {
            if let Some(at) = listed.iter().position(|listed| listed == id) {
                listed.remove(at);
            }
            if listed.is_empty() {
                // A chain without kept hops is gone: its place in the start index goes too, so
                // that the index stays bounded by the hops kept.
                self.chains.remove(&hop.chain_id);
                if let Some(started_at) = self.started_at.remove(&hop.chain_id) {
                    self.starts.remove(&ChainStart {
                        started_at,
                        chain_id: hop.chain_id.clone(),
                    });
                }
            }
        }
    }
}

impl MemoryLedger {
    /// An empty ledger whose hops are kept `ledger_retention_secs` (at least 1) after they were
    /// issued.
    pub fn new(ledger_retention_secs: u64) -> Self {
        Self {
            inner: RwLock::default(),
            retention_secs: i64::try_from(ledger_retention_secs.max(1)).unwrap_or(i64::MAX),
            max_hops: DEFAULT_MEMORY_MAX_HOPS,
        }
    }

    /// The same ledger keeping at most `max_hops` (at least 1): past it, the oldest hops (by
    /// `issued_at`) are forgotten first, as retention would forget them, so that a process that
    /// exchanges without pause stays within a known size.
    pub fn with_max_hops(mut self, max_hops: usize) -> Self {
        self.max_hops = max_hops.max(1);
        self
    }
}

fn poisoned() -> StoreFailure {
    StoreFailure("ledger lock poisoned".into())
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn record(&self, hop: &HopRecord) -> Result<(), StoreFailure> {
        // The copies are made before the lock is taken, so the lock every exchange needs is held
        // for the map updates alone. Only roots place a chain in the start index: a chain starts
        // when its grant is first used.
        let record = hop.clone();
        let (hop_key, listed, by_issue) = (hop.id.clone(), hop.id.clone(), hop.id.clone());
        let chain_key = hop.chain_id.clone();
        let consents: Vec<(String, ChainId)> = hop
            .rooted_consents()
            .map(|consent| (consent.to_owned(), hop.chain_id.clone()))
            .collect();
        let root_start = hop.parent.is_none().then(|| ChainStart {
            started_at: hop.issued_at,
            chain_id: hop.chain_id.clone(),
        });
        let mut maps = self.inner.write().map_err(|_| poisoned())?;
        maps.forget_before(
            hop.issued_at.saturating_sub(self.retention_secs),
            FORGET_PER_RECORD,
        );
        if maps.hops.contains_key(&hop.id) {
            return Err(StoreFailure(format!("hop {} already recorded", hop.id)));
        }
        maps.chains.entry(chain_key).or_default().push_back(listed);
        maps.hops.insert(hop_key, record);
        maps.issued.entry(hop.issued_at).or_default().push(by_issue);
        maps.forget_beyond(self.max_hops);
        for (consent, chain) in consents {
            *maps
                .consents
                .entry(consent)
                .or_default()
                .entry(chain)
                .or_default() += 1;
        }
        if let Some(start) = root_start {
            let earlier = maps.started_at.get(&start.chain_id).copied();
            if earlier.is_none_or(|at| start.started_at < at) {
                if let Some(at) = earlier {
                    maps.starts.remove(&ChainStart {
                        started_at: at,
                        chain_id: start.chain_id.clone(),
                    });
                }
                maps.started_at
                    .insert(start.chain_id.clone(), start.started_at);
                maps.starts.insert(start);
            }
        }
        Ok(())
    }

    async fn chains_by_start(&self, page: &ChainPage) -> Result<Vec<ChainStart>, StoreFailure> {
        let maps = self.inner.read().map_err(|_| poisoned())?;
        Ok(maps
            .starts
            .iter()
            .rev()
            .filter(|start| page.admits(start))
            .take(page.limit)
            .cloned()
            .collect())
    }

    async fn hop(&self, id: &HopId) -> Result<Option<HopRecord>, StoreFailure> {
        Ok(self
            .inner
            .read()
            .map_err(|_| poisoned())?
            .hops
            .get(id)
            .cloned())
    }

    async fn chain(&self, chain_id: &ChainId) -> Result<Vec<HopRecord>, StoreFailure> {
        let maps = self.inner.read().map_err(|_| poisoned())?;
        Ok(maps
            .chains
            .get(chain_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| maps.hops.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn chains_rooted_on_consent(
        &self,
        consent_id: &str,
    ) -> Result<Vec<ChainId>, StoreFailure> {
        let maps = self.inner.read().map_err(|_| poisoned())?;
        Ok(maps
            .consents
            .get(consent_id)
            .map(|chains| chains.keys().cloned().collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_chain::{Authority, Evidence, EvidenceKind};
    use mandate_model::{Audience, ClientId, Subject};

    const RETENTION: u64 = 2_592_000;

    fn hop(id: &str, chain: &str) -> HopRecord {
        HopRecord {
            jkt: None,
            request: None,
            id: HopId(id.into()),
            parent: None,
            chain_id: ChainId(chain.into()),
            ancestors: vec![],
            subject: Subject::parse("corp|alice").unwrap(),
            actors: vec![ClientId::parse("assistant").unwrap()],
            client_id: ClientId::parse("assistant").unwrap(),
            audience: Audience::parse("https://calendar.example.com").unwrap(),
            authority: Authority::new(),
            issued_at: 1,
            expires_at: 2,
            depth: 1,
            depth_limit: 5,
            evidence: Evidence {
                kind: EvidenceKind::UpstreamAudience,
                reference: "assistant".into(),
            },
            upstream: None,
        }
    }

    #[tokio::test]
    async fn records_are_found_by_id_and_chain_and_never_overwritten() {
        let ledger = MemoryLedger::new(RETENTION);
        ledger.record(&hop("h1", "c1")).await.unwrap();
        ledger.record(&hop("h2", "c1")).await.unwrap();
        ledger.record(&hop("h3", "c2")).await.unwrap();
        assert!(ledger.record(&hop("h1", "c1")).await.is_err());
        assert_eq!(
            ledger.hop(&HopId("h2".into())).await.unwrap().unwrap().id.0,
            "h2"
        );
        assert!(ledger.hop(&HopId("nope".into())).await.unwrap().is_none());
        let chain: Vec<String> = ledger
            .chain(&ChainId("c1".into()))
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.id.0)
            .collect();
        assert_eq!(chain, ["h1", "h2"]);
    }

    fn issued(id: &str, chain: &str, parent: Option<&str>, issued_at: i64) -> HopRecord {
        HopRecord {
            parent: parent.map(|p| HopId(p.into())),
            issued_at,
            expires_at: issued_at + 60,
            ..hop(id, chain)
        }
    }

    async fn ids_of(ledger: &MemoryLedger, chain: &str) -> Vec<String> {
        let hops = ledger.chain(&ChainId(chain.into())).await.unwrap();
        hops.into_iter().map(|h| h.id.0).collect()
    }

    async fn listed_chains(ledger: &MemoryLedger) -> Vec<(i64, String)> {
        let starts = ledger
            .chains_by_start(&ChainPage {
                since: None,
                until: None,
                after: None,
                limit: 100,
            })
            .await
            .unwrap();
        starts
            .into_iter()
            .map(|s| (s.started_at, s.chain_id.0))
            .collect()
    }

    #[tokio::test]
    async fn a_hop_is_kept_for_the_retention_and_forgotten_at_the_next_record_after_it() {
        let ledger = MemoryLedger::new(100);
        ledger.record(&issued("h1", "c1", None, 1)).await.unwrap();
        ledger
            .record(&issued("h2", "c1", Some("h1"), 50))
            .await
            .unwrap();
        ledger.record(&issued("h3", "c2", None, 60)).await.unwrap();

        // 101 is exactly the retention after h1: it is still kept, and its chain still listed.
        ledger.record(&issued("h4", "c3", None, 101)).await.unwrap();
        assert_eq!(ids_of(&ledger, "c1").await, ["h1", "h2"]);
        assert!(listed_chains(&ledger).await.contains(&(1, "c1".into())));

        // One second later h1 goes, and with it c1's place in the index by start time (as the
        // Redis index is trimmed); its younger hop stays and is still found.
        ledger
            .record(&issued("h5", "c3", Some("h4"), 102))
            .await
            .unwrap();
        assert!(ledger.hop(&HopId("h1".into())).await.unwrap().is_none());
        assert_eq!(ids_of(&ledger, "c1").await, ["h2"]);
        assert!(ledger.hop(&HopId("h2".into())).await.unwrap().is_some());
        assert_eq!(
            listed_chains(&ledger).await,
            [(101, "c3".to_string()), (60, "c2".to_string())]
        );

        // Once its last hop is forgotten the chain is gone; h3 (issued at 60) is still kept.
        ledger
            .record(&issued("h6", "c3", Some("h5"), 160))
            .await
            .unwrap();
        assert!(ids_of(&ledger, "c1").await.is_empty());
        assert_eq!(ids_of(&ledger, "c2").await, ["h3"]);
        assert_eq!(ids_of(&ledger, "c3").await, ["h4", "h5", "h6"]);
    }

    #[tokio::test]
    async fn one_record_forgets_a_bounded_number_of_hops_and_the_rest_follow() {
        let ledger = MemoryLedger::new(100);
        let old = 600;
        for i in 0..old {
            let (id, chain) = (format!("old-{i}"), format!("c-{i}"));
            ledger.record(&issued(&id, &chain, None, 1)).await.unwrap();
        }
        let kept = |ledger: &MemoryLedger| {
            let maps = ledger.inner.read().unwrap();
            (maps.hops.len(), maps.starts.len())
        };
        ledger
            .record(&issued("new-0", "n", None, 200))
            .await
            .unwrap();
        // Each forgotten root was its chain's only hop, so its chain left the start index too.
        let left = old - FORGET_PER_RECORD + 1;
        assert_eq!(kept(&ledger), (left, left));
        for i in 1..6 {
            let id = format!("new-{i}");
            ledger
                .record(&issued(&id, "n", Some("new-0"), 200))
                .await
                .unwrap();
        }
        assert_eq!(
            kept(&ledger),
            (6, 1),
            "only the new chain and its hops are left"
        );
        assert_eq!(listed_chains(&ledger).await, [(200, "n".to_string())]);
    }

    #[tokio::test]
    async fn a_chain_whose_start_was_forgotten_is_listed_again_from_its_next_root() {
        let ledger = MemoryLedger::new(100);
        ledger.record(&issued("h1", "c1", None, 1)).await.unwrap();
        ledger.record(&issued("h2", "c1", None, 150)).await.unwrap();
        assert_eq!(listed_chains(&ledger).await, [(150, "c1".to_string())]);
        assert_eq!(ids_of(&ledger, "c1").await, ["h2"]);
    }

    #[tokio::test]
    async fn the_consents_a_forgotten_root_rested_on_no_longer_name_its_chain() {
        let ledger = MemoryLedger::new(100);
        let rooted = |id: &str, chain: &str, at: i64| HopRecord {
            evidence: Evidence {
                kind: EvidenceKind::ConsentGrant,
                reference: "grant-1".into(),
            },
            ..issued(id, chain, None, at)
        };
        ledger.record(&rooted("h1", "c1", 1)).await.unwrap();
        ledger.record(&rooted("h2", "c2", 90)).await.unwrap();
        // A second root of c1 on the same grant keeps c1 on it after the first is forgotten.
        ledger.record(&rooted("h3", "c1", 30)).await.unwrap();
        let on_grant = ledger.chains_rooted_on_consent("grant-1").await.unwrap();
        assert_eq!(on_grant, [ChainId("c1".into()), ChainId("c2".into())]);
        ledger.record(&issued("h4", "c3", None, 110)).await.unwrap();
        let on_grant = ledger.chains_rooted_on_consent("grant-1").await.unwrap();
        assert_eq!(on_grant, [ChainId("c1".into()), ChainId("c2".into())]);
        ledger.record(&issued("h5", "c3", None, 150)).await.unwrap();
        let on_grant = ledger.chains_rooted_on_consent("grant-1").await.unwrap();
        assert_eq!(on_grant, [ChainId("c2".into())]);
        ledger.record(&issued("h6", "c3", None, 200)).await.unwrap();
        assert!(ledger
            .chains_rooted_on_consent("grant-1")
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn past_its_maximum_the_ledger_forgets_its_oldest_hops_first() {
        let ledger = MemoryLedger::new(RETENTION).with_max_hops(3);
        for (n, at) in [(1, 10), (2, 30), (3, 20), (4, 40)] {
            let chain = format!("c{n}");
            ledger
                .record(&issued(&format!("h{n}"), &chain, None, at))
                .await
                .unwrap();
        }
        // h1 (issued at 10) went first; h3 (20) stays though recorded after h2 (30).
        assert!(ledger.hop(&HopId("h1".into())).await.unwrap().is_none());
        for kept in ["h2", "h3", "h4"] {
            assert!(
                ledger.hop(&HopId(kept.into())).await.unwrap().is_some(),
                "{kept}"
            );
        }
        assert!(ids_of(&ledger, "c1").await.is_empty());
        // Its chain left the start index with it: the index is bounded by the hops kept.
        assert_eq!(
            listed_chains(&ledger).await,
            [
                (40, "c4".to_string()),
                (30, "c2".to_string()),
                (20, "c3".to_string())
            ]
        );
        ledger
            .record(&issued("h5", "c4", Some("h4"), 50))
            .await
            .unwrap();
        assert!(ledger.hop(&HopId("h3".into())).await.unwrap().is_none());
        assert_eq!(ids_of(&ledger, "c4").await, ["h4", "h5"]);
    }

    #[tokio::test]
    async fn the_memory_ledger_meets_the_contract() {
        crate::contract::ledger(&MemoryLedger::new(RETENTION)).await;
    }
}
