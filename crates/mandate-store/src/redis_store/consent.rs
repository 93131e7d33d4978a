use async_trait::async_trait;
use mandate_chain::{ConsentGrant, ConsentStore, StoreFailure};
use mandate_model::{ClientId, Subject};

use super::RedisConnection;

/// Stored consent grants in Redis: one hash per (subject, actor), which is how the validator
/// asks for them, and an id key that keeps grant ids unique across pairs.
///
/// The keys never expire: a grant expires logically (the validator checks `expires_at`), and an
/// admin must still be able to list and withdraw it.
pub struct RedisConsentStore<C> {
    connection: C,
}

impl<C> std::fmt::Debug for RedisConsentStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisConsentStore")
    }
}

impl<C: RedisConnection> RedisConsentStore<C> {
    /// Consent grants over `connection`.
    pub fn new(connection: C) -> Self {
        Self { connection }
    }
}

/// A client id holds no `:`, so the last `:` separates the pair, whatever the subject holds.
fn pair_key(subject: &Subject, actor: &ClientId) -> String {
    format!("mandate:consent:{}:{}", subject.as_str(), actor.as_str())
}

fn id_key(id: &str) -> String {
    format!("mandate:consent-id:{id}")
}

fn fail(error: redis::RedisError) -> StoreFailure {
    StoreFailure(format!("consent store unavailable: {error}"))
}

#[async_trait]
impl<C: RedisConnection> ConsentStore for RedisConsentStore<C> {
    /// Ordered by grant id (a hash keeps no insertion order).
    async fn consents(
        &self,
        subject: &Subject,
        actor: &ClientId,
    ) -> Result<Vec<ConsentGrant>, StoreFailure> {
        let mut connection = self.connection.clone();
        let values: Vec<String> = redis::cmd("HVALS")
            .arg(pair_key(subject, actor))
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        let mut grants = values
            .iter()
            .map(|json| {
                serde_json::from_str::<ConsentGrant>(json)
                    .map_err(|e| StoreFailure(format!("unreadable consent grant: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        grants.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(grants)
    }

    /// Claims the id first, then adds the grant to its pair's hash. The two keys are on
    /// different shards, so this is two commands; an id claimed by this pair whose grant is
    /// missing (a crash between them) is completed by the next insert rather than refused
    /// forever.
    async fn insert_if_absent(&self, grant: ConsentGrant) -> Result<bool, StoreFailure> {
        let pair = pair_key(&grant.subject, &grant.actor);
        let json = serde_json::to_string(&grant)
            .map_err(|e| StoreFailure(format!("consent grant not serializable: {e}")))?;
        let mut connection = self.connection.clone();
        let claimed: Option<String> = redis::cmd("SET")
            .arg(id_key(&grant.id))
            .arg(&pair)
            .arg("NX")
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        if claimed.is_none() {
            let owner: Option<String> = redis::cmd("GET")
                .arg(id_key(&grant.id))
                .query_async(&mut connection)
                .await
                .map_err(fail)?;
            if owner.as_deref() != Some(pair.as_str()) {
                return Ok(false);
            }
        }
        redis::cmd("HSETNX")
            .arg(&pair)
            .arg(&grant.id)
            .arg(json)
            .query_async(&mut connection)
            .await
            .map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_key_ends_with_the_actor() {
        let subject = Subject::parse("corp|team:alice").unwrap();
        let actor = ClientId::parse("assistant").unwrap();
        assert_eq!(
            pair_key(&subject, &actor),
            "mandate:consent:corp|team:alice:assistant"
        );
        assert_eq!(id_key("cg_1"), "mandate:consent-id:cg_1");
    }
}
