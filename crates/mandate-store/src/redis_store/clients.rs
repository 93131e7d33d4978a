use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::future::try_join_all;
use mandate_model::{Audience, ClientId, ClientKind};

use redis::Script;

use super::{unavailable, RedisConnection};
use crate::{Client, ClientRegistry, ReplaceOutcome, StoreError, StoredClient};

/// The set of registered client ids.
const IDS_KEY: &str = "mandate:clients";

/// A hint: the id of the client last found owning an audience.
fn owner_hint_key(audience: &Audience) -> String {
    format!("mandate:audience-owner:{audience}")
}

/// Every client ever written (or offered for registration) as a resource server owning the
/// audience. Ids are added before the record that names the audience is written and never
/// removed, so the set holds at least every current owner: when none of its members owns the
/// audience, no client does. A member is only a candidate; its record decides.
fn ever_owners_key(audience: &Audience) -> String {
    format!("mandate:audience-owners:{audience}")
}

/// The client registry in Redis: each client as JSON ([`StoredClient`]) at
/// `mandate:client:<id>`, and the set of ids at `mandate:clients` for listing.
///
/// Every call reads Redis, so that an admin's change made through any node is seen by every node
/// at once. What is built from a record (the client's keys, imported into OpenSSL from its stored
/// JWKS) is reused for as long as the record read is byte for byte the one it was built from:
/// rebuilding it cost a `private_key_jwt` exchange more than its own signature work.
///
/// The client key and the id set live on different shards of a cluster, so registering is two
/// commands: the client first (`SET NX`, which decides who wins), then its id. A crash between
/// them leaves a client that can authenticate but is not listed; the next `insert_if_absent`
/// of that id (the next start-up seeding it from configuration) adds the missing id.
///
/// Before a resource server's record is written (registered or changed), its id is added to the
/// set of each audience it owns (`mandate:audience-owners:<audience>`), so that the target check
/// of an exchange reads the few clients that ever owned an audience, never every client, even
/// for an audience no one owns. [`RedisClientRegistry::index_audience_owners`] adds the records
/// written before these sets existed.
///
/// A change ([`ClientRegistry::replace`]) is one script on the client's key, which compares the
/// stored `revision` and writes only over the expected one: atomic on a single server and on a
/// cluster alike, unlike `WATCH`, which the shared multiplexed connection cannot hold.
pub struct RedisClientRegistry<C> {
    connection: C,
    replace: Script,
    /// Per client: the record last read and the client built from it.
    built: Mutex<HashMap<ClientId, (String, Arc<Client>)>>,
}

/// KEYS[1] the client key; ARGV[1] the expected revision, ARGV[2] the new record (whose
/// revision is already the next one). Returns -1 when the client is missing, 0 when the stored
/// revision differs, 1 when written. A record without `revision` predates it: revision 0.
const REPLACE: &str = r#"
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
local revision = cjson.decode(current)['revision'] or 0
if revision ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

impl<C> std::fmt::Debug for RedisClientRegistry<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisClientRegistry")
    }
}

impl<C: RedisConnection> RedisClientRegistry<C> {
    /// The client registry over `connection`.
    pub fn new(connection: C) -> Self {
        Self {
            connection,
            replace: Script::new(REPLACE),
            built: Mutex::new(HashMap::new()),
        }
    }
}

fn client_key(id: &ClientId) -> String {
    format!("mandate:client:{}", id.as_str())
}

/// Reads a stored client, checking that it is the one its key names.
fn parse(id: &ClientId, json: &str) -> Result<Client, StoreError> {
    let stored: StoredClient = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("unreadable client {id}: {e}")))?;
    if &stored.id != id {
        return Err(StoreError::Corrupt(format!(
            "the record at {} is for client {}",
            client_key(id),
            stored.id
        )));
    }
    Client::from_stored(stored)
}

impl<C: RedisConnection> RedisClientRegistry<C> {
    async fn read(&self, id: &ClientId) -> Result<Option<Arc<Client>>, StoreError> {
        let Some(json) = self.read_json(id).await? else {
            return Ok(None);
        };
        let reusable = self.built.lock().ok().and_then(|built| {
            built
                .get(id)
                .filter(|(record, _)| *record == json)
                .map(|(_, client)| Arc::clone(client))
        });
        if let Some(client) = reusable {
            return Ok(Some(client));
        }
        let client = Arc::new(parse(id, &json)?);
        if let Ok(mut built) = self.built.lock() {
            built.insert(id.clone(), (json, Arc::clone(&client)));
        }
        Ok(Some(client))
    }

