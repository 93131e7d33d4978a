use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use mandate_chain::{Policy, PolicyRow, PolicyStore, StoreFailure};

/// The in-memory policy store (one process).
#[derive(Debug, Default)]
pub struct MemoryPolicyStore {
    /// The policy built from the rows last written, and its version; `None` until the first
    /// write. It is built when written, not each time it is read.
    inner: RwLock<Option<(Arc<Policy>, u64)>>,
}

impl MemoryPolicyStore {
    /// A store holding no policy (version 0).
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned() -> StoreFailure {
    StoreFailure("policy store lock poisoned".into())
}

#[async_trait]
impl PolicyStore for MemoryPolicyStore {
    async fn policy(&self) -> Result<(Arc<Policy>, u64), StoreFailure> {
        Ok(match &*self.inner.read().map_err(|_| poisoned())? {
            Some((policy, version)) => (Arc::clone(policy), *version),
            None => (Arc::default(), 0),
        })
    }

    async fn seed_if_empty(&self, rows: Vec<PolicyRow>) -> Result<bool, StoreFailure> {
        let mut inner = self.inner.write().map_err(|_| poisoned())?;
        if inner.is_some() {
            return Ok(false);
        }
        *inner = Some((Arc::new(Policy::new(rows)), 1));
        Ok(true)
    }

    async fn replace(
        &self,
        rows: Vec<PolicyRow>,
        expected_version: u64,
    ) -> Result<Result<u64, u64>, StoreFailure> {
        // Built before the lock is taken: readers wait for the swap only.
        let policy = Arc::new(Policy::new(rows));
        let mut inner = self.inner.write().map_err(|_| poisoned())?;
        let current = inner.as_ref().map_or(0, |(_, version)| *version);
        if current != expected_version {
            return Ok(Err(current));
        }
        let next = current + 1;
        *inner = Some((policy, next));
        Ok(Ok(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_policy_store_meets_the_contract() {
        crate::contract::policies(&MemoryPolicyStore::new()).await;
    }
}
