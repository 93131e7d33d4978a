use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use async_trait::async_trait;
use mandate_chain::{ChainId, ChainPage, ChainStart, HopId, HopRecord, Ledger, StoreFailure};

/// The in-memory hop ledger (one process). Records are kept for the life of the process, so the
/// index by start time is never trimmed either.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    inner: RwLock<LedgerMaps>,
}

/// B-trees, not hash maps: a B-tree grows a node at a time, while a hash map doubles and rehashes
/// every record at once, under the write lock every exchange needs. At 114,688 hops that took
/// 140 ms, during which no exchange could finish (docs/BENCHMARKS.md, change 11).
#[derive(Debug, Default)]
struct LedgerMaps {
    hops: BTreeMap<HopId, HopRecord>,
    chains: BTreeMap<ChainId, Vec<HopId>>,
    /// Chains by the `issued_at` of their earliest root.
    starts: BTreeSet<ChainStart>,
    started_at: BTreeMap<ChainId, i64>,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
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
        let (hop_key, listed, chain_key) = (hop.id.clone(), hop.id.clone(), hop.chain_id.clone());
        let root_start = hop.parent.is_none().then(|| ChainStart {
            started_at: hop.issued_at,
            chain_id: hop.chain_id.clone(),
        });
        let mut maps = self.inner.write().map_err(|_| poisoned())?;
        if maps.hops.contains_key(&hop.id) {
            return Err(StoreFailure(format!("hop {} already recorded", hop.id)));
        }
        maps.chains.entry(chain_key).or_default().push(listed);
        maps.hops.insert(hop_key, record);
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
        let mut chains: Vec<ChainId> = maps
            .hops
            .values()
            .filter(|h| {
                h.parent.is_none()
                    && h.evidence.kind == mandate_chain::EvidenceKind::ConsentGrant
                    && h.evidence.reference.split(' ').any(|r| r == consent_id)
            })
            .map(|h| h.chain_id.clone())
            .collect();
        chains.sort();
        chains.dedup();
        Ok(chains)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_chain::{Authority, Evidence, EvidenceKind};
    use mandate_model::{Audience, ClientId, Subject};

    fn hop(id: &str, chain: &str) -> HopRecord {
        HopRecord {
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
        let ledger = MemoryLedger::new();
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

    #[tokio::test]
    async fn the_memory_ledger_meets_the_contract() {
        crate::contract::ledger(&MemoryLedger::new()).await;
    }
}
