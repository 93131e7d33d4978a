use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mandate_model::{Audience, AuthMethod, ClientId, ClientKind, ClientState, SecretHash};
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
}

impl Client {
    /// Whether the client may authenticate at `now`: active and not past its expiry.
    pub fn may_authenticate(&self, now: DateTime<Utc>) -> bool {
        self.state == ClientState::Active && self.expires_at.is_none_or(|expiry| now < expiry)
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
        })
    }
}

/// A [`Client`] as the store keeps it (JSON in Redis): every field but the built keys.
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
}

/// The client registry.
#[async_trait]
pub trait ClientRegistry: Send + Sync + std::fmt::Debug {
    /// The client with this id, if registered.
    async fn client(&self, id: &ClientId) -> Result<Option<Arc<Client>>, StoreError>;

    /// Every registered client, ordered by id.
    async fn clients(&self) -> Result<Vec<Arc<Client>>, StoreError>;

    /// Registers `client` unless its id is taken; returns whether it was added. Used to seed an
    /// empty store from configuration: what the store already holds wins.
    async fn insert_if_absent(&self, client: Client) -> Result<bool, StoreError>;
}

/// The in-memory client registry.
#[derive(Debug, Default)]
pub struct MemoryClientRegistry {
    clients: RwLock<BTreeMap<ClientId, Arc<Client>>>,
}

impl MemoryClientRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, BTreeMap<ClientId, Arc<Client>>>, StoreError> {
        self.clients
            .read()
            .map_err(|_| StoreError::Corrupt("client registry lock poisoned".into()))
    }
}

#[async_trait]
impl ClientRegistry for MemoryClientRegistry {
    async fn client(&self, id: &ClientId) -> Result<Option<Arc<Client>>, StoreError> {
        Ok(self.read()?.get(id).cloned())
    }

    async fn clients(&self) -> Result<Vec<Arc<Client>>, StoreError> {
        Ok(self.read()?.values().cloned().collect())
    }

    async fn insert_if_absent(&self, client: Client) -> Result<bool, StoreError> {
        let mut clients = self
            .clients
            .write()
            .map_err(|_| StoreError::Corrupt("client registry lock poisoned".into()))?;
        if clients.contains_key(&client.id) {
            return Ok(false);
        }
        clients.insert(client.id.clone(), Arc::new(client));
        Ok(true)
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
