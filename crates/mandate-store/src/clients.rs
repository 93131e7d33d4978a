use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mandate_model::{
    Audience, AuthMethod, ClientId, ClientKind, ClientState, DpopPolicy, SecretHash,
};
use mandate_token::{Algorithm, VerifyingKeySet};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// How an upstream identity provider knows an agent (DESIGN.md section 3): an ID token from
/// `issuer` whose `aud`/`azp` is `client_id` names this agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamId {
    /// The upstream issuer identifier.
    pub issuer: String,
    /// The client id the upstream issuer uses for this agent.
    pub client_id: String,
}

/// The secret a rotation replaced, still accepted until `valid_until` (the overlap window), so
/// that a client can switch to its new secret without an outage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousSecret {
    /// The hash of the replaced secret.
    pub hash: SecretHash,
    /// The end of the overlap window: from this instant on, only the new secret authenticates.
    pub valid_until: DateTime<Utc>,
}

/// A registered OAuth client: an agent or a resource server.
#[derive(Debug)]
pub struct Client {
    /// The client id.
    pub id: ClientId,
    /// Agent or resource server.
    pub kind: ClientKind,
    /// Who answers for this client (at least one).
    pub owners: Vec<String>,
    /// What it is for.
    pub description: String,
    /// Lifecycle state; only `active` clients authenticate.
    pub state: ClientState,
    /// After this instant the client can no longer authenticate.
    pub expires_at: Option<DateTime<Utc>>,
    /// The one authentication method this client uses.
    pub auth_method: AuthMethod,
    /// For the secret methods: the hash of the secret.
    pub secret_hash: Option<SecretHash>,
    /// For `private_key_jwt`: the client's public keys, built from [`Client::jwks`].
    pub keys: Option<VerifyingKeySet>,
    /// The JWKS document `keys` were built from, kept so that the client can be stored.
    pub jwks: Option<serde_json::Value>,
    /// Upstream identities of this agent.
    pub upstream_ids: Vec<UpstreamId>,
    /// For resource servers: the audiences it owns.
    pub audiences: Vec<Audience>,
    /// The secret a rotation replaced, while its overlap window lasts.
    pub previous_secret: Option<PreviousSecret>,
    /// When the secret was last rotated.
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// When the client was registered (unknown for records older than this field).
    pub created_at: Option<DateTime<Utc>>,
    /// The admin credential that registered it, or `config` for clients seeded from the file.
    pub created_by: Option<String>,
    /// When it last changed.
    pub updated_at: Option<DateTime<Utc>>,
    /// The admin credential that last changed it.
    pub updated_by: Option<String>,
    /// Counts the changes: [`ClientRegistry::replace`] writes only over the revision it was
    /// given, so that two admins cannot overwrite each other's change unseen.
    pub revision: u64,
    /// Whether its tokens must be DPoP-bound (an agent's requests, a resource server's
    /// audiences).
    pub dpop: DpopPolicy,
}

impl Client {
    /// The audiences this client owns: a resource server's, none for an agent.
    pub fn owned_audiences(&self) -> &[Audience] {
        if self.kind == ClientKind::ResourceServer {
            &self.audiences
        } else {
            &[]
        }
    }

    /// Whether this client is a resource server owning `audience`.
    pub fn owns(&self, audience: &Audience) -> bool {
        self.owned_audiences().contains(audience)
    }

    /// Whether the client may authenticate at `now`: active and not past its expiry.
    pub fn may_authenticate(&self, now: DateTime<Utc>) -> bool {
        self.state == ClientState::Active && self.expires_at.is_none_or(|expiry| now < expiry)
    }

    /// Whether `presented` is this client's secret at `now`: the current one, or the one a
    /// rotation replaced while its overlap window lasts. Both digests are always compared, so
    /// the time taken does not tell which one matched.
    pub fn secret_matches(&self, presented: &str, now: DateTime<Utc>) -> bool {
        let current = self
            .secret_hash
            .as_ref()
            .is_some_and(|hash| hash.matches(presented));
        let previous = self
            .previous_secret
            .as_ref()
            .is_some_and(|previous| previous.hash.matches(presented) && now < previous.valid_until);
        current | previous
    }

