//! Revocation at every grain (DESIGN.md section 6): what each grain covers, how long its entry
//! must live, the facts a recorded hop is checked by, and the audit event of each revocation.
//!
//! Each revocation an administrator names is first planned ([`Target`] → the entry to write and
//! how to find the hops it kills), then carried out. A dry run ([`RevocationService::preview`])
//! stops after the plan and finds the hops the same way, so that what it answers is what the
//! revocation would do, not a second reckoning that could drift from it.

use std::sync::Arc;

use mandate_chain::{ChainId, HopId, HopRecord, Ledger};
use mandate_revocation::{
    Revocation, RevocationKind, RevocationRecord, RevocationStore, TokenFacts, Verdict,
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

/// What an administrator revokes: a grain of DESIGN.md section 6, named by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A hop (a token's `jti`) and its subtree.
    Hop(String),
    /// A chain, and every new exchange of its upstream grant.
    Chain(String),
    /// A user's delegations made so far (`corp|alice`).
    Subject(String),
    /// Every live token an agent appears in (its suspension or retirement).
    Agent(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Hop(id) => write!(f, "hop:{id}"),
            Target::Chain(id) => write!(f, "chain:{id}"),
            Target::Subject(id) => write!(f, "subject:{id}"),
            Target::Agent(id) => write!(f, "agent:{id}"),
        }
    }
}

/// A revocation before anything is written: its entry and where the hops it kills are.
#[derive(Debug)]
struct Plan {
    entry: Revocation,
    /// The store's clock the entry's lifetime was reckoned from (timed entries only).
    now_ms: Option<i64>,
    scope: Scope,
}

/// Where the hops a revocation kills are found.
#[derive(Debug)]
enum Scope {
    /// A chain's hops, all of them, read before the entry is written.
    Known(Vec<HopRecord>),
    /// The hop and its descendants, read from its chain.
    Subtree(Box<HopRecord>),
    /// The hops still unexpired at the entry's T that the entry covers, among the chains of the
    /// live window.
    Live(Covers),
}

/// Which hops a timed entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Covers {
    /// The user's hops.
    Subject(String),
    /// The hops the agent is the client, an actor or a hand-off's recipient of.
    Agent(String),
}

impl Covers {
    fn covers(&self, hop: &HopRecord) -> bool {
        match self {
            Covers::Subject(user) => hop.subject.as_str() == user,
            Covers::Agent(agent) => crate::live::acts_in(agent)(hop),
        }
    }
}

/// `hop` and those of `chain` that descend from it, in the chain's order.
fn subtree(hop: &HopRecord, chain: Vec<HopRecord>) -> Vec<HopRecord> {
    chain
        .into_iter()
        .filter(|h| h.id == hop.id || h.ancestors.contains(&hop.id))
        .collect()
}

/// The record `entry` would be stored as if written at `at_ms` (a store keeps an existing
/// entry's later `until`, and for a timed entry its later T: DESIGN.md section 6).
fn as_written_at(entry: &Revocation, at_ms: i64) -> RevocationRecord {
    RevocationRecord {
        kind: entry.kind,
        id: entry.id.clone(),
        at: at_ms,
        until: entry.until_ms,
        reason: entry.reason.clone(),
        by: entry.by.clone(),
    }
}

/// A hop's status now, as `GET /admin/chains/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HopStatus {
    /// Unexpired and unrevoked: the revocation would kill it.
    Live,
    /// An entry covers it already.
    Revoked {
        /// That entry.
        revoked_by: RevokedBy,
    },
    /// Its `exp` has passed.
    Expired,
}

/// The entry that revoked a hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokedBy {
    /// Its kind.
    pub kind: RevocationKind,
    /// Its id.
    pub id: String,
}

impl HopStatus {
    /// From the list's verdict on the hop and the store's clock (ms). A revoked hop is
    /// `revoked` even once expired: the entry is what an administrator wants to see.
    pub fn of(hop: &HopRecord, verdict: &Verdict, now_ms: i64) -> Self {
        match verdict {
            Verdict::Revoked { kind, id } => HopStatus::Revoked {
                revoked_by: RevokedBy {
                    kind: *kind,
                    id: id.clone(),
                },
            },
            Verdict::Live if hop.expires_at * 1000 <= now_ms => HopStatus::Expired,
            Verdict::Live => HopStatus::Live,
        }
    }
}

