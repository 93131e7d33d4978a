//! Which downstream apps take part in the delegation model, and how: every verifier's report
//! (SDK instances, gateways), what mandate sees itself (introspection calls, feed subscribers,
//! Shared Signals streams), and per audience a verdict an administrator checks before enforcing
//! a control that depends on it (docs/GOVERNANCE.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mandate_model::{Audience, ClientKind, Clock};
use mandate_store::{
    Client, ClientRegistry, Participant, ParticipationStore, SsfStream, SsfStreamStore, StoreError,
    StreamStatus,
};
use serde::{Deserialize, Serialize};

/// How long a report lives: verifiers report every [`REPORT_EVERY_SECS`], so a verifier that
/// missed three reports in a row is no longer counted.
pub const REPORT_TTL_MS: i64 = 120_000;
/// How often verifiers are asked to report.
pub const REPORT_EVERY_SECS: u64 = 30;
/// How long an app counts as introspecting after its last call seen.
pub const INTROSPECTION_TTL_MS: i64 = 600_000;
/// Introspection calls are written at most this often per app and node.
const INTROSPECTION_FLUSH_MS: i64 = 60_000;
/// Live instances one resource server may report.
pub const MAX_INSTANCES_PER_OWNER: usize = 16;
/// Longest instance, node and version strings.
const MAX_NAME: usize = 64;
/// Most audiences in one report.
const MAX_AUDIENCES: usize = 16;

/// A verifier's report, as it sends it (`POST /participation`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Its instance name (letters, digits, `.`, `_`, `:`, `-`; at most 64).
    pub instance: String,
    /// `sdk` or `gateway`.
    pub kind: String,
    /// `followed`, `direct`, `feed` or `none`.
    pub mode: String,
    /// The audiences it verifies for: each must be one the reporting client owns.
    pub audiences: Vec<String>,
    /// The host it runs on.
    #[serde(default)]
    pub node: String,
    /// Its software version.
    #[serde(default)]
    pub version: String,
    /// The age of its revocation view, ms (followers).
    #[serde(default)]
    pub lag_ms: Option<u64>,
}

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum ParticipationError {
    /// Only resource servers report.
    #[error("only resource servers report participation")]
    NotAResourceServer,
    /// A field is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The client already has the most live instances.
    #[error("at most {MAX_INSTANCES_PER_OWNER} live instances per resource server")]
    TooMany,
    /// The store did not answer.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for ParticipationError {
    fn from(error: StoreError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// What an audience's apps do, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Verdict {
    /// A live verifier follows mandate's revocations (a follower, a direct check, the feed, or a
    /// Shared Signals stream): a revoked chain is refused there.
    #[serde(rename = "follows revocations")]
    FollowsRevocations,
    /// The app asks mandate about each token (RFC 7662): revocations are seen at once.
    #[serde(rename = "introspects")]
    Introspects,
    /// A live verifier checks signatures and claims but follows no revocations: a revoked token
    /// is accepted until it expires.
    #[serde(rename = "verifies only")]
    VerifiesOnly,
    /// Nothing reported, and nothing seen: whether the app verifies anything is unknown.
    #[serde(rename = "silent")]
    Silent,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::FollowsRevocations => "follows revocations",
            Self::Introspects => "introspects",
            Self::VerifiesOnly => "verifies only",
            Self::Silent => "silent",
        })
    }
}

/// The verdict of what takes part for one audience.
pub fn verdict(participants: &[&Participant], streams: &[&SsfStream]) -> Verdict {
    let follows = |p: &&Participant| matches!(p.mode.as_str(), "followed" | "direct" | "feed");
    if participants.iter().any(follows) || !streams.is_empty() {
        Verdict::FollowsRevocations
    } else if participants.iter().any(|p| p.kind == "introspection") {
        Verdict::Introspects
    } else if participants.iter().any(|p| p.mode == "none") {
        Verdict::VerifiesOnly
    } else {
        Verdict::Silent
    }
}

/// A Shared Signals stream as the participation map shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamView {
    /// The stream.
    pub stream_id: String,
    /// Its owner.
    pub owner: String,
    /// `push` or `poll`.
    pub delivery: &'static str,
}

/// One audience: who owns it, who verifies for it, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct AudienceParticipation {
    /// The audience.
    pub audience: String,
    /// The resource servers owning it, with their human owners.
    pub owners: Vec<OwnerView>,
    /// What the verifiers and mandate say.
    pub verdict: Verdict,
    /// The live verifiers (reports, introspection counts, feed subscribers).
    pub verifiers: Vec<Participant>,
    /// Enabled Shared Signals streams delivering revocations for it.
    pub streams: Vec<StreamView>,
}

/// A resource server owning an audience.
#[derive(Debug, Clone, Serialize)]
pub struct OwnerView {
    /// Its client id.
    pub client_id: String,
    /// Who is answerable for it.
    pub owners: Vec<String>,
}

