use async_trait::async_trait;

use crate::{ChainId, HopId, HopRecord, Policy, PolicyRow};

/// A store operation that did not complete; callers fail closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store failure: {0}")]
pub struct StoreFailure(pub String);

/// The hop ledger: every issued token is recorded before it is returned (DESIGN.md section 1.3).
#[async_trait]
pub trait Ledger: Send + Sync + std::fmt::Debug {
    /// Records a hop. An existing id is never overwritten (ids are random; a clash is a failure).
    async fn record(&self, hop: &HopRecord) -> Result<(), StoreFailure>;
    /// A hop by id.
    async fn hop(&self, id: &HopId) -> Result<Option<HopRecord>, StoreFailure>;
    /// Every hop of a chain, in the order they were recorded.
    async fn chain(&self, chain_id: &ChainId) -> Result<Vec<HopRecord>, StoreFailure>;
    /// The chains whose root hops record consent grant `consent_id` as their evidence (withdrawing
    /// the grant revokes them).
    async fn chains_rooted_on_consent(
        &self,
        consent_id: &str,
    ) -> Result<Vec<ChainId>, StoreFailure>;
}

/// The policy rows, shared by every node and changed by admins (`PUT /admin/policies`).
///
/// The store holds one list of rows and its version. A store that was never written holds no
/// policy at version 0; the first write (seeding from configuration, or a replace at version 0)
/// makes version 1, and every replace adds one. The rows are kept as written; [`Policy::new`]
/// merges rows for the same (actor, audience) when they are read.
#[async_trait]
pub trait PolicyStore: Send + Sync + std::fmt::Debug {
    /// The current policy and its version (an empty policy at version 0 when never written).
    async fn policy(&self) -> Result<(Policy, u64), StoreFailure>;
    /// Stores `rows` at version 1 if the store holds no policy yet; returns whether it did. A
    /// store holding a policy keeps it, even an empty one an admin wrote: what the store holds
    /// wins over configuration.
    async fn seed_if_empty(&self, rows: Vec<PolicyRow>) -> Result<bool, StoreFailure>;
    /// Replaces the rows if the stored version is still `expected_version`: `Ok(new_version)`,
    /// or `Err(current_version)` with nothing changed (the caller answers 412).
    async fn replace(
        &self,
        rows: Vec<PolicyRow>,
        expected_version: u64,
    ) -> Result<Result<u64, u64>, StoreFailure>;
}
