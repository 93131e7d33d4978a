//! Revocation as the admin API and RFC 7009 use it (DESIGN.md section 6): what each grain covers,
//! how long its entry must live, and the facts a token is checked by.

use mandate_chain::{ChainId, HopId, HopRecord};
use mandate_revocation::{Revocation, RevocationKind, RevocationRecord, TokenFacts};
use serde::Serialize;

use crate::state::AppState;

/// Why a revocation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// Nothing with that id is known.
    #[error("{0} not found")]
    NotFound(String),
    /// The input is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The store did not answer: nothing was revoked.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// What a revocation did, as the admin API answers it.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationOutcome {
    /// The entries written.
    pub entries: Vec<RevocationRecord>,
    /// The hops now dead because of them (those the ledger knows).
    pub hops_revoked: Vec<String>,
}

/// The facts of a hop just recorded: everything its token depends on.
pub fn facts_of_hop(hop: &HopRecord) -> TokenFacts {
    TokenFacts {
        hop: Some(hop.id.to_string()),
        ancestors: hop.ancestors.iter().map(ToString::to_string).collect(),
        chain: Some(hop.chain_id.to_string()),
        consents: hop.rooted_consents().map(str::to_owned).collect(),
        agents: TokenFacts::agents_named(
            &hop.actors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            hop.client_id.as_str(),
            &hop.audience.to_string(),
        ),
        subject: Some(hop.subject.to_string()),
        issued_at: hop.issued_at,
    }
}

impl AppState {
    /// How long an entry outlives what it covers: the largest skew any verifier may tolerate,
    /// not this server's own (an app's verifier may be set more lenient than the server).
    fn skew_ms(&self) -> i64 {
        let server = i64::from(self.settings.tokens.clock_skew_secs);
        server.max(mandate_revocation::MAX_VERIFIER_CLOCK_SKEW_SECS) * 1000
    }

    /// The longest any mandate token lives (an agent entry must outlive all of them).
    fn longest_token_ms(&self) -> i64 {
        let tokens = &self.settings.tokens;
        i64::from(tokens.access_token_ttl_secs.max(tokens.id_jag_ttl_secs)) * 1000
    }

    /// The longest any accepted upstream token lives (a subject entry must outlive those too).
    fn longest_upstream_ms(&self) -> i64 {
        self.trusted_issuers
            .iter()
            .map(|ti| i64::from(ti.settings.max_token_age_secs) * 1000)
            .max()
            .unwrap_or(0)
            .max(self.longest_token_ms())
    }

    /// The longest any entry lives: how much of the revocation stream must be kept.
    pub fn longest_entry_ms(&self) -> i64 {
        self.longest_upstream_ms().max(self.longest_token_ms()) + self.skew_ms()
    }