/// A hop a revocation would reach, as a dry run names it.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewedHop {
    /// The hop id (its token's `jti`).
    pub hop: String,
    /// Its chain.
    pub chain_id: String,
    /// The agent that requested it (the current actor).
    pub client_id: String,
    /// Every actor, current first.
    pub actors: Vec<String>,
    /// The user.
    pub subject: String,
    /// Its audience (an app, or `agent:<id>` for a hand-off).
    pub audience: String,
    /// Its parent hop, `None` for a root.
    pub parent: Option<String>,
    /// Its `exp`, RFC 3339.
    pub expires_at: Option<String>,
    /// Whether it is live, revoked already, or expired.
    #[serde(flatten)]
    pub status: HopStatus,
}

impl PreviewedHop {
    fn new(hop: &HopRecord, status: HopStatus) -> Self {
        Self {
            hop: hop.id.to_string(),
            chain_id: hop.chain_id.to_string(),
            client_id: hop.client_id.to_string(),
            actors: hop.actors.iter().map(ToString::to_string).collect(),
            subject: hop.subject.to_string(),
            audience: hop.audience.to_string(),
            parent: hop.parent.as_ref().map(ToString::to_string),
            expires_at: chrono::DateTime::from_timestamp(hop.expires_at, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            status,
        }
    }
}

/// How many of each a revocation would reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PreviewCounts {
    /// Entries it would write.
    pub entries: usize,
    /// Hops it reaches (`hops_revoked`).
    pub hops: usize,
    /// Chains they belong to (`chains_revoked`).
    pub chains: usize,
    /// Of the hops, those live now: what the revocation would kill.
    pub live: usize,
    /// Of the hops, those another entry covers already.
    pub already_revoked: usize,
    /// Of the hops, those expired.
    pub expired: usize,
}

/// What a revocation would do, answered by a dry run: the [`RevocationOutcome`] the revocation
/// would answer (its entries stamped with the store's clock at the dry run), each hop with its
/// status, and the counts.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationPreview {
    /// Always true: nothing was written.
    pub dry_run: bool,
    /// `entries`, `hops_revoked`, `chains_revoked`, as the revocation answers them.
    #[serde(flatten)]
    pub outcome: RevocationOutcome,
    /// The hops of `hops_revoked`, in the same order, with their chain, actors, audience and
    /// status.
    pub hops: Vec<PreviewedHop>,
    /// How many of each.
    pub counts: PreviewCounts,
}

