//! Revocation at every grain (DESIGN.md section 6): what each grain covers, how long its entry
//! must live, the facts a recorded hop is checked by, and the audit event of each revocation.

use std::sync::Arc;

use mandate_chain::{ChainId, HopId, HopRecord, Ledger};
use mandate_revocation::{
    Revocation, RevocationKind, RevocationRecord, RevocationStore, TokenFacts,
    MAX_VERIFIER_CLOCK_SKEW_SECS,
};
use mandate_store::{AuditEvent, AuditLog};
use serde::Serialize;

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
    /// The hops now dead because of them (those the ledger knows; for a subject or an agent,
    /// those still unexpired).
    pub hops_revoked: Vec<String>,
    /// The chains those hops belong to, each once, in the order first met.
    pub chains_revoked: Vec<String>,
}

impl RevocationOutcome {
    fn new(entries: Vec<RevocationRecord>, hops: &[HopRecord]) -> Self {
        let mut chains_revoked: Vec<String> = Vec::new();
        for hop in hops {
            if !chains_revoked.contains(&hop.chain_id.0) {
                chains_revoked.push(hop.chain_id.0.clone());
            }
        }
        Self {
            entries,
            hops_revoked: hops.iter().map(|h| h.id.to_string()).collect(),
            chains_revoked,
        }
    }
}

/// The facts of a hop just recorded: everything its token depends on.
pub fn facts_of_hop(hop: &HopRecord) -> TokenFacts {
    let actors: Vec<String> = hop.actors.iter().map(ToString::to_string).collect();
    TokenFacts {
        hop: Some(hop.id.to_string()),
        ancestors: hop.ancestors.iter().map(ToString::to_string).collect(),
        chain: Some(hop.chain_id.to_string()),
        consents: hop.rooted_consents().map(str::to_owned).collect(),
        agents: TokenFacts::agents_named(
            &actors,
            hop.client_id.as_str(),
            &hop.audience.to_string(),
        ),
        subject: Some(hop.subject.to_string()),
        issued_at: hop.issued_at,
    }
}

/// The largest `tokens.max_chain_depth` a configuration may set.
const DEEPEST_CHAIN: i64 = 32;

/// How long entries live: each must outlive everything it covers, by the largest clock skew any
/// verifier may tolerate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLifetimes {
    skew_ms: i64,
    longest_token_ms: i64,
    longest_upstream_ms: i64,
    max_chain_depth: i64,
}

impl EntryLifetimes {
    /// From the server's clock skew, the longest lifetime of a mandate token (access token or
    /// ID-JAG) and the longest accepted age of an upstream token, all in seconds.
    pub fn new(server_skew_secs: u32, longest_token_secs: u32, longest_upstream_secs: u32) -> Self {
        // The largest skew any verifier may tolerate, not this server's own: an app's verifier
        // may be set more lenient than the server (SECURITY.md, finding 6).
        let skew = i64::from(server_skew_secs).max(MAX_VERIFIER_CLOCK_SKEW_SECS);
        let longest_token_ms = i64::from(longest_token_secs) * 1000;
        Self {
            skew_ms: skew * 1000,
            longest_token_ms,
            longest_upstream_ms: (i64::from(longest_upstream_secs) * 1000).max(longest_token_ms),
            max_chain_depth: DEEPEST_CHAIN,
        }
    }

    /// The deepest chain the server issues (default: the largest depth any configuration
    /// allows), which bounds the live window.
    pub fn with_max_chain_depth(mut self, depth: u32) -> Self {
        self.max_chain_depth = i64::from(depth);
        self
    }

    /// How far back a chain with a live hop may have started, in seconds: the oldest upstream
    /// token accepted, plus a token lifetime per hop of the deepest chain, plus the skew.
    pub fn live_window_secs(&self) -> i64 {
        (self.longest_upstream_ms
            + (self.max_chain_depth + 1) * self.longest_token_ms
            + self.skew_ms)
            / 1000
    }

    /// How long an entry outlives what it covers, in ms.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms
    }

    /// The longest any entry lives: how much of the revocation stream must be kept.
    pub fn longest_entry_ms(&self) -> i64 {
        self.longest_upstream_ms.max(self.longest_token_ms) + self.skew_ms
    }

    /// A hop entry lives until the hop's `exp`: no descendant outlives it.
    fn hop_until_ms(&self, hop: &HopRecord) -> i64 {
        hop.expires_at * 1000 + self.skew_ms
    }

    /// A chain entry lives until the latest of its hops and their upstream grants has expired
    /// (so the grant cannot start the chain again while it is valid).
    fn chain_until_ms(&self, hops: &[HopRecord], fallback_secs: i64) -> i64 {
        let latest = hops
            .iter()
            .map(|h| {
                h.upstream
                    .as_ref()
                    .map_or(h.expires_at, |u| u.expires_at.max(h.expires_at))
            })
            .max()
            .unwrap_or(fallback_secs);
        latest * 1000 + self.skew_ms
    }
}