    /// The client as it is stored: everything but the built `keys`, which are rebuilt from
    /// `jwks` by [`Client::from_stored`].
    pub fn to_stored(&self) -> StoredClient {
        StoredClient {
            id: self.id.clone(),
            kind: self.kind,
            owners: self.owners.clone(),
            description: self.description.clone(),
            state: self.state,
            expires_at: self.expires_at,
            auth_method: self.auth_method,
            secret_hash: self.secret_hash.clone(),
            jwks: self.jwks.clone(),
            upstream_ids: self.upstream_ids.clone(),
            audiences: self.audiences.clone(),
            previous_secret: self.previous_secret.clone(),
            secret_rotated_at: self.secret_rotated_at,
            created_at: self.created_at,
            created_by: self.created_by.clone(),
            updated_at: self.updated_at,
            updated_by: self.updated_by.clone(),
            revision: self.revision,
            dpop: self.dpop,
        }
    }

    /// The client a stored record describes, its keys rebuilt from the stored JWKS (every
    /// algorithm mandate verifies is allowed, as when the client was registered). A JWKS that
    /// no longer builds is [`StoreError::Corrupt`]: the client cannot be used as stored.
    pub fn from_stored(stored: StoredClient) -> Result<Self, StoreError> {
        let keys = stored
            .jwks
            .as_ref()
            .map(|jwks| VerifyingKeySet::from_jwks(jwks, &Algorithm::ALL))
            .transpose()
            .map_err(|e| {
                StoreError::Corrupt(format!("client {}: stored JWKS unusable: {e}", stored.id))
            })?;
        Ok(Self {
            id: stored.id,
            kind: stored.kind,
            owners: stored.owners,
            description: stored.description,
            state: stored.state,
            expires_at: stored.expires_at,
            auth_method: stored.auth_method,
            secret_hash: stored.secret_hash,
            keys,
            jwks: stored.jwks,
            upstream_ids: stored.upstream_ids,
            audiences: stored.audiences,
            previous_secret: stored.previous_secret,
            secret_rotated_at: stored.secret_rotated_at,
            created_at: stored.created_at,
            created_by: stored.created_by,
            updated_at: stored.updated_at,
            updated_by: stored.updated_by,
            revision: stored.revision,
            dpop: stored.dpop,
        })
    }
}

/// A [`Client`] as the store keeps it (JSON in Redis): every field but the built keys. Fields
/// added after the first release default when absent, so older records stay readable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredClient {
    /// The client id.
    pub id: ClientId,
    /// Agent or resource server.
    pub kind: ClientKind,
    /// Who answers for this client.
    pub owners: Vec<String>,
    /// What it is for.
    pub description: String,
    /// Lifecycle state.
    pub state: ClientState,
    /// After this instant the client can no longer authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The one authentication method this client uses.
    pub auth_method: AuthMethod,
    /// For the secret methods: the hash of the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<SecretHash>,
    /// For `private_key_jwt`: the client's JWKS document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// Upstream identities of this agent.
    #[serde(default)]
    pub upstream_ids: Vec<UpstreamId>,
    /// For resource servers: the audiences it owns.
    #[serde(default)]
    pub audiences: Vec<Audience>,
    /// The secret a rotation replaced, while its overlap window lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<PreviousSecret>,
    /// When the secret was last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// When the client was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Who registered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// When it last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Who last changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// The change counter ([`Client::revision`]); 0 for records older than it.
    #[serde(default)]
    pub revision: u64,
    /// [`Client::dpop`]; left out when `allowed`.
    #[serde(default, skip_serializing_if = "DpopPolicy::is_allowed")]
    pub dpop: DpopPolicy,
}

/// What [`ClientRegistry::replace`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceOutcome {
    /// The client was replaced; it now has this revision.
    Replaced {
        /// The stored revision.
        revision: u64,
    },
    /// The stored client has another revision (someone changed it since it was read): nothing
    /// was written.
    Stale,
    /// No client has that id: nothing was written.
    Missing,
}

/// The client registry.
#[async_trait]
pub trait ClientRegistry: Send + Sync + std::fmt::Debug {
    /// The client with this id, if registered.
    async fn client(&self, id: &ClientId) -> Result<Option<Arc<Client>>, StoreError>;

    /// Every registered client, ordered by id.
    async fn clients(&self) -> Result<Vec<Arc<Client>>, StoreError>;

