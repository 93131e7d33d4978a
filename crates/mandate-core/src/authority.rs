//! A user's standing authority (docs/GOVERNANCE.md, "Who can act for a user"): which agents can
//! act for them now — the live, unrevoked hops of their chains, their stored consent grants, and
//! the policy rows that bound what those agents may exchange — and which apps it reaches.
//!
//! mandate answers from what it recorded and granted. An upstream token the identity provider
//! issued to an agent, which that agent never exchanged, is not known here until it is
//! exchanged; the policy rows listed for the agents bound what it could become.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mandate_chain::{ConsentGrant, ConsentStore, HopRecord, Ledger, Policy, PolicyStore};
use mandate_model::{Audience, ClientId, ClientKind, ScopeSet, Subject};
use mandate_revocation::{RevocationStore, Verdict};
use mandate_store::{Client, ClientRegistry};
use serde::Serialize;

use crate::revocation::facts_of_hop;

/// Why the authority could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// The store did not answer.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

fn down(error: impl std::fmt::Display) -> AuthorityError {
    AuthorityError::Unavailable(error.to_string())
}

/// A user's standing authority at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct StandingAuthority {
    /// The user.
    pub subject: String,
    /// When it was read (the store's clock).
    #[serde(rename = "at", serialize_with = "rfc3339_ms")]
    pub at_ms: i64,
    /// Every agent holding, or granted, some of the user's authority, by client id.
    pub agents: Vec<AgentAuthority>,
    /// Every app that authority reaches, by audience.
    pub apps: Vec<AppReach>,
}

/// One agent's share of a user's authority.
#[derive(Debug, Clone, Serialize)]
pub struct AgentAuthority {
    /// The agent.
    pub client_id: String,
    /// Its lifecycle state (`None`: no longer registered).
    pub state: Option<String>,
    /// Whether it can authenticate now (active and unexpired): only then can it use any of it.
    pub can_act: bool,
    /// Who is answerable for it.
    pub owners: Vec<String>,
    /// The user's live hops it holds: tokens issued to it, and hand-offs addressed to it.
    pub live_hops: Vec<LiveHop>,
    /// The user's unexpired consent grants to it.
    pub consents: Vec<ConsentView>,
    /// Its policy rows: what any grant of the user's could become in its hands.
    pub policy: Vec<RowView>,
}

/// A live hop as the authority view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveHop {
    /// The hop (its token's `jti`).
    pub hop: String,
    /// Its chain.
    pub chain_id: String,
    /// Its audience: an app, or `agent:<id>` for a hand-off.
    pub audience: String,
    /// The authority it carries, per audience.
    pub authority: Vec<Grant>,
    /// Until when (seconds).
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: i64,
    /// Its depth in the chain.
    pub depth: u32,
}

/// Scopes at one audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// The audience.
    pub audience: String,
    /// The scopes.
    pub scopes: Vec<String>,
}

/// A consent grant as the authority view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConsentView {
    /// Its id.
    pub consent_id: String,
    /// Where.
    pub audience: String,
    /// What.
    pub scopes: Vec<String>,
    /// Until when (seconds).
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: i64,
    /// Whether a policy row lets the agent use it.
    pub allowed_by_policy: bool,
}

/// A policy row as the authority view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RowView {
    /// An app or `agent:<id>`.
    pub audience: String,
    /// The scopes it allows.
    pub scopes: Vec<String>,
    /// Its depth bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
}

/// One app the user's authority reaches.
#[derive(Debug, Clone, Serialize)]
pub struct AppReach {
    /// The app audience.
    pub audience: String,
    /// Each agent that reaches it, and how.
    pub access: Vec<AppAccess>,
}

/// How one agent reaches an app for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppAccess {
    /// The agent.
    pub client_id: String,
    /// `token` (it holds a live token for the app), `hand_off` (it holds a live hand-off it can
    /// exchange for the app) or `consent` (a stored consent grant it can exchange).
    pub via: &'static str,
    /// The scopes it holds or can get there.
    pub scopes: Vec<String>,
    /// Until when (seconds): the token's, the hand-off's or the grant's expiry.
    #[serde(serialize_with = "rfc3339")]
    pub until: i64,
    /// The hop or consent grant it rests on.
    pub evidence: String,
}

