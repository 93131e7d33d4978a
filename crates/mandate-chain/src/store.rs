use std::sync::Arc;

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
    /// The chains by start time (the `issued_at` of their first root), newest first; ties by
    /// chain id, descending, so that the order is total and a page boundary is exact.
    async fn chains_by_start(&self, page: &ChainPage) -> Result<Vec<ChainStart>, StoreFailure>;
}

/// A chain's place in the ledger's index by start time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChainStart {
    /// When its first root was issued (seconds).
    pub started_at: i64,
    /// The chain.
    pub chain_id: ChainId,
}

/// One page of [`Ledger::chains_by_start`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainPage {
    /// Only chains started at or after this (seconds).
    pub since: Option<i64>,
    /// Only chains started at or before this (seconds).
    pub until: Option<i64>,
    /// Only chains strictly after this position in newest-first order (the last one of the
    /// previous page).
    pub after: Option<ChainStart>,
    /// At most this many.
    pub limit: usize,
}

impl ChainPage {
    /// Whether `start` belongs on this page's side of every bound (the limit aside).
    pub fn admits(&self, start: &ChainStart) -> bool {
        self.since.is_none_or(|s| start.started_at >= s)
            && self.until.is_none_or(|u| start.started_at <= u)
            && self.after.as_ref().is_none_or(|after| start < after)
    }
}

/// The policy rows, shared by every node and changed by admins (`PUT /admin/policies`).
///
/// The store holds one list of rows and its version. A store that was never written holds no
/// policy at version 0; the first write (seeding from configuration, or a replace at version 0)
/// makes version 1, and every replace adds one. [`PolicyStore::policy`] answers the rows
/// merged by [`Policy::new`] (rows for the same (actor, audience) become one), built once per
/// write and shared, since every exchange reads it.
#[async_trait]
pub trait PolicyStore: Send + Sync + std::fmt::Debug {
    /// The current policy and its version (an empty policy at version 0 when never written),
    /// built once per version and shared.
    async fn policy(&self) -> Result<(Arc<Policy>, u64), StoreFailure>;
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