impl RevocationPreview {
    /// From the entry the revocation would write, the hops it reaches and their statuses (one
    /// per hop, in order).
    pub fn new(entry: RevocationRecord, hops: &[HopRecord], statuses: Vec<HopStatus>) -> Self {
        let outcome = RevocationOutcome::new(vec![entry], hops);
        let previewed: Vec<PreviewedHop> = hops
            .iter()
            .zip(statuses)
            .map(|(hop, status)| PreviewedHop::new(hop, status))
            .collect();
        let count =
            |wanted: fn(&HopStatus) -> bool| previewed.iter().filter(|h| wanted(&h.status)).count();
        let counts = PreviewCounts {
            entries: outcome.entries.len(),
            hops: outcome.hops_revoked.len(),
            chains: outcome.chains_revoked.len(),
            live: count(|s| matches!(s, HopStatus::Live)),
            already_revoked: count(|s| matches!(s, HopStatus::Revoked { .. })),
            expired: count(|s| matches!(s, HopStatus::Expired)),
        };
        Self {
            dry_run: true,
            outcome,
            hops: previewed,
            counts,
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

    /// A timed entry (agent, subject) written at `now_ms` lives `lifetime_ms` + skew: it must
    /// outlive every token it covers.
    fn timed_until_ms(&self, now_ms: i64, lifetime_ms: i64) -> i64 {
        now_ms + lifetime_ms + self.skew_ms
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
        let outcome = self
            .execute(&Target::Hop(hop_id.to_owned()), reason, by)
            .await?;
        self.record(by, "revoke.hop", hop_id, &outcome).await;
        Ok(outcome)
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
            .execute(
                &Target::Hop(hop_id.to_owned()),
                "revoked by its client (RFC 7009)",
                &by,
            )
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
        let outcome = self
            .execute(&Target::Chain(chain_id.to_owned()), reason, by)
            .await?;
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
        let outcome = self
            .execute(&Target::Subject(subject.to_owned()), reason, by)
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
        self.execute(&Target::Agent(client_id.to_owned()), reason, by)
            .await
    }

    /// What revoking `target` would write and kill, computed as the revocation computes it, with
    /// nothing written and nothing audited (a dry run changes nothing, so there is nothing to
    /// record). Each hop comes with its status now, so that the hops already dead (revoked by
    /// another entry, or expired) can be told from the ones this revocation would kill.
    ///
    /// The answer is a snapshot: a hop recorded between the dry run and the revocation is killed
    /// by the revocation (its subtree, chain, agent or user is covered) without being named here.
    pub async fn preview(
        &self,
        target: &Target,
        reason: &str,
        by: &str,
    ) -> Result<RevocationPreview, RevokeError> {
        let plan = self.plan(target, reason, by).await?;
        let now_ms = match plan.now_ms {
            Some(now_ms) => now_ms,
            None => self.now_ms().await?,
        };
        let hops = self.killed(&plan.scope, now_ms).await?;
        let mut statuses = Vec::with_capacity(hops.len());
        for hop in &hops {
            statuses.push(self.status(hop).await?);
        }
        tracing::debug!(
            target = %target,
            hops = hops.len(),
            "revocation previewed (dry run: nothing written)"
        );
        Ok(RevocationPreview::new(
            as_written_at(&plan.entry, now_ms),
            &hops,
            statuses,
        ))
    }

    /// Plans, writes the entry, and only then finds the hops it killed: a hop recorded while the
    /// entry is being written is then either found here or refused by its exchange's second
    /// check of the list (DESIGN.md section 6).
    async fn execute(
        &self,
        target: &Target,
        reason: &str,
        by: &str,
    ) -> Result<RevocationOutcome, RevokeError> {
        let plan = self.plan(target, reason, by).await?;
        let entries = self.write(vec![plan.entry.clone()]).await?;
        // A timed entry covers the live hops at its T, which the store stamps (and only grows).
        let at_ms = entries
            .first()
            .map(|entry| entry.at)
            .or(plan.now_ms)
            .unwrap_or_default();
        let hops = self.killed(&plan.scope, at_ms).await?;
        Ok(RevocationOutcome::new(entries, &hops))
    }

    /// The entry revoking `target` would write and where the hops it kills are, read from the
    /// ledger and the store's clock only: nothing is written here.
    async fn plan(&self, target: &Target, reason: &str, by: &str) -> Result<Plan, RevokeError> {
        let entry = |kind, id: &str, until_ms| Revocation {
            kind,
            id: id.to_owned(),
            until_ms,
            reason: reason.to_owned(),
            by: by.to_owned(),
        };
        match target {
            Target::Hop(hop_id) => {
                let hop = self
                    .ledger
                    .hop(&HopId(hop_id.clone()))
                    .await
                    .map_err(|e| RevokeError::Unavailable(e.to_string()))?
                    .ok_or_else(|| RevokeError::NotFound(format!("hop {hop_id}")))?;
                Ok(Plan {
                    entry: entry(
                        RevocationKind::Hop,
                        &hop.id.0,
                        self.lifetimes.hop_until_ms(&hop),
                    ),
                    now_ms: None,
                    scope: Scope::Subtree(Box::new(hop)),
                })
            }
            Target::Chain(chain_id) => {
                let hops = self.chain_hops(&ChainId(chain_id.clone())).await?;
                if hops.is_empty() {
                    return Err(RevokeError::NotFound(format!("chain {chain_id}")));
                }
                Ok(Plan {
                    entry: entry(
                        RevocationKind::Chain,
                        chain_id,
                        self.lifetimes.chain_until_ms(&hops, 0),
                    ),
                    now_ms: None,
                    scope: Scope::Known(hops),
                })
            }
            Target::Subject(subject) => {
                let parsed = mandate_model::Subject::parse(subject)
                    .map_err(|e| RevokeError::Invalid(e.to_string()))?;
                let now_ms = self.now_ms().await?;
                Ok(Plan {
                    entry: entry(
                        RevocationKind::Subject,
                        parsed.as_str(),
                        self.lifetimes
                            .timed_until_ms(now_ms, self.lifetimes.longest_upstream_ms),
                    ),
                    now_ms: Some(now_ms),
                    scope: Scope::Live(Covers::Subject(parsed.as_str().to_owned())),
                })
            }
            Target::Agent(client_id) => {
                let now_ms = self.now_ms().await?;
                Ok(Plan {
                    entry: entry(
                        RevocationKind::Agent,
                        client_id,
                        self.lifetimes
                            .timed_until_ms(now_ms, self.lifetimes.longest_token_ms),
                    ),
                    now_ms: Some(now_ms),
                    scope: Scope::Live(Covers::Agent(client_id.clone())),
                })
            }
        }
    }

    /// The hops an entry standing at `at_ms` kills: a hop's subtree as its chain holds it now,
    /// a chain's hops as planned, or the live hops a timed entry covers ([`crate::live`]).
    async fn killed(&self, scope: &Scope, at_ms: i64) -> Result<Vec<HopRecord>, RevokeError> {
        match scope {
            Scope::Known(hops) => Ok(hops.clone()),
            Scope::Subtree(hop) => Ok(subtree(hop, self.chain_hops(&hop.chain_id).await?)),
            Scope::Live(covers) => {
                let window = self.lifetimes.live_window_secs();
                crate::live::live_hops(self.ledger.as_ref(), window, at_ms, |hop| {
                    covers.covers(hop)
                })
                .await
                .map_err(RevokeError::Unavailable)
            }
        }
    }

    /// The store's clock, which stamps every entry (DESIGN.md section 6: one clock).
    async fn now_ms(&self) -> Result<i64, RevokeError> {
        self.list
            .now_ms()
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))
    }