/// Seconds since the epoch as RFC 3339 (UTC, whole seconds), as the admin API writes instants.
fn rfc3339<S: serde::Serializer>(secs: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    let instant = chrono::DateTime::from_timestamp(*secs, 0).unwrap_or_default();
    serializer.serialize_str(&instant.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn rfc3339_ms<S: serde::Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    let instant = chrono::DateTime::from_timestamp_millis(*ms).unwrap_or_default();
    serializer.serialize_str(&instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn scopes(set: &ScopeSet) -> Vec<String> {
    set.iter().map(str::to_owned).collect()
}

/// Who holds a hop: the recipient of a hand-off, else the client it was issued to.
fn holder(hop: &HopRecord) -> &ClientId {
    hop.audience.agent().unwrap_or(&hop.client_id)
}

/// The agent's entry, added empty the first time it is named.
fn entry<'a>(
    agents: &'a mut BTreeMap<String, AgentAuthority>,
    id: &ClientId,
) -> &'a mut AgentAuthority {
    agents
        .entry(id.to_string())
        .or_insert_with(|| AgentAuthority {
            client_id: id.to_string(),
            state: None,
            can_act: false,
            owners: Vec::new(),
            live_hops: Vec::new(),
            consents: Vec::new(),
            policy: Vec::new(),
        })
}

/// The standing authority of `subject` from what was read: its live, unrevoked hops, its
/// consent grants, the registered clients and the policy, at `now` (seconds). Pure.
pub fn standing_authority(
    subject: &Subject,
    hops: &[HopRecord],
    consents: &[ConsentGrant],
    clients: &BTreeMap<String, Arc<Client>>,
    policy: &Policy,
    at_ms: i64,
) -> StandingAuthority {
    let now = at_ms.div_euclid(1000);
    let now_time = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    let mut agents: BTreeMap<String, AgentAuthority> = BTreeMap::new();
    let mut apps: BTreeMap<String, Vec<AppAccess>> = BTreeMap::new();
    for hop in hops
        .iter()
        .filter(|h| &h.subject == subject && h.expires_at > now)
    {
        let held_by = holder(hop);
        entry(&mut agents, held_by).live_hops.push(LiveHop {
            hop: hop.id.to_string(),
            chain_id: hop.chain_id.to_string(),
            audience: hop.audience.to_string(),
            authority: hop
                .authority
                .pairs()
                .map(|(audience, s)| Grant {
                    audience: audience.to_owned(),
                    scopes: scopes(s),
                })
                .collect(),
            expires_at: hop.expires_at,
            depth: hop.depth,
        });
        for (audience, held) in hop.authority.pairs() {
            let Ok(app @ Audience::App(_)) = Audience::parse(audience) else {
                continue;
            };
            let (via, reachable) = if hop.audience == app {
                ("token", Some(held.clone()))
            } else {
                // A hand-off's recipient gets at most what it carries and its own row allows.
                let row = policy.row(held_by, &app);
                ("hand_off", row.map(|row| held.intersection(&row.scopes)))
            };
            if let Some(reachable) = reachable.filter(|s| !s.is_empty()) {
                apps.entry(app.to_string()).or_default().push(AppAccess {
                    client_id: held_by.to_string(),
                    via,
                    scopes: scopes(&reachable),
                    until: hop.expires_at,
                    evidence: hop.id.to_string(),
                });
            }
        }
    }
    for grant in consents
        .iter()
        .filter(|g| &g.subject == subject && g.expires_at > now)
    {
        let row = policy.row(&grant.actor, &grant.audience);
        entry(&mut agents, &grant.actor).consents.push(ConsentView {
            consent_id: grant.id.clone(),
            audience: grant.audience.to_string(),
            scopes: scopes(&grant.scopes),
            expires_at: grant.expires_at,
            allowed_by_policy: row.is_some(),
        });
        let reachable = row.map(|row| grant.scopes.intersection(&row.scopes));
        if let (Audience::App(_), Some(reachable)) = (&grant.audience, reachable) {
            if !reachable.is_empty() {
                apps.entry(grant.audience.to_string())
                    .or_default()
                    .push(AppAccess {
                        client_id: grant.actor.to_string(),
                        via: "consent",
                        scopes: scopes(&reachable),
                        until: grant.expires_at,
                        evidence: grant.id.clone(),
                    });
            }
        }
    }
    for agent in agents.values_mut() {
        if let Some(client) = clients.get(&agent.client_id) {
            agent.state = Some(client.state.to_string());
            agent.can_act = client.kind == ClientKind::Agent && client.may_authenticate(now_time);
            agent.owners = client.owners.clone();
        }
        agent.policy = policy
            .rows()
            .iter()
            .filter(|row| row.actor.as_str() == agent.client_id)
            .map(|row| RowView {
                audience: row.audience.to_string(),
                scopes: scopes(&row.scopes),
                max_depth: row.max_depth,
            })
            .collect();
    }
    // An agent that cannot authenticate reaches nothing now, though what it holds is listed.
    let acting: BTreeSet<&str> = agents
        .values()
        .filter(|a| a.can_act)
        .map(|a| a.client_id.as_str())
        .collect();
    let apps = apps
        .into_iter()
        .map(|(audience, mut access)| {
            access.retain(|a| acting.contains(a.client_id.as_str()));
            access.sort_by(|a, b| (&a.client_id, a.via).cmp(&(&b.client_id, b.via)));
            AppReach { audience, access }
        })
        .filter(|app| !app.access.is_empty())
        .collect();
    StandingAuthority {
        subject: subject.to_string(),
        at_ms,
        agents: agents.into_values().collect(),
        apps,
    }
}

/// The ports [`AuthorityService`] reads.
#[derive(Debug, Clone)]
pub struct AuthorityPorts {
    /// The hop ledger.
    pub ledger: Arc<dyn Ledger>,
    /// The revocation list (and the store's clock).
    pub revocations: Arc<dyn RevocationStore>,
    /// Stored consent grants.
    pub consents: Arc<dyn ConsentStore>,
    /// The registry.
    pub clients: Arc<dyn ClientRegistry>,
    /// The policy.
    pub policies: Arc<dyn PolicyStore>,
}

/// Reads a user's standing authority.
#[derive(Debug, Clone)]
pub struct AuthorityService {
    ports: AuthorityPorts,
    live_window_secs: i64,
}

impl AuthorityService {
    /// The service; `live_window_secs` bounds how far back chains can still hold live hops
    /// ([`crate::EntryLifetimes::live_window_secs`]).
    pub fn new(ports: AuthorityPorts, live_window_secs: i64) -> Self {
        Self {
            ports,
            live_window_secs,
        }
    }

    /// The standing authority of `subject` now: its hops unexpired and unrevoked (found among
    /// the chains started within the live window), its consent grants, the clients and the
    /// policy.
    pub async fn of(&self, subject: &Subject) -> Result<StandingAuthority, AuthorityError> {
        let at_ms = self.ports.revocations.now_ms().await.map_err(down)?;
        let candidates = crate::live::live_hops(
            self.ports.ledger.as_ref(),
            self.live_window_secs,
            at_ms,
            |hop| &hop.subject == subject,
        )
        .await
        .map_err(AuthorityError::Unavailable)?;
        // One revocation check per candidate, all in flight together (one round trip on Redis).
        let facts: Vec<_> = candidates.iter().map(facts_of_hop).collect();
        let checks = futures_util::future::try_join_all(
            facts
                .iter()
                .map(|facts| self.ports.revocations.check(facts)),
        )
        .await
        .map_err(down)?;
        let hops: Vec<HopRecord> = candidates
            .into_iter()
            .zip(checks)
            .filter(|(_, checked)| checked.verdict == Verdict::Live)
            .map(|(hop, _)| hop)
            .collect();
        let consents = self
            .ports
            .consents
            .list(Some(subject), None)
            .await
            .map_err(down)?;
        let clients = self
            .ports
            .clients
            .clients()
            .await
            .map_err(down)?
            .into_iter()
            .map(|c| (c.id.to_string(), c))
            .collect();
        let (policy, _) = self.ports.policies.policy().await.map_err(down)?;
        Ok(standing_authority(
            subject, &hops, &consents, &clients, &policy, at_ms,
        ))
    }
}