    async fn write(&self, entries: Vec<Revocation>) -> Result<Vec<RevocationRecord>, RevokeError> {
        self.revocations
            .revoke(entries)
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))
    }

    async fn now_ms(&self) -> Result<i64, RevokeError> {
        self.revocations
            .now_ms()
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))
    }

    /// A chain entry lives until the latest of its hops and their upstream grants has expired
    /// (so the grant cannot start the chain again while it is valid), plus skew.
    fn chain_entry_until(&self, hops: &[HopRecord], fallback_secs: i64) -> i64 {
        let latest = hops
            .iter()
            .map(|h| {
                h.upstream
                    .as_ref()
                    .map_or(h.expires_at, |u| u.expires_at.max(h.expires_at))
            })
            .max()
            .unwrap_or(fallback_secs);
        latest * 1000 + self.skew_ms()
    }

    async fn chain_hops(&self, chain: &ChainId) -> Result<Vec<HopRecord>, RevokeError> {
        self.ledger
            .chain(chain)
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))
    }

    /// Revokes a hop and its subtree. Its entry lives until the hop's `exp` + skew: no descendant
    /// outlives it.
    pub async fn revoke_hop(
        &self,
        hop_id: &str,
        reason: &str,
        by: &str,
    ) -> Result<RevocationOutcome, RevokeError> {
        let hop = self
            .ledger
            .hop(&HopId(hop_id.to_owned()))
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))?
            .ok_or_else(|| RevokeError::NotFound(format!("hop {hop_id}")))?;
        let entries = self
            .write(vec![Revocation {
                kind: RevocationKind::Hop,
                id: hop.id.to_string(),
                until_ms: hop.expires_at * 1000 + self.skew_ms(),
                reason: reason.to_owned(),
                by: by.to_owned(),
            }])
            .await?;
        let subtree = self
            .chain_hops(&hop.chain_id)
            .await?
            .into_iter()
            .filter(|h| h.id == hop.id || h.ancestors.contains(&hop.id))
            .map(|h| h.id.to_string())
            .collect();
        Ok(RevocationOutcome {
            entries,
            hops_revoked: subtree,
        })
    }

    /// RFC 7009 for `client`: a genuine, unexpired mandate token whose `client_id` is the
    /// client's has its hop (and subtree) revoked and audited; anything else changes nothing and is
    /// not an error, so the answer reveals nothing about the token (decision D8). Only a store
    /// failure is an error (503).
    pub async fn revoke_own_token(
        &self,
        client: &mandate_store::Client,
        token: &str,
    ) -> Result<(), crate::error::OAuthError> {
        let Some(claims) = self.own_token_claims(token) else {
            return Ok(());
        };
        if claims.client_id != client.id.as_str() {
            return Ok(());
        }
        let by = format!("client:{}", client.id);
        match self
            .revoke_hop(&claims.jti, "revoked by its client (RFC 7009)", &by)
            .await
        {
            Ok(outcome) => {
                self.audit
                    .record(crate::audit::AuditEvent {
                        at: outcome.entries.first().map_or(0, |e| e.at),
                        actor: by,
                        action: "revoke.hop".into(),
                        target: claims.jti,
                        detail: format!("{} hops", outcome.hops_revoked.len()),
                    })
                    .await;
                Ok(())
            }
            Err(RevokeError::Unavailable(error)) => {
                tracing::warn!(%error, "revocation store unavailable");
                Err(crate::error::OAuthError::unavailable())
            }
            // Unknown to the ledger (issued by another node's memory store, or past retention).
            Err(_) => Ok(()),
        }
    }

    /// Revokes a whole chain, and with it every new exchange of its upstream grant: the entry
    /// lives until the upstream grant (and every hop) has expired, plus skew.
    pub async fn revoke_chain(
        &self,
        chain_id: &str,
        reason: &str,
        by: &str,
    ) -> Result<RevocationOutcome, RevokeError> {
        let hops = self.chain_hops(&ChainId(chain_id.to_owned())).await?;
        if hops.is_empty() {
            return Err(RevokeError::NotFound(format!("chain {chain_id}")));
        }
        let until = self.chain_entry_until(&hops, 0);
        let entries = self
            .write(vec![Revocation {
                kind: RevocationKind::Chain,
                id: chain_id.to_owned(),
                until_ms: until,
                reason: reason.to_owned(),
                by: by.to_owned(),
            }])
            .await?;
        Ok(RevocationOutcome {
            entries,
            hops_revoked: hops.iter().map(|h| h.id.to_string()).collect(),
        })
    }

    /// Revokes every delegation of a user made so far: mandate tokens with that `sub` and
    /// upstream subject tokens issued up to now.
    pub async fn revoke_subject(
        &self,
        subject: &str,
        reason: &str,
        by: &str,
    ) -> Result<RevocationOutcome, RevokeError> {
        let subject = mandate_model::Subject::parse(subject)
            .map_err(|e| RevokeError::Invalid(e.to_string()))?;
        let lifetime = self.longest_upstream_ms();
        self.revoke_at_now(
            RevocationKind::Subject,
            subject.as_str(),
            lifetime,
            reason,
            by,
        )
        .await
    }

    /// Revokes every live token in which the agent is the client or any actor (suspension and
    /// retirement write this before changing the agent's state).
    pub async fn revoke_agent(
        &self,
        client_id: &str,
        reason: &str,
        by: &str,
    ) -> Result<RevocationOutcome, RevokeError> {
        let lifetime = self.longest_token_ms();
        self.revoke_at_now(RevocationKind::Agent, client_id, lifetime, reason, by)
            .await
    }

    /// Writes a timed entry (agent or subject) at the store's now, living `lifetime_ms` + skew:
    /// it must outlive every token it covers.
    async fn revoke_at_now(
        &self,
        kind: RevocationKind,
        id: &str,
        lifetime_ms: i64,
        reason: &str,
        by: &str,
    ) -> Result<RevocationOutcome, RevokeError> {
        let now = self.now_ms().await?;
        let entries = self
            .write(vec![Revocation {
                kind,
                id: id.to_owned(),
                until_ms: now + lifetime_ms + self.skew_ms(),
                reason: reason.to_owned(),
                by: by.to_owned(),
            }])
            .await?;
        Ok(RevocationOutcome {
            entries,
            hops_revoked: vec![],
        })
    }

    /// Withdraws a consent grant: `consent:<id>` stops new roots on it, then every chain already
    /// rooted on it is revoked.
    ///
    /// The consent entry is written before the ledger is asked which chains rest on the grant.
    /// An exchange rooting a new chain on it records its hop and only then checks the list again
    /// (with the grant among its facts): either its hop was recorded before the ledger was asked,
    /// and its chain is revoked with the others, or its check comes after the consent entry and
    /// refuses it. Asking first would let a root recorded between the question and the write
    /// slip through both.
    pub async fn withdraw_consent(
        &self,
        consent_id: &str,
        grant_expires_at: i64,
        reason: &str,
        by: &str,
    ) -> Result<RevocationOutcome, RevokeError> {
        let mut entries = self
            .write(vec![Revocation {
                kind: RevocationKind::Consent,
                id: consent_id.to_owned(),
                until_ms: grant_expires_at * 1000 + self.skew_ms(),
                reason: reason.to_owned(),
                by: by.to_owned(),
            }])
            .await?;
        let chains = self
            .ledger
            .chains_rooted_on_consent(consent_id)
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))?;
        let mut chain_entries = Vec::with_capacity(chains.len());
        let mut hops_revoked = Vec::new();
        for chain in &chains {
            let hops = self.chain_hops(chain).await?;
            let until = self.chain_entry_until(&hops, grant_expires_at);
            hops_revoked.extend(hops.iter().map(|h| h.id.to_string()));
            chain_entries.push(Revocation {
                kind: RevocationKind::Chain,
                id: chain.to_string(),
                until_ms: until,
                reason: reason.to_owned(),
                by: by.to_owned(),
            });
        }
        if !chain_entries.is_empty() {
            entries.extend(self.write(chain_entries).await?);
        }
        Ok(RevocationOutcome {
            entries,
            hops_revoked,
        })
    }
}
