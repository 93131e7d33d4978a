//! Stored consent grants as administrators manage them (consent evidence 3; docs/ADMIN-API.md,
//! "Consent grants"): create, list, withdraw, each change audited. Withdrawal revokes before it
//! removes, so that a withdrawal cut short still leaves the grant unusable.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use mandate_chain::{ConsentGrant, ConsentStore, StoreFailure};
use mandate_model::{Audience, ClientId, ClientKind, Clock, ScopeSet, Subject};
use mandate_store::{AuditEvent, AuditLog, ClientRegistry};
use serde::Deserialize;

use crate::ids::IdGenerator;
use crate::revocation::{RevocationOutcome, RevocationService, RevokeError};

/// Why a consent request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The request breaks a rule; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// No grant has that id.
    #[error("no consent grant '{0}'")]
    NotFound(String),
    /// The id is taken (a given id, or a generated one: never expected with 128 random bits);
    /// nothing changed.
    #[error("consent grant id '{0}' exists")]
    Exists(String),
    /// A given id names a grant an admin withdrew: it stays withdrawn until the grant would have
    /// expired, so it is not created again (it would be listed, but no exchange could use it).
    #[error("consent grant '{0}' was withdrawn; give it a new id (or none)")]
    Withdrawn(String),
    /// The store could not be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreFailure> for ConsentError {
    fn from(error: StoreFailure) -> Self {
        ConsentError::Unavailable(error.0)
    }
}

impl From<mandate_store::StoreError> for ConsentError {
    fn from(error: mandate_store::StoreError) -> Self {
        ConsentError::Unavailable(error.to_string())
    }
}

impl From<RevokeError> for ConsentError {
    fn from(error: RevokeError) -> Self {
        match error {
            RevokeError::Invalid(message) => ConsentError::Invalid(message),
            RevokeError::NotFound(what) | RevokeError::Unavailable(what) => {
                ConsentError::Unavailable(what)
            }
        }
    }
}

/// `POST /admin/consents`: a grant, with an id the server makes unless one is given
/// (`mandate apply` gives the content id a configuration row has, [`content_id`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    /// The id to store it under (1 to 128 characters of `A-Z a-z 0-9 _ -`).
    #[serde(default)]
    pub id: Option<String>,
    /// The user, `<alias>|<sub>` (or bare for the `subject_as_is` issuer).
    pub subject: String,
    /// A registered agent.
    pub actor: String,
    /// Where the agent may go for the user.
    pub audience: String,
    /// What it may do there (at least one scope).
    pub scopes: Vec<String>,
    /// Until when; in the future.
    pub expires_at: DateTime<Utc>,
}

/// The id of the grant a `[[consents]]` row describes: the same row has the same id on every
/// node, every restart and in `mandate apply`, so that seeding and applying are idempotent.
/// The expiry is not part of it (a row whose expiry changed is the same grant).
pub fn content_id(
    subject: &impl std::fmt::Display,
    actor: &impl std::fmt::Display,
    audience: &impl std::fmt::Display,
    scopes: &impl std::fmt::Display,
) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{subject}\n{actor}\n{audience}\n{scopes}").as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("cns_{hex}")
}

/// A grant id as the path names it: at most 128 characters of `[A-Za-z0-9_-]` (configured and
/// generated ids both are), so that nothing else reaches the store's keys.
pub fn check_id(id: &str) -> Result<&str, ConsentError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(id)
    } else {
        Err(ConsentError::Invalid(
            "a consent id is 1 to 128 characters of A-Z a-z 0-9 _ -".into(),
        ))
    }
}

/// The grant a request describes, checked; the actor's registration is checked by
/// [`ConsentService::create`]. Pure.
pub fn grant_from_request(
    request: NewConsent,
    id: String,
    now: DateTime<Utc>,
) -> Result<ConsentGrant, ConsentError> {
    let invalid =
        |field: &str, e: &dyn std::fmt::Display| ConsentError::Invalid(format!("{field}: {e}"));
    let subject = Subject::parse(&request.subject).map_err(|e| invalid("subject", &e))?;
    let actor = ClientId::parse(&request.actor).map_err(|e| invalid("actor", &e))?;
    let audience = Audience::parse(&request.audience).map_err(|e| invalid("audience", &e))?;
    let scopes = ScopeSet::from_tokens(&request.scopes).map_err(|e| invalid("scopes", &e))?;
    if scopes.is_empty() {
        return Err(ConsentError::Invalid(
            "scopes needs at least one scope".into(),
        ));
    }
    if request.expires_at <= now {
        return Err(ConsentError::Invalid(
            "expires_at is not in the future".into(),
        ));
    }
    Ok(ConsentGrant {
        id,
        subject,
        actor,
        audience,
        scopes,
        expires_at: request.expires_at.timestamp(),
    })
}

/// Consent grants: the store, the registry (a grant's actor must be a registered agent), the
/// revocation service (withdrawal revokes), the audit stream, the clock and the ids.
#[derive(Debug, Clone)]
pub struct ConsentService {
    consents: Arc<dyn ConsentStore>,
    clients: Arc<dyn ClientRegistry>,
    revocation: RevocationService,
    audit: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

impl ConsentService {
    /// A service over these ports.
    pub fn new(
        consents: Arc<dyn ConsentStore>,
        clients: Arc<dyn ClientRegistry>,
        revocation: RevocationService,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        Self {
            consents,
            clients,
            revocation,
            audit,
            clock,
            ids,
        }
    }

    async fn record(&self, by: &str, action: &str, target: &str, detail: String) {
        let at = self.clock.now().timestamp_millis();
        self.audit
            .record(AuditEvent::new(at, by, action, target, detail))
            .await;
    }