    /// Whether a registered resource server owns `audience` (the token exchange's target
    /// check).
    async fn audience_owned(&self, audience: &Audience) -> Result<bool, StoreError> {
        Ok(self.audience_owner(audience).await?.is_some())
    }

    /// A registered resource server owning `audience`, if any (the first by id when several
    /// do): the exchange reads its DPoP policy.
    async fn audience_owner(&self, audience: &Audience) -> Result<Option<Arc<Client>>, StoreError> {
        Ok(self.clients().await?.into_iter().find(|c| c.owns(audience)))
    }

    /// Registers `client` unless its id is taken; returns whether it was added. Used to seed an
    /// empty store from configuration: what the store already holds wins.
    async fn insert_if_absent(&self, client: Client) -> Result<bool, StoreError>;

    /// Replaces the client registered under `client.id` by `client`, provided the stored
    /// client's revision is still `client.revision` (compare-and-set); the stored record gets
    /// the next revision. Two admins who read the same revision cannot both write: the second
    /// is told [`ReplaceOutcome::Stale`] and must read again.
    async fn replace(&self, client: Client) -> Result<ReplaceOutcome, StoreError>;
}

/// The in-memory client registry.
#[derive(Debug, Default)]
pub struct MemoryClientRegistry {
    clients: RwLock<Registered>,
}

/// The clients, and the resource servers owning each audience: the exchange's target check
/// asks on every request, and should not walk every client to answer.
#[derive(Debug, Default)]
struct Registered {
    by_id: BTreeMap<ClientId, Arc<Client>>,
    owners: HashMap<Audience, BTreeSet<ClientId>>,
}

impl Registered {
    fn put(&mut self, client: Client) {
        if let Some(previous) = self.by_id.remove(&client.id) {
            for audience in previous.owned_audiences() {
                if let Some(owners) = self.owners.get_mut(audience) {
                    owners.remove(&previous.id);
                    if owners.is_empty() {
                        self.owners.remove(audience);
                    }
                }
            }
        }
        for audience in client.owned_audiences() {
            self.owners
                .entry(audience.clone())
                .or_default()
                .insert(client.id.clone());
        }
        self.by_id.insert(client.id.clone(), Arc::new(client));
    }
}

impl MemoryClientRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Registered>, StoreError> {
        self.clients
            .read()
            .map_err(|_| StoreError::Corrupt("client registry lock poisoned".into()))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Registered>, StoreError> {
        self.clients
            .write()
            .map_err(|_| StoreError::Corrupt("client registry lock poisoned".into()))
    }
}

#[async_trait]
impl ClientRegistry for MemoryClientRegistry {
    async fn client(&self, id: &ClientId) -> Result<Option<Arc<Client>>, StoreError> {
        Ok(self.read()?.by_id.get(id).cloned())
    }

    async fn clients(&self) -> Result<Vec<Arc<Client>>, StoreError> {
        Ok(self.read()?.by_id.values().cloned().collect())
    }

    async fn audience_owned(&self, audience: &Audience) -> Result<bool, StoreError> {
        Ok(self.read()?.owners.contains_key(audience))
    }

    async fn audience_owner(&self, audience: &Audience) -> Result<Option<Arc<Client>>, StoreError> {
        let registered = self.read()?;
        Ok(registered
            .owners
            .get(audience)
            .and_then(|owners| owners.first())
            .and_then(|id| registered.by_id.get(id))
            .cloned())
    }

    async fn insert_if_absent(&self, client: Client) -> Result<bool, StoreError> {
        let mut clients = self.write()?;
        if clients.by_id.contains_key(&client.id) {
            return Ok(false);
        }
        clients.put(client);
        Ok(true)
    }