    /// A hop's status as a verifier would see it now: revoked when an entry covers it (and
    /// which), else expired once its `exp` has passed on the store's clock, else live.
    async fn status(&self, hop: &HopRecord) -> Result<HopStatus, RevokeError> {
        let checked = self
            .list
            .check(&facts_of_hop(hop))
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))?;
        Ok(HopStatus::of(hop, &checked.verdict, checked.now_ms))
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

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        reason = "tests fail loudly"
    )]

    use mandate_chain::{Authority, Evidence, EvidenceKind};
    use mandate_model::{Audience, ClientId, Subject};
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_900_000_000;

    /// A hop of alice's chain `chain`, requested by `client` for `audience`, below `ancestors`
    /// (root first).
    fn hop(id: &str, chain: &str, ancestors: &[&str], client: &str, audience: &str) -> HopRecord {
        HopRecord {
            jkt: None,
            request: None,
            id: HopId(id.into()),
            parent: ancestors.last().map(|p| HopId((*p).into())),
            chain_id: ChainId(chain.into()),
            ancestors: ancestors.iter().map(|a| HopId((*a).into())).collect(),
            subject: Subject::parse("corp|alice").unwrap(),
            actors: vec![ClientId::parse(client).unwrap()],
            client_id: ClientId::parse(client).unwrap(),
            audience: Audience::parse(audience).unwrap(),
            authority: Authority::new(),
            issued_at: NOW,
            expires_at: NOW + 300,
            depth: u32::try_from(ancestors.len()).unwrap() + 1,
            depth_limit: 5,
            evidence: Evidence {
                kind: EvidenceKind::UpstreamAudience,
                reference: client.into(),
            },
            upstream: None,
        }
    }

    fn ids(hops: &[HopRecord]) -> Vec<&str> {
        hops.iter().map(|h| h.id.0.as_str()).collect()
    }

    #[test]
    fn a_hops_subtree_is_the_hop_and_its_descendants_only() {
        let root = hop("r", "c", &[], "assistant", "agent:booking-tool");
        let middle = hop("m", "c", &["r"], "booking-tool", "agent:helper");
        let leaf = hop(
            "l",
            "c",
            &["r", "m"],
            "helper",
            "https://calendar.example.com",
        );
        let sibling = hop("s", "c", &["r"], "booking-tool", "https://mail.example.com");
        let chain = vec![root.clone(), middle.clone(), leaf, sibling.clone()];
        assert_eq!(ids(&subtree(&middle, chain.clone())), ["m", "l"]);
        assert_eq!(ids(&subtree(&root, chain.clone())), ["r", "m", "l", "s"]);
        assert_eq!(ids(&subtree(&sibling, chain)), ["s"]);
    }

    #[test]
    fn an_agent_entry_covers_its_client_actor_and_hand_off_hops_a_subject_entry_its_users() {
        let agent = Covers::Agent("booking-tool".into());
        assert!(agent.covers(&hop(
            "a",
            "c",
            &[],
            "booking-tool",
            "https://mail.example.com"
        )));
        // A hand-off addressed to it: it is the recipient.
        assert!(agent.covers(&hop("b", "c", &[], "assistant", "agent:booking-tool")));
        let mut acted = hop("d", "c", &["x"], "helper", "https://calendar.example.com");
        acted.actors.push(ClientId::parse("booking-tool").unwrap());
        assert!(agent.covers(&acted));
        assert!(!agent.covers(&hop("e", "c", &[], "assistant", "https://mail.example.com")));
        let alice = Covers::Subject("corp|alice".into());
        let mut bobs = hop("f", "c", &[], "assistant", "https://mail.example.com");
        assert!(alice.covers(&bobs));
        bobs.subject = Subject::parse("corp|bob").unwrap();
        assert!(!alice.covers(&bobs));
    }

    #[test]
    fn a_hops_status_is_revoked_before_expired_before_live() {
        let h = hop("h", "c", &[], "assistant", "https://mail.example.com");
        let exp_ms = h.expires_at * 1000;
        assert_eq!(
            HopStatus::of(&h, &Verdict::Live, exp_ms - 1),
            HopStatus::Live
        );
        assert_eq!(
            HopStatus::of(&h, &Verdict::Live, exp_ms),
            HopStatus::Expired
        );
        let revoked = Verdict::Revoked {
            kind: RevocationKind::Chain,
            id: "c".into(),
        };
        assert_eq!(
            HopStatus::of(&h, &revoked, exp_ms + 1),
            HopStatus::Revoked {
                revoked_by: RevokedBy {
                    kind: RevocationKind::Chain,
                    id: "c".into()
                }
            }
        );
    }

    #[test]
    fn a_preview_is_the_outcome_with_each_hop_its_status_and_the_counts() {
        let hops = vec![
            hop("r", "c1", &[], "assistant", "agent:booking-tool"),
            hop(
                "m",
                "c1",
                &["r"],
                "booking-tool",
                "https://mail.example.com",
            ),
            hop("x", "c2", &[], "assistant", "https://calendar.example.com"),
        ];
        let entry = as_written_at(
            &Revocation {
                kind: RevocationKind::Agent,
                id: "booking-tool".into(),
                until_ms: 9,
                reason: "lost laptop".into(),
                by: "ops".into(),
            },
            7,
        );
        let statuses = vec![
            HopStatus::Live,
            HopStatus::Revoked {
                revoked_by: RevokedBy {
                    kind: RevocationKind::Hop,
                    id: "m".into(),
                },
            },
            HopStatus::Expired,
        ];
        let preview = RevocationPreview::new(entry.clone(), &hops, statuses);
        // The same outcome the revocation answers from the same hops.
        let outcome = RevocationOutcome::new(vec![entry], &hops);
        assert_eq!(preview.outcome.hops_revoked, outcome.hops_revoked);
        assert_eq!(preview.outcome.chains_revoked, ["c1", "c2"]);
        assert_eq!(
            preview.counts,
            PreviewCounts {
                entries: 1,
                hops: 3,
                chains: 2,
                live: 1,
                already_revoked: 1,
                expired: 1,
            }
        );
        let wire = serde_json::to_value(&preview).unwrap();
        assert_eq!(wire["dry_run"], true);
        assert_eq!(
            wire["entries"][0],
            json!({"kind": "agent", "id": "booking-tool", "at": 7, "until": 9,
                   "reason": "lost laptop", "by": "ops"})
        );
        assert_eq!(
            wire["hops"][1],
            json!({"hop": "m", "chain_id": "c1", "client_id": "booking-tool",
                   "actors": ["booking-tool"], "subject": "corp|alice",
                   "audience": "https://mail.example.com", "parent": "r",
                   "expires_at": "2030-03-17T17:51:40Z", "status": "revoked",
                   "revoked_by": {"kind": "hop", "id": "m"}})
        );
        assert_eq!(wire["hops"][0]["status"], "live");
        assert!(wire["hops"][0].get("revoked_by").is_none());
        assert_eq!(wire["hops"][2]["parent"], json!(null));
    }

    #[test]
    fn timed_entries_outlive_what_they_cover_by_the_largest_skew() {
        let lifetimes = EntryLifetimes::new(60, 300, 3_600);
        // The verifier cap (300 s) wins over the server's 60 s.
        assert_eq!(
            lifetimes.timed_until_ms(1_000, 300_000),
            1_000 + 300_000 + 300_000
        );
    }
}