    /// Stores a new grant for a registered agent (audited as `consent.create` by `by`). A dry
    /// run checks everything (the id free and never withdrawn) and stores nothing.
    pub async fn create(
        &self,
        request: NewConsent,
        by: &str,
        dry_run: bool,
    ) -> Result<ConsentGrant, ConsentError> {
        let id = match &request.id {
            Some(id) => {
                let id = check_id(id)?.to_owned();
                if self.revocation.consent_withdrawn(&id).await? {
                    return Err(ConsentError::Withdrawn(id));
                }
                id
            }
            None => self.ids.consent_id(),
        };
        let grant = grant_from_request(request, id, self.clock.now())?;
        let actor = self.clients.client(&grant.actor).await?;
        if actor.is_none_or(|client| client.kind != ClientKind::Agent) {
            return Err(ConsentError::Invalid(format!(
                "actor: '{}' is not a registered agent",
                grant.actor
            )));
        }
        if dry_run {
            if self.consents.consent(&grant.id).await?.is_some() {
                return Err(ConsentError::Exists(grant.id));
            }
            return Ok(grant);
        }
        if !self.consents.insert_if_absent(grant.clone()).await? {
            return Err(ConsentError::Exists(grant.id));
        }
        let detail = format!(
            "{} lets {} use {} ({})",
            grant.subject, grant.actor, grant.audience, grant.scopes
        );
        self.record(by, "consent.create", &grant.id, detail).await;
        Ok(grant)
    }

    /// The grants, ordered by id, optionally of one subject and/or one actor.
    pub async fn list(
        &self,
        subject: Option<&Subject>,
        actor: Option<&ClientId>,
    ) -> Result<Vec<ConsentGrant>, ConsentError> {
        Ok(self.consents.list(subject, actor).await?)
    }

    /// Withdraws a grant: writes `consent:<id>` and `chain:` for every chain rooted on it
    /// ([`RevocationService::withdraw_consent`]) first, then removes the grant (audited as
    /// `consent.withdraw`).
    pub async fn withdraw(
        &self,
        id: &str,
        reason: &str,
        by: &str,
    ) -> Result<RevocationOutcome, ConsentError> {
        let id = check_id(id)?;
        let grant = self
            .consents
            .consent(id)
            .await?
            .ok_or_else(|| ConsentError::NotFound(id.to_owned()))?;
        let outcome = self
            .revocation
            .withdraw_consent(&grant.id, grant.expires_at, reason, by)
            .await?;
        self.consents.remove(&grant.id).await?;
        let detail = format!(
            "{} entries, {} hops: {reason}",
            outcome.entries.len(),
            outcome.hops_revoked.len()
        );
        self.record(by, "consent.withdraw", id, detail).await;
        Ok(outcome)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::IdGenerator;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .into()
    }

    fn refused(body: serde_json::Value) -> String {
        let request: NewConsent = serde_json::from_value(body).unwrap();
        match grant_from_request(request, "cns_x".into(), now()) {
            Err(ConsentError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn body() -> serde_json::Value {
        json!({"subject": "corp|alice", "actor": "assistant",
            "audience": "https://calendar.example.com", "scopes": ["calendar.read"],
            "expires_at": "2030-02-01T00:00:00Z"})
    }

    #[test]
    fn a_valid_request_makes_a_grant() {
        let request: NewConsent = serde_json::from_value(body()).unwrap();
        let grant = grant_from_request(request, "cns_x".into(), now()).unwrap();
        assert_eq!(grant.subject.as_str(), "corp|alice");
        assert_eq!(grant.actor.as_str(), "assistant");
        assert_eq!(grant.expires_at, 1_896_134_400);
    }

    #[test]
    fn every_field_is_checked() {
        let with = |field: &str, value: serde_json::Value| {
            let mut body = body();
            body[field] = value;
            body
        };
        assert!(refused(with("subject", json!(""))).starts_with("subject:"));
        assert!(refused(with("actor", json!("Not An Id"))).starts_with("actor:"));
        assert!(
            refused(with("audience", json!("http://calendar.example.com")))
                .starts_with("audience:")
        );
        assert!(refused(with("scopes", json!([]))).contains("at least one"));
        assert!(refused(with("scopes", json!(["a b"]))).starts_with("scopes:"));
        assert!(refused(with("expires_at", json!("2029-12-31T00:00:00Z"))).contains("future"));
        let mut unknown = body();
        unknown["colour"] = json!("blue");
        assert!(serde_json::from_value::<NewConsent>(unknown).is_err());
    }

    #[test]
    fn a_content_id_names_the_grant_not_its_expiry() {
        let id = content_id(
            &"corp|alice",
            &"assistant",
            &"https://cal.example",
            &"read write",
        );
        assert_eq!(
            id,
            content_id(
                &"corp|alice",
                &"assistant",
                &"https://cal.example",
                &"read write"
            )
        );
        assert!(id.starts_with("cns_") && id.len() == 20, "{id}");
        assert!(check_id(&id).is_ok());
        for other in [
            content_id(
                &"corp|bob",
                &"assistant",
                &"https://cal.example",
                &"read write",
            ),
            content_id(
                &"corp|alice",
                &"booking",
                &"https://cal.example",
                &"read write",
            ),
            content_id(
                &"corp|alice",
                &"assistant",
                &"https://mail.example",
                &"read write",
            ),
            content_id(&"corp|alice", &"assistant", &"https://cal.example", &"read"),
        ] {
            assert_ne!(id, other);
        }
    }

    #[test]
    fn paths_are_checked() {
        let id = crate::RandomIds.consent_id();
        assert!(check_id(&id).is_ok());
        assert!(check_id("cns_0123abcd").is_ok());
        for bad in ["", "a:b", "cns_ x", "a/b", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