    async fn replace(&self, mut client: Client) -> Result<ReplaceOutcome, StoreError> {
        let mut clients = self.write()?;
        let Some(current) = clients.by_id.get(&client.id) else {
            return Ok(ReplaceOutcome::Missing);
        };
        if current.revision != client.revision {
            return Ok(ReplaceOutcome::Stale);
        }
        client.revision += 1;
        let revision = client.revision;
        clients.put(client);
        Ok(ReplaceOutcome::Replaced { revision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_client_registry_meets_the_contract() {
        crate::contract::clients(&MemoryClientRegistry::new()).await;
    }

    fn stored(jwks: Option<serde_json::Value>) -> StoredClient {
        StoredClient {
            dpop: Default::default(),
            id: ClientId::parse("assistant").unwrap(),
            kind: ClientKind::Agent,
            owners: vec!["alice@example.com".into()],
            description: String::new(),
            state: ClientState::Active,
            expires_at: None,
            auth_method: AuthMethod::PrivateKeyJwt,
            secret_hash: None,
            jwks,
            upstream_ids: vec![],
            audiences: vec![],
            previous_secret: None,
            secret_rotated_at: None,
            created_at: None,
            created_by: None,
            updated_at: None,
            updated_by: None,
            revision: 0,
        }
    }

    #[test]
    fn a_stored_client_round_trips_through_json_with_its_keys() {
        let key =
            mandate_token::SigningKey::generate(mandate_token::SigningAlgorithm::Es256).unwrap();
        let record = stored(Some(
            serde_json::json!({ "keys": [key.public_key().jwk()] }),
        ));
        let json = serde_json::to_string(&record).unwrap();
        let back: StoredClient = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
        let client = Client::from_stored(back).unwrap();
        assert_eq!(client.keys.as_ref().map(VerifyingKeySet::len), Some(1));
        assert_eq!(client.to_stored(), record);
    }

    #[test]
    fn a_stored_jwks_that_no_longer_builds_is_corrupt() {
        let broken = stored(Some(
            serde_json::json!({ "keys": [{ "kty": "oct", "k": "AA" }] }),
        ));
        assert!(matches!(
            Client::from_stored(broken),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            Client::from_stored(stored(Some(serde_json::json!({ "keys": [] })))),
            Err(StoreError::Corrupt(_))
        ));
        assert!(Client::from_stored(stored(None)).unwrap().keys.is_none());
    }
}

#[cfg(test)]
mod lifecycle_tests {
    use super::*;

    fn instant(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().into()
    }

    #[test]
    fn a_record_written_before_the_lifecycle_fields_is_still_readable() {
        let old = r#"{"id":"assistant","kind":"agent","owners":["a@example.com"],
            "description":"","state":"active","auth_method":"client_secret_basic",
            "secret_hash":"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}"#;
        let stored: StoredClient = serde_json::from_str(old).unwrap();
        assert_eq!(stored.revision, 0);
        assert!(stored.created_at.is_none() && stored.created_by.is_none());
        assert!(stored.previous_secret.is_none() && stored.secret_rotated_at.is_none());
        let client = Client::from_stored(stored).unwrap();
        assert!(client.secret_matches("abc", Utc::now()));
    }

    #[test]
    fn the_previous_secret_authenticates_only_inside_its_window() {
        let mut stored: StoredClient = serde_json::from_value(serde_json::json!({
            "id": "assistant", "kind": "agent", "owners": ["a@example.com"], "description": "",
            "state": "active", "auth_method": "client_secret_basic",
            "secret_hash": SecretHash::of("new-secret").to_string(),
        }))
        .unwrap();
        let until = instant("2030-01-01T00:00:00Z");
        stored.previous_secret = Some(PreviousSecret {
            hash: SecretHash::of("old-secret"),
            valid_until: until,
        });
        let json = serde_json::to_string(&stored).unwrap();
        let client = Client::from_stored(serde_json::from_str(&json).unwrap()).unwrap();
        let before = until - chrono::Duration::seconds(1);
        assert!(client.secret_matches("new-secret", before));
        assert!(client.secret_matches("old-secret", before));
        assert!(!client.secret_matches("old-secret", until));
        assert!(client.secret_matches("new-secret", until));
        assert!(!client.secret_matches("other", before));
        assert!(!client.secret_matches("", before));
    }

    #[test]
    fn a_client_without_a_secret_matches_none() {
        let stored: StoredClient = serde_json::from_value(serde_json::json!({
            "id": "jwt-agent", "kind": "agent", "owners": ["a@example.com"], "description": "",
            "state": "active", "auth_method": "private_key_jwt",
        }))
        .unwrap();
        let client = Client::from_stored(stored).unwrap();
        assert!(!client.secret_matches("", Utc::now()));
        assert!(!client.secret_matches("anything", Utc::now()));
    }
}
