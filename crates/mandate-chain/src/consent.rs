//! Stored consent grants (evidence 3) and where they are kept.

use async_trait::async_trait;
use mandate_model::{Audience, ClientId, ScopeSet, Subject};
use serde::{Deserialize, Serialize};

use crate::StoreFailure;

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
    /// Every grant, or those of one subject and/or one actor, ordered by id (expired ones
    /// included: an admin still sees and withdraws them).
    async fn list(
        &self,
        subject: Option<&Subject>,
        actor: Option<&ClientId>,
    ) -> Result<Vec<ConsentGrant>, StoreFailure>;
    /// The grant with this id.
    async fn consent(&self, id: &str) -> Result<Option<ConsentGrant>, StoreFailure>;
    /// Removes the grant with this id; returns whether there was one. Withdrawing a grant
    /// revokes it first (`consent:<id>`), so a removal cut short leaves nothing usable.
    async fn remove(&self, id: &str) -> Result<bool, StoreFailure>;
}