    /// Adds `owner` to the set of each of `audiences`; before the record naming them is written.
    async fn index_owner(
        &self,
        owner: &ClientId,
        audiences: &[Audience],
    ) -> Result<(), StoreError> {
        // One command per audience: the sets are on different shards of a cluster.
        try_join_all(audiences.iter().map(|audience| {
            let mut connection = self.connection.clone();
            async move {
                redis::cmd("SADD")
                    .arg(ever_owners_key(audience))
                    .arg(owner.as_str())
                    .query_async::<i64>(&mut connection)
                    .await
            }
        }))
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// Adds every registered resource server to the sets of the audiences it owns: for records
    /// written before the sets existed. Run at start-up; answers how many clients were indexed.
    /// Only the records' kind and audiences are read: no client is built (which would import
    /// every keyed client's JWKS) and the reads and writes go out together.
    pub async fn index_audience_owners(&self) -> Result<usize, StoreError> {
        let ids = self.ids().await?;
        let records = try_join_all(ids.iter().map(|id| self.read_json(id))).await?;
        let mut owners = Vec::new();
        for (id, json) in ids.iter().zip(records) {
            let Some(json) = json else { continue };
            let stored: StoredClient = serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("unreadable client {id}: {e}")))?;
            if stored.kind == ClientKind::ResourceServer {
                owners.push(stored);
            }
        }
        try_join_all(
            owners
                .iter()
                .map(|owner| self.index_owner(&owner.id, &owner.audiences)),
        )
        .await?;
        Ok(owners.len())
    }

    async fn read_json(&self, id: &ClientId) -> Result<Option<String>, StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("GET")
            .arg(client_key(id))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn ids(&self) -> Result<Vec<ClientId>, StoreError> {
        let mut connection = self.connection.clone();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(IDS_KEY)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut ids = members
            .iter()
            .map(|id| {
                ClientId::parse(id)
                    .map_err(|e| StoreError::Corrupt(format!("{IDS_KEY} holds an invalid id: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }
}

#[async_trait]
impl<C: RedisConnection> ClientRegistry for RedisClientRegistry<C> {
    async fn client(&self, id: &ClientId) -> Result<Option<Arc<Client>>, StoreError> {
        self.read(id).await
    }

    /// One `GET` per client (the clients are spread over the cluster's shards, so no `MGET`).
    /// An id whose client key is missing is left out.
    async fn clients(&self) -> Result<Vec<Arc<Client>>, StoreError> {
        let ids = self.ids().await?;
        let clients = try_join_all(ids.iter().map(|id| self.read(id))).await?;
        Ok(clients.into_iter().flatten().collect())
    }

    /// Every exchange asks this, so it must not read every client: the owner found last time is
    /// kept as a hint (`mandate:audience-owner:<audience>`) and checked against its current
    /// record; only when there is no hint, or the hinted client no longer owns the audience, are
    /// the clients that ever owned it read (its `audience-owners` set, which holds every current
    /// owner), and the hint set (or removed) from what they say. A yes always comes from a client
    /// record read now, so a stale or forged hint changes nothing but the cost.
    async fn audience_owner(&self, audience: &Audience) -> Result<Option<Arc<Client>>, StoreError> {
        let mut connection = self.connection.clone();
        let key = owner_hint_key(audience);
        let hint: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if let Some(id) = hint.and_then(|id| ClientId::parse(&id).ok()) {
            if let Some(client) = self.read(&id).await?.filter(|c| c.owns(audience)) {
                return Ok(Some(client));
            }
        }
        let mut candidates: Vec<String> = redis::cmd("SMEMBERS")
            .arg(ever_owners_key(audience))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        candidates.sort();
        let mut owner = None;
        for id in candidates.iter().filter_map(|id| ClientId::parse(id).ok()) {
            if let Some(client) = self.read(&id).await?.filter(|c| c.owns(audience)) {
                owner = Some(client);
                break;
            }
        }
        let mut update = redis::cmd(if owner.is_some() { "SET" } else { "DEL" });
        update.arg(&key);
        if let Some(owner) = &owner {
            update.arg(owner.id.as_str());
        }
        let _: () = update
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(owner)
    }

    async fn insert_if_absent(&self, client: Client) -> Result<bool, StoreError> {
        let json = serde_json::to_string(&client.to_stored())
            .map_err(|e| StoreError::Corrupt(format!("client not serializable: {e}")))?;
        self.index_owner(&client.id, client.owned_audiences())
            .await?;
        let mut connection = self.connection.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(client_key(&client.id))
            .arg(json)
            .arg("NX")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        // Also when the client was there already: completes an insert cut short before its id
        // was added (adding an id twice changes nothing).
        let _: i64 = redis::cmd("SADD")
            .arg(IDS_KEY)
            .arg(client.id.as_str())
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn replace(&self, client: Client) -> Result<ReplaceOutcome, StoreError> {
        let expected = client.revision;
        let mut next = client.to_stored();
        next.revision = expected
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt(format!("client {}: revision overflow", next.id)))?;
        let json = serde_json::to_string(&next)
            .map_err(|e| StoreError::Corrupt(format!("client not serializable: {e}")))?;
        self.index_owner(&client.id, client.owned_audiences())
            .await?;
        let mut connection = self.connection.clone();
        let written: i64 = self
            .replace
            .key(client_key(&client.id))
            .arg(expected.to_string())
            .arg(json)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(match written {
            1 => ReplaceOutcome::Replaced {
                revision: next.revision,
            },
            0 => ReplaceOutcome::Stale,
            _ => ReplaceOutcome::Missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_lives_at_its_id() {
        let id = ClientId::parse("travel-agent").unwrap();
        assert_eq!(client_key(&id), "mandate:client:travel-agent");
    }
}
