use std::sync::RwLock;

use async_trait::async_trait;
use mandate_chain::{Policy, PolicyRow, PolicyStore, StoreFailure};

/// The in-memory policy store (one process).
#[derive(Debug, Default)]
pub struct MemoryPolicyStore {
    /// The rows as written and their version; `None` until the first write.
    inner: RwLock<Option<(Vec<PolicyRow>, u64)>>,
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
    async fn policy(&self) -> Result<(Policy, u64), StoreFailure> {
        Ok(match &*self.inner.read().map_err(|_| poisoned())? {
            Some((rows, version)) => (Policy::new(rows.clone()), *version),
            None => (Policy::default(), 0),
        })
    }

    async fn seed_if_empty(&self, rows: Vec<PolicyRow>) -> Result<bool, StoreFailure> {
        let mut inner = self.inner.write().map_err(|_| poisoned())?;
        if inner.is_some() {
            return Ok(false);
        }
        *inner = Some((rows, 1));
        Ok(true)
    }

    async fn replace(
        &self,
        rows: Vec<PolicyRow>,
        expected_version: u64,
    ) -> Result<Result<u64, u64>, StoreFailure> {
        let mut inner = self.inner.write().map_err(|_| poisoned())?;
        let current = inner.as_ref().map_or(0, |(_, version)| *version);
        if current != expected_version {
            return Ok(Err(current));
        }
        let next = current + 1;
        *inner = Some((rows, next));
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
