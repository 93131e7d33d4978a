//! What the service tests share: predictable ids and registered clients.

use std::sync::atomic::{AtomicUsize, Ordering};

use mandate_chain::HopId;
use mandate_core::IdGenerator;
use mandate_model::{Audience, AuthMethod, ClientId, ClientKind, ClientState};
use mandate_store::Client;

/// Ids from one counter: `cns_0`, `hop_1`, …
#[derive(Debug, Default)]
pub struct CountingIds(AtomicUsize);

impl IdGenerator for CountingIds {
    fn consent_id(&self) -> String {
        format!("cns_{}", self.0.fetch_add(1, Ordering::SeqCst))
    }

    fn hop_id(&self) -> HopId {
        HopId(format!("hop_{}", self.0.fetch_add(1, Ordering::SeqCst)))
    }
}

/// An active client `id` of `kind` owning `audiences`, authenticating with a client secret.
pub fn client(id: &str, kind: ClientKind, audiences: &[&str]) -> Client {
    Client {
        dpop: Default::default(),
        id: ClientId::parse(id).unwrap(),
        kind,
        owners: vec!["team@example.com".into()],
        description: String::new(),
        state: ClientState::Active,
        expires_at: None,
        auth_method: AuthMethod::ClientSecretBasic,
        secret_hash: None,
        keys: None,
        jwks: None,
        upstream_ids: vec![],
        audiences: audiences
            .iter()
            .map(|a| Audience::parse(a).unwrap())
            .collect(),
        previous_secret: None,
        secret_rotated_at: None,
        created_at: None,
        created_by: None,
        updated_at: None,
        updated_by: None,
        revision: 0,
    }
}
