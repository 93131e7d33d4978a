use async_trait::async_trait;
use futures_util::future::try_join_all;
use mandate_chain::{ConsentGrant, ConsentStore, StoreFailure};
use mandate_model::{ClientId, Subject};

use super::RedisConnection;

/// Stored consent grants in Redis: one hash per (subject, actor), which is how the validator
/// asks for them, an id key that keeps grant ids unique across pairs and says which hash holds
/// the grant, and the set of every grant id, for the admin's listing.
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

/// Every grant id, so that grants can be listed without scanning keys (which a cluster spreads
/// over its shards).
const IDS_KEY: &str = "mandate:consent-ids";

fn parse(json: &str) -> Result<ConsentGrant, StoreFailure> {
    serde_json::from_str::<ConsentGrant>(json)
        .map_err(|e| StoreFailure(format!("unreadable consent grant: {e}")))
}

impl<C: RedisConnection> RedisConsentStore<C> {
    /// The hash holding grant `id`, from its id key.
    async fn pair_of(&self, id: &str) -> Result<Option<String>, StoreFailure> {
        let mut connection = self.connection.clone();
        redis::cmd("GET")
            .arg(id_key(id))
            .query_async(&mut connection)
            .await
            .map_err(fail)
    }

    async fn index(&self, id: &str) -> Result<(), StoreFailure> {
        let mut connection = self.connection.clone();
        let _: i64 = redis::cmd("SADD")
            .arg(IDS_KEY)
            .arg(id)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        Ok(())
    }
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
            .map(|json| parse(json))
            .collect::<Result<Vec<_>, _>>()?;
        grants.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(grants)
    }

    /// Claims the id first, then adds the grant to its pair's hash, then lists its id. The keys
    /// are on different shards, so these are separate commands; an id claimed by this pair whose
    /// grant or listing is missing (a crash between them) is completed by the next insert rather
    /// than refused forever (seeding from configuration at start-up does that).
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
        let added: bool = redis::cmd("HSETNX")
            .arg(&pair)
            .arg(&grant.id)
            .arg(json)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        self.index(&grant.id).await?;
        Ok(added)
    }

    /// Both filters: the pair's hash. Otherwise every listed grant, one read per grant (grants
    /// live on the shards of their pairs), then filtered.
    async fn list(
        &self,
        subject: Option<&Subject>,
        actor: Option<&ClientId>,
    ) -> Result<Vec<ConsentGrant>, StoreFailure> {
        if let (Some(subject), Some(actor)) = (subject, actor) {
            return self.consents(subject, actor).await;
        }
        let mut connection = self.connection.clone();
        let mut ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(IDS_KEY)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        ids.sort();
        let grants = try_join_all(ids.iter().map(|id| self.consent(id))).await?;
        Ok(grants
            .into_iter()
            .flatten()
            .filter(|g| subject.is_none_or(|s| &g.subject == s))
            .filter(|g| actor.is_none_or(|a| &g.actor == a))
            .collect())
    }

    async fn consent(&self, id: &str) -> Result<Option<ConsentGrant>, StoreFailure> {
        let Some(pair) = self.pair_of(id).await? else {
            return Ok(None);
        };
        let mut connection = self.connection.clone();
        let json: Option<String> = redis::cmd("HGET")
            .arg(&pair)
            .arg(id)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        json.map(|json| parse(&json)).transpose()
    }

    /// The grant first (it stops being evidence), then its id key, then its listing; a removal
    /// cut short leaves at most an id that lists nothing.
    async fn remove(&self, id: &str) -> Result<bool, StoreFailure> {
        let pair = self.pair_of(id).await?;
        let mut connection = self.connection.clone();
        let mut removed = false;
        if let Some(pair) = pair {
            let deleted: i64 = redis::cmd("HDEL")
                .arg(&pair)
                .arg(id)
                .query_async(&mut connection)
                .await
                .map_err(fail)?;
            removed = deleted == 1;
            let _: i64 = redis::cmd("DEL")
                .arg(id_key(id))
                .query_async(&mut connection)
                .await
                .map_err(fail)?;
        }
        let _: i64 = redis::cmd("SREM")
            .arg(IDS_KEY)
            .arg(id)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        Ok(removed)
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
