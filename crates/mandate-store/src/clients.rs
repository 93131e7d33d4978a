use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mandate_model::{Audience, AuthMethod, ClientId, ClientKind, ClientState, SecretHash};
use mandate_token::VerifyingKeySet;
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
    /// For `private_key_jwt`: the client's public keys.
    pub keys: Option<VerifyingKeySet>,
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
