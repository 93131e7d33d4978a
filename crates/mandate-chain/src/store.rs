use async_trait::async_trait;
use mandate_model::{Audience, ClientId, ScopeSet, Subject};
use serde::{Deserialize, Serialize};

use crate::{ChainId, HopId, HopRecord};

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

/// A stored consent grant (evidence 3): the user let this agent reach this audience with these
/// scopes until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentGrant {
    /// Its id.
    pub id: String,
    /// The user.
    pub subject: Subject,
    /// The agent.
    pub actor: ClientId,
    /// Where.
    pub audience: Audience,
    /// What.
    pub scopes: ScopeSet,
    /// Until when (seconds).
    pub expires_at: i64,
}

/// Stored consent grants.
#[async_trait]
pub trait ConsentStore: Send + Sync + std::fmt::Debug {
    /// The grants of `subject` to `actor` (expired ones included; the validator checks expiry).
    async fn consents(
        &self,
        subject: &Subject,
        actor: &ClientId,
    ) -> Result<Vec<ConsentGrant>, StoreFailure>;
    /// Adds a grant unless its id exists; returns whether it was added.
    async fn insert_if_absent(&self, grant: ConsentGrant) -> Result<bool, StoreFailure>;
}