/// Takes reports, records what mandate sees, and draws the map.
#[derive(Debug)]
pub struct ParticipationService {
    store: Arc<dyn ParticipationStore>,
    clients: Arc<dyn ClientRegistry>,
    streams: Arc<dyn SsfStreamStore>,
    clock: Arc<dyn Clock>,
    node: String,
    /// Per app: introspection calls on this node, and when they were last written.
    introspections: Mutex<HashMap<String, (u64, i64)>>,
}

fn checked_name(what: &str, value: &str, required: bool) -> Result<(), ParticipationError> {
    let ok = value.len() <= MAX_NAME
        && (!required || !value.is_empty())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:_-+/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ParticipationError::Invalid(format!(
            "{what}: at most {MAX_NAME} letters, digits or . : _ - + /"
        )))
    }
}

impl ParticipationService {
    /// The service; `node` names this mandate node in what it records itself.
    pub fn new(
        store: Arc<dyn ParticipationStore>,
        clients: Arc<dyn ClientRegistry>,
        streams: Arc<dyn SsfStreamStore>,
        clock: Arc<dyn Clock>,
        node: String,
    ) -> Self {
        Self {
            store,
            clients,
            streams,
            clock,
            node,
            introspections: Mutex::new(HashMap::new()),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Stores `report` from `owner`, a resource server: its audiences must be the owner's, its
    /// names bounded, and the owner may hold at most [`MAX_INSTANCES_PER_OWNER`] live instances.
    pub async fn report(&self, owner: &Client, report: Report) -> Result<(), ParticipationError> {
        if owner.kind != ClientKind::ResourceServer {
            return Err(ParticipationError::NotAResourceServer);
        }
        checked_name("instance", &report.instance, true)?;
        checked_name("node", &report.node, false)?;
        checked_name("version", &report.version, false)?;
        if !matches!(report.kind.as_str(), "sdk" | "gateway") {
            return Err(ParticipationError::Invalid("kind is sdk or gateway".into()));
        }
        if !matches!(
            report.mode.as_str(),
            "followed" | "direct" | "feed" | "none"
        ) {
            return Err(ParticipationError::Invalid(
                "mode is followed, direct, feed or none".into(),
            ));
        }
        if report.audiences.is_empty() || report.audiences.len() > MAX_AUDIENCES {
            return Err(ParticipationError::Invalid(format!(
                "audiences: one to {MAX_AUDIENCES}"
            )));
        }
        for audience in &report.audiences {
            let owned = Audience::parse(audience).is_ok_and(|a| owner.owns(&a));
            if !owned {
                return Err(ParticipationError::Invalid(format!(
                    "audiences: {audience} is not an audience of {}",
                    owner.id
                )));
            }
        }
        let now = self.now_ms();
        let live = self.store.live(now).await?;
        let instances: Vec<&Participant> = live
            .iter()
            .filter(|p| {
                p.owner == owner.id.as_str() && matches!(p.kind.as_str(), "sdk" | "gateway")
            })
            .collect();
        let known = instances
            .iter()
            .find(|p| p.kind == report.kind && p.instance == report.instance);
        if known.is_none() && instances.len() >= MAX_INSTANCES_PER_OWNER {
            return Err(ParticipationError::TooMany);
        }
        let participant = Participant {
            owner: owner.id.to_string(),
            kind: report.kind,
            instance: report.instance,
            mode: report.mode,
            audiences: report.audiences,
            node: report.node,
            version: report.version,
            lag_ms: report.lag_ms,
            count: known.map_or(1, |p| p.count + 1),
            seen_at_ms: now,
        };
        self.store.report(&participant, now + REPORT_TTL_MS).await?;
        Ok(())
    }

    /// Counts an introspection call by `owner` (a resource server); written to the store at most
    /// once a minute per app and node, so introspection costs no extra store write per call.
    /// A store failure is logged, never the caller's problem.
    pub async fn introspected(&self, owner: &Client) {
        if owner.kind != ClientKind::ResourceServer {
            return;
        }
        let now = self.now_ms();
        let flush = {
            let Ok(mut counts) = self.introspections.lock() else {
                return;
            };
            let entry = counts.entry(owner.id.to_string()).or_insert((0, i64::MIN));
            entry.0 += 1;
            if now.saturating_sub(entry.1) >= INTROSPECTION_FLUSH_MS {
                entry.1 = now;
                Some(entry.0)
            } else {
                None
            }
        };
        if let Some(count) = flush {
            let participant = self.seen(
                owner,
                "introspection",
                &self.node,
                "introspection",
                count,
                now,
            );
            if let Err(error) = self
                .store
                .report(&participant, now + INTROSPECTION_TTL_MS)
                .await
            {
                tracing::warn!(%error, client = %owner.id, "introspection participation not recorded");
            }
        }
    }

    /// Records that `owner` follows mandate's revocation feed on connection `connection` of
    /// this node; called on connection and again while it stays open (at most every
    /// [`REPORT_EVERY_SECS`]). A store failure is logged.
    pub async fn following_feed(&self, owner: &Client, connection: &str) {
        let now = self.now_ms();
        let instance = format!("{}:{connection}", self.node);
        let participant = self.seen(owner, "feed", &instance, "feed", 1, now);
        if let Err(error) = self.store.report(&participant, now + REPORT_TTL_MS).await {
            tracing::warn!(%error, client = %owner.id, "feed participation not recorded");
        }
    }

    fn seen(
        &self,
        owner: &Client,
        kind: &str,
        instance: &str,
        mode: &str,
        count: u64,
        now: i64,
    ) -> Participant {
        Participant {
            owner: owner.id.to_string(),
            kind: kind.into(),
            instance: instance.into(),
            mode: mode.into(),
            audiences: owner.audiences.iter().map(ToString::to_string).collect(),
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            lag_ms: None,
            count,
            seen_at_ms: now,
        }
    }

    /// Every audience a resource server owns, with its owners, its live verifiers, its streams
    /// and its verdict, sorted by audience.
    pub async fn map(&self) -> Result<Vec<AudienceParticipation>, ParticipationError> {
        let live = self.store.live(self.now_ms()).await?;
        let streams = self.streams.all().await?;
        let clients = self.clients.clients().await?;
        let mut audiences: Vec<AudienceParticipation> = Vec::new();
        for client in clients
            .iter()
            .filter(|c| c.kind == ClientKind::ResourceServer)
        {
            for audience in &client.audiences {
                let audience = audience.to_string();
                let owner = OwnerView {
                    client_id: client.id.to_string(),
                    owners: client.owners.clone(),
                };
                match audiences.iter_mut().find(|a| a.audience == audience) {
                    Some(existing) => existing.owners.push(owner),
                    None => audiences.push(AudienceParticipation {
                        audience,
                        owners: vec![owner],
                        verdict: Verdict::Silent,
                        verifiers: Vec::new(),
                        streams: Vec::new(),
                    }),
                }
            }
        }
        for entry in &mut audiences {
            let verifiers: Vec<&Participant> = live
                .iter()
                .filter(|p| p.audiences.contains(&entry.audience))
                .collect();
            let delivering: Vec<&SsfStream> = streams
                .iter()
                .filter(|s| {
                    s.status == StreamStatus::Enabled
                        && s.aud.contains(&entry.audience)
                        && crate::SsfTransmitter::delivers(s, crate::ssf::SESSION_REVOKED)
                })
                .collect();
            entry.verdict = verdict(&verifiers, &delivering);
            entry.verifiers = verifiers.into_iter().cloned().collect();
            entry.streams = delivering
                .iter()
                .map(|s| StreamView {
                    stream_id: s.stream_id.clone(),
                    owner: s.owner.to_string(),
                    delivery: match s.delivery {
                        mandate_store::Delivery::Push { .. } => "push",
                        mandate_store::Delivery::Poll { .. } => "poll",
                    },
                })
                .collect();
        }
        audiences.sort_by(|a, b| a.audience.cmp(&b.audience));
        Ok(audiences)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn participant(kind: &str, mode: &str) -> Participant {
        Participant {
            owner: "calendar-api".into(),
            kind: kind.into(),
            instance: "i".into(),
            mode: mode.into(),
            audiences: vec![],
            node: String::new(),
            version: String::new(),
            lag_ms: None,
            count: 1,
            seen_at_ms: 0,
        }
    }

    #[test]
    fn the_verdict_takes_the_best_participant() {
        let (followed, none, intro) = (
            participant("sdk", "followed"),
            participant("gateway", "none"),
            participant("introspection", "introspection"),
        );
        assert_eq!(verdict(&[], &[]), Verdict::Silent);
        assert_eq!(verdict(&[&none], &[]), Verdict::VerifiesOnly);
        assert_eq!(verdict(&[&none, &intro], &[]), Verdict::Introspects);
        assert_eq!(
            verdict(&[&none, &intro, &followed], &[]),
            Verdict::FollowsRevocations
        );
        for mode in ["direct", "feed"] {
            assert_eq!(
                verdict(&[&participant("sdk", mode)], &[]),
                Verdict::FollowsRevocations
            );
        }
        assert_eq!(
            verdict(&[&participant("feed", "feed")], &[]),
            Verdict::FollowsRevocations
        );
    }

    #[test]
    fn names_are_bounded_and_plain() {
        assert!(checked_name("instance", "app-1.host:8080", true).is_ok());
        assert!(checked_name("instance", "", true).is_err());
        assert!(checked_name("node", "", false).is_ok());
        assert!(checked_name("instance", "a b", true).is_err());
        assert!(checked_name("instance", &"x".repeat(65), true).is_err());
        assert!(checked_name("instance", "x\r\ny", true).is_err());
    }
}
