use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mandate_model::Clock;

use crate::{
    verdict, Checked, Revocation, RevocationKind, RevocationRecord, RevocationStore,
    RevocationStoreError, TokenFacts,
};

type Entries = HashMap<(RevocationKind, String), RevocationRecord>;

/// The in-memory revocation list of a single process; the process clock is the store's clock.
#[derive(Debug)]
pub struct MemoryRevocations {
    clock: Arc<dyn Clock>,
    entries: Mutex<Entries>,
}

impl MemoryRevocations {
    /// An empty list on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn now_ms_sync(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Entries>, RevocationStoreError> {
        self.entries
            .lock()
            .map_err(|_| RevocationStoreError("revocation list lock poisoned".into()))
    }
}

#[async_trait]
impl RevocationStore for MemoryRevocations {
    async fn revoke(
        &self,
        entries: Vec<Revocation>,
    ) -> Result<Vec<RevocationRecord>, RevocationStoreError> {
        let now = self.now_ms_sync();
        let mut map = self.lock()?;
        let mut written = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = (entry.kind, entry.id.clone());
            let previous = map.get(&key).filter(|r| r.until > now);
            let record = RevocationRecord {
                kind: entry.kind,
                id: entry.id,
                at: previous.map_or(now, |p| p.at.max(now)),
                until: previous.map_or(entry.until_ms, |p| p.until.max(entry.until_ms)),
                reason: entry.reason,
                by: entry.by,
            };
            map.insert(key, record.clone());
            written.push(record);
        }
        Ok(written)
    }

    async fn check(&self, facts: &TokenFacts) -> Result<Checked, RevocationStoreError> {
        let now = self.now_ms_sync();
        let map = self.lock()?;
        let found: Vec<Option<RevocationRecord>> = facts
            .keys()
            .into_iter()
            .map(|(kind, id)| {
                map.get(&(kind, id.to_owned()))
                    .filter(|r| r.until > now)
                    .cloned()
            })
            .collect();
        Ok(Checked {
            verdict: verdict(facts, &found),
            now_ms: now,
        })
    }

    async fn now_ms(&self) -> Result<i64, RevocationStoreError> {
        Ok(self.now_ms_sync())
    }

    async fn entries(&self) -> Result<Vec<RevocationRecord>, RevocationStoreError> {
        let now = self.now_ms_sync();
        let mut map = self.lock()?;
        map.retain(|_, r| r.until > now);
        let mut entries: Vec<RevocationRecord> = map.values().cloned().collect();
        entries.sort_by(|a, b| (a.at, a.kind, &a.id).cmp(&(b.at, b.kind, &b.id)));
        Ok(entries)
    }

    async fn heartbeat(&self, _node: &str, _keep_ms: i64) -> Result<(), RevocationStoreError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), RevocationStoreError> {
        self.lock().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract;
    use mandate_model::FixedClock;

    #[tokio::test]
    async fn the_memory_backend_meets_the_contract() {
        let clock = Arc::new(FixedClock::at(1_800_000_000));
        let store = MemoryRevocations::new(clock.clone());
        contract::run_all(&store, &|secs| clock.advance(secs)).await;
    }
}
