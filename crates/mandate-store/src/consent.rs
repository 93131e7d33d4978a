use std::sync::RwLock;

use async_trait::async_trait;
use mandate_chain::{ConsentGrant, ConsentStore, StoreFailure};
use mandate_model::{ClientId, Subject};

/// In-memory consent grants.
#[derive(Debug, Default)]
pub struct MemoryConsentStore {
    grants: RwLock<Vec<ConsentGrant>>,
}

impl MemoryConsentStore {
    /// No grants.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ConsentStore for MemoryConsentStore {
    async fn consents(
        &self,
        subject: &Subject,
        actor: &ClientId,
    ) -> Result<Vec<ConsentGrant>, StoreFailure> {
        let grants = self
            .grants
            .read()
            .map_err(|_| StoreFailure("consent lock poisoned".into()))?;
        Ok(grants
            .iter()
            .filter(|g| &g.subject == subject && &g.actor == actor)
            .cloned()
            .collect())
    }

    async fn insert_if_absent(&self, grant: ConsentGrant) -> Result<bool, StoreFailure> {
        let mut grants = self
            .grants
            .write()
            .map_err(|_| StoreFailure("consent lock poisoned".into()))?;
        if grants.iter().any(|g| g.id == grant.id) {
            return Ok(false);
        }
        grants.push(grant);
        Ok(true)
    }

    async fn list(
        &self,
        subject: Option<&Subject>,
        actor: Option<&ClientId>,
    ) -> Result<Vec<ConsentGrant>, StoreFailure> {
        let grants = self
            .grants
            .read()
            .map_err(|_| StoreFailure("consent lock poisoned".into()))?;
        let mut listed: Vec<ConsentGrant> = grants
            .iter()
            .filter(|g| subject.is_none_or(|s| &g.subject == s))
            .filter(|g| actor.is_none_or(|a| &g.actor == a))
            .cloned()
            .collect();
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(listed)
    }

    async fn consent(&self, id: &str) -> Result<Option<ConsentGrant>, StoreFailure> {
        let grants = self
            .grants
            .read()
            .map_err(|_| StoreFailure("consent lock poisoned".into()))?;
        Ok(grants.iter().find(|g| g.id == id).cloned())
    }

    async fn remove(&self, id: &str) -> Result<bool, StoreFailure> {
        let mut grants = self
            .grants
            .write()
            .map_err(|_| StoreFailure("consent lock poisoned".into()))?;
        let before = grants.len();
        grants.retain(|g| g.id != id);
        Ok(grants.len() != before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_consent_store_meets_the_contract() {
        crate::contract::consents(&MemoryConsentStore::new()).await;
    }
}