/// Writes revocation entries and audits the revocations it is asked for by name.
#[derive(Debug, Clone)]
pub struct RevocationService {
    list: Arc<dyn RevocationStore>,
    ledger: Arc<dyn Ledger>,
    audit: Arc<dyn AuditLog>,
    lifetimes: EntryLifetimes,
}

impl RevocationService {
    /// A service writing to `list`, reading hops from `ledger`, auditing to `audit`.
    pub fn new(
        list: Arc<dyn RevocationStore>,
        ledger: Arc<dyn Ledger>,
        audit: Arc<dyn AuditLog>,
        lifetimes: EntryLifetimes,
    ) -> Self {
        Self {
            list,
            ledger,
            audit,
            lifetimes,
        }
    }

    /// How long its entries live.
    pub fn lifetimes(&self) -> &EntryLifetimes {
        &self.lifetimes
    }

    async fn write(&self, entries: Vec<Revocation>) -> Result<Vec<RevocationRecord>, RevokeError> {
        let written = self
            .list
            .revoke(entries)
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))?;
        for record in &written {
            metrics::counter!(
                "mandate_revocations_total",
                "kind" => record.kind.as_str(),
                "by" => requester_kind(&record.by),
            )
            .increment(1);
        }
        Ok(written)
    }

    async fn chain_hops(&self, chain: &ChainId) -> Result<Vec<HopRecord>, RevokeError> {
        self.ledger
            .chain(chain)
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))
    }

    /// Appends `action` on `target` by `by`, at the time of the first entry written.
    async fn record(&self, by: &str, action: &str, target: &str, outcome: &RevocationOutcome) {
        let detail = format!(
            "{} entries, {} hops",
            outcome.entries.len(),
            outcome.hops_revoked.len()
        );
        self.record_detail(by, action, target, outcome, detail)
            .await;
    }

    async fn record_detail(
        &self,
        by: &str,
        action: &str,
        target: &str,
        outcome: &RevocationOutcome,
        detail: String,
    ) {
        let at = outcome.entries.first().map_or(0, |e| e.at);
        self.audit
            .record(AuditEvent::new(at, by, action, target, detail))
            .await;
    }

    /// Whether consent grant `id` was withdrawn (its `consent:<id>` entry still lives).
    pub async fn consent_withdrawn(&self, id: &str) -> Result<bool, RevokeError> {
        let answer = self
            .list
            .check(&mandate_revocation::TokenFacts {
                consents: vec![id.to_owned()],
                ..mandate_revocation::TokenFacts::default()
            })
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))?;
        Ok(matches!(
            answer.verdict,
            mandate_revocation::Verdict::Revoked { .. }
        ))
    }

    /// Revokes a hop and its subtree (audited as `revoke.hop`).
    pub async fn revoke_hop(
        &self,
        hop_id: &str,
        reason: &str,
        by: &str,
    ) -> Result<RevocationOutcome, RevokeError> {
        let outcome = self.write_hop(hop_id, reason, by).await?;
        self.record(by, "revoke.hop", hop_id, &outcome).await;
        Ok(outcome)
    }

    async fn write_hop(
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
                until_ms: self.lifetimes.hop_until_ms(&hop),
                reason: reason.to_owned(),
                by: by.to_owned(),
            }])
            .await?;
        let subtree: Vec<HopRecord> = self
            .chain_hops(&hop.chain_id)
            .await?
            .into_iter()
            .filter(|h| h.id == hop.id || h.ancestors.contains(&hop.id))
            .collect();
        Ok(RevocationOutcome::new(entries, &subtree))
    }

    /// RFC 7009: the client `client_id` revokes the hop of a token issued to it (the caller has
    /// verified the token and that it is the client's). Audited as `revoke.hop` by
    /// `client:<id>`. A hop the ledger does not know (issued by another node's memory store, or
    /// past retention) changes nothing and is not an error (decision D8); only a store failure is.
    /// Answers what was revoked, if anything.
    pub async fn revoke_by_its_client(
        &self,
        hop_id: &str,
        client_id: &str,
    ) -> Result<Option<RevocationOutcome>, RevokeError> {
        let by = format!("client:{client_id}");
        match self
            .write_hop(hop_id, "revoked by its client (RFC 7009)", &by)
            .await
        {
            Ok(outcome) => {
                let detail = format!("{} hops", outcome.hops_revoked.len());
                self.record_detail(&by, "revoke.hop", hop_id, &outcome, detail)
                    .await;
                Ok(Some(outcome))
            }
            Err(RevokeError::Unavailable(cause)) => Err(RevokeError::Unavailable(cause)),
            Err(_) => Ok(None),
        }
    }

    /// Revokes a whole chain, and with it every new exchange of its upstream grant (audited as
    /// `revoke.chain`).
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
        let entries = self
            .write(vec![Revocation {
                kind: RevocationKind::Chain,
                id: chain_id.to_owned(),
                until_ms: self.lifetimes.chain_until_ms(&hops, 0),
                reason: reason.to_owned(),
                by: by.to_owned(),
            }])
            .await?;
        let outcome = RevocationOutcome::new(entries, &hops);
        self.record(by, "revoke.chain", chain_id, &outcome).await;
        Ok(outcome)
    }

    /// Revokes every delegation of a user made so far: mandate tokens with that `sub` and
    /// upstream subject tokens issued up to now (audited as `revoke.subject`).
    pub async fn revoke_subject(
        &self,
        subject: &str,
        reason: &str,
        by: &str,
    ) -> Result<RevocationOutcome, RevokeError> {
        let parsed = mandate_model::Subject::parse(subject)
            .map_err(|e| RevokeError::Invalid(e.to_string()))?;
        let lifetime = self.lifetimes.longest_upstream_ms;
        let user = parsed.as_str();
        let outcome = self
            .revoke_at_now(RevocationKind::Subject, user, lifetime, reason, by, |hop| {
                hop.subject.as_str() == user
            })
            .await?;
        self.record(by, "revoke.subject", subject, &outcome).await;
        Ok(outcome)
    }

    /// Revokes every live token in which the agent is the client, an actor or a hand-off's
    /// recipient. Not audited here: the lifecycle change that calls it (suspension, retirement)
    /// is the audited action.
    pub async fn revoke_agent(
        &self,
        client_id: &str,
        reason: &str,
        by: &str,
    ) -> Result<RevocationOutcome, RevokeError> {
        let lifetime = self.lifetimes.longest_token_ms;
        let acts = crate::live::acts_in(client_id);
        self.revoke_at_now(RevocationKind::Agent, client_id, lifetime, reason, by, acts)
            .await
    }

    /// Writes a timed entry (agent or subject) at the store's now, living `lifetime_ms` + skew:
    /// it must outlive every token it covers. Then finds the live hops it killed, those that
    /// `covers` ([`crate::live`]).
    async fn revoke_at_now(
        &self,
        kind: RevocationKind,
        id: &str,
        lifetime_ms: i64,
        reason: &str,
        by: &str,
        covers: impl Fn(&HopRecord) -> bool,
    ) -> Result<RevocationOutcome, RevokeError> {
        let now = self
            .list
            .now_ms()
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))?;
        let entries = self
            .write(vec![Revocation {
                kind,
                id: id.to_owned(),
                until_ms: now + lifetime_ms + self.lifetimes.skew_ms,
                reason: reason.to_owned(),
                by: by.to_owned(),
            }])
            .await?;
        let at_ms = entries.first().map_or(now, |entry| entry.at);
        let window = self.lifetimes.live_window_secs();
        let hops = crate::live::live_hops(self.ledger.as_ref(), window, at_ms, covers)
            .await
            .map_err(RevokeError::Unavailable)?;
        Ok(RevocationOutcome::new(entries, &hops))
    }

    /// Withdraws a consent grant: `consent:<id>` stops new roots on it, then every chain already
    /// rooted on it is revoked. Not audited here: [`crate::ConsentService::withdraw`] is.
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
                until_ms: grant_expires_at * 1000 + self.lifetimes.skew_ms,
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
            chain_entries.push(Revocation {
                kind: RevocationKind::Chain,
                id: chain.to_string(),
                until_ms: self.lifetimes.chain_until_ms(&hops, grant_expires_at),
                reason: reason.to_owned(),
                by: by.to_owned(),
            });
            hops_revoked.extend(hops);
        }
        if !chain_entries.is_empty() {
            entries.extend(self.write(chain_entries).await?);
        }
        Ok(RevocationOutcome::new(entries, &hops_revoked))
    }
}

/// Who asked for a revocation, as a bounded label: the audit stream's prefixes name clients
/// (RFC 7009), identity providers (Shared Signals) and mandate itself; anything else is an
/// administrator's credential.
fn requester_kind(by: &str) -> &'static str {
    if by.starts_with("client:") {
        "client"
    } else if by.starts_with("ssf:") {
        "ssf"
    } else if by.starts_with("system:") {
        "system"
    } else {
        "admin"
    }
}
