//! Which downstream apps take part in the delegation model, and how: every verifier's report
//! (SDK instances, gateways), what mandate sees itself (introspection calls, feed subscribers,
//! Shared Signals streams), and per audience a verdict an administrator checks before enforcing
//! a control that depends on it (docs/GOVERNANCE.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mandate_model::{Audience, ClientKind, Clock};
use mandate_store::{
    AuditEvent, AuditLog, Client, ClientRegistry, Gate, GateStore, Participant, ParticipationStore,
    Requirement, SsfStream, SsfStreamStore, StoreError, StreamStatus,
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
    /// A gate names something that is not an app audience.
    #[error("a gate guards an app audience (an absolute https URI), not {0}")]
    NotAnAppAudience(String),
    /// No gate guards the audience.
    #[error("no gate for {0}")]
    NoGate(String),
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

/// Whether `verdict` meets `require`. Introspection meets `follows_revocations`: the app asks
/// mandate about every token, so a revocation is seen at its next request.
pub fn meets(require: Requirement, verdict: Verdict) -> bool {
    match require {
        Requirement::FollowsRevocations => verdict <= Verdict::Introspects,
        Requirement::Verifies => verdict <= Verdict::VerifiesOnly,
        Requirement::None => true,
    }
}

/// A gate judged against its audience's verdict now.
#[derive(Debug, Clone, Serialize)]
pub struct GateDecision {
    /// The gate.
    #[serde(flatten)]
    pub gate: Gate,
    /// The audience's verdict.
    pub verdict: Verdict,
    /// Whether the verdict meets the gate.
    pub met: bool,
}

impl GateDecision {
    /// `gate` judged against `verdict`.
    pub fn new(gate: Gate, verdict: Verdict) -> Self {
        let met = meets(gate.require, verdict);
        Self { gate, verdict, met }
    }

    /// Whether an exchange for the audience is refused (not met, and not a dry run).
    pub fn refuses(&self) -> bool {
        !self.met && !self.gate.dry_run
    }

    /// Why the gate is not met, in mandate's words (the audience is not repeated: it is the
    /// caller's own input).
    pub fn shortfall(&self) -> String {
        let wanted = match self.gate.require {
            Requirement::FollowsRevocations => "a verifier that follows revocations",
            Requirement::Verifies => "a verifier",
            Requirement::None => "nothing",
        };
        format!(
            "the participation gate of this audience requires {wanted}; its participation is '{}'",
            self.verdict
        )
    }
}

/// What an exchange asks about its target's gate. [`ParticipationService`] answers it; a
/// deployment without gates answers [`NoGates`].
#[async_trait::async_trait]
pub trait TargetGate: Send + Sync + std::fmt::Debug {
    /// The gate of `target`, if it is an app audience with one.
    async fn gate(&self, target: &Audience) -> Result<Option<Gate>, StoreError>;
    /// `gate` judged against its audience's verdict now.
    async fn judge(&self, gate: Gate) -> Result<GateDecision, StoreError>;
}

/// No gates (tests of the grants that are not about participation).
#[derive(Debug, Default)]
pub struct NoGates;

#[async_trait::async_trait]
impl TargetGate for NoGates {
    async fn gate(&self, _target: &Audience) -> Result<Option<Gate>, StoreError> {
        Ok(None)
    }

    async fn judge(&self, gate: Gate) -> Result<GateDecision, StoreError> {
        Ok(GateDecision::new(gate, Verdict::Silent))
    }
}

/// A gate to set.
#[derive(Debug, Clone)]
pub struct NewGate {
    /// The app audience.
    pub audience: String,
    /// What its verifiers must do.
    pub require: Requirement,
    /// Only audit what would be refused.
    pub dry_run: bool,
}

/// What takes part, read once: the live participants and the Shared Signals streams.
struct Seen {
    live: Vec<Participant>,
    streams: Vec<SsfStream>,
}

/// One audience's part of what was seen.
struct Taking<'a> {
    verifiers: Vec<&'a Participant>,
    streams: Vec<&'a SsfStream>,
    verdict: Verdict,
}

impl Seen {
    /// The live verifiers of `audience`, the enabled streams delivering its revocations, and
    /// their verdict.
    fn of(&self, audience: &str) -> Taking<'_> {
        let verifiers: Vec<&Participant> = self
            .live
            .iter()
            .filter(|p| p.audiences.iter().any(|a| a == audience))
            .collect();
        let streams: Vec<&SsfStream> = self
            .streams
            .iter()
            .filter(|s| {
                s.status == StreamStatus::Enabled
                    && s.aud.iter().any(|a| a == audience)
                    && crate::SsfTransmitter::delivers(s, crate::ssf::SESSION_REVOKED)
            })
            .collect();
        let verdict = verdict(&verifiers, &streams);
        Taking {
            verifiers,
            streams,
            verdict,
        }
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
    /// Its participation gate, if any, and whether the verdict meets it.
    pub gate: Option<GateState>,
}

/// An audience's gate as the map shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GateState {
    /// What its verifiers must do.
    pub require: Requirement,
    /// Whether it only audits.
    pub dry_run: bool,
    /// Whether the verdict meets it.
    pub met: bool,
}

/// A resource server owning an audience.
#[derive(Debug, Clone, Serialize)]
pub struct OwnerView {
    /// Its client id.
    pub client_id: String,
    /// Who is answerable for it.
    pub owners: Vec<String>,
}

/// The ports [`ParticipationService`] reads and writes.
#[derive(Debug, Clone)]
pub struct ParticipationPorts {
    /// The verifiers' reports and what mandate saw.
    pub participants: Arc<dyn ParticipationStore>,
    /// The gates.
    pub gates: Arc<dyn GateStore>,
    /// The registry (audiences and their owners).
    pub clients: Arc<dyn ClientRegistry>,
    /// Shared Signals streams.
    pub streams: Arc<dyn SsfStreamStore>,
    /// The audit stream (gate changes).
    pub audit: Arc<dyn AuditLog>,
}

/// Takes reports, records what mandate sees, draws the map, and keeps the gates.
#[derive(Debug)]
pub struct ParticipationService {
    store: Arc<dyn ParticipationStore>,
    gates: Arc<dyn GateStore>,
    clients: Arc<dyn ClientRegistry>,
    streams: Arc<dyn SsfStreamStore>,
    audit: Arc<dyn AuditLog>,
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
    pub fn new(ports: ParticipationPorts, clock: Arc<dyn Clock>, node: String) -> Self {
        Self {
            store: ports.participants,
            gates: ports.gates,
            clients: ports.clients,
            streams: ports.streams,
            audit: ports.audit,
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
        let seen = self.taking_part().await?;
        let clients = self.clients.clients().await?;
        let gates = self.gates.gates().await?;
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
                        gate: None,
                    }),
                }
            }
        }
        for entry in &mut audiences {
            let taking = seen.of(&entry.audience);
            entry.verdict = taking.verdict;
            entry.gate = gates
                .iter()
                .find(|g| g.audience == entry.audience)
                .map(|g| GateState {
                    require: g.require,
                    dry_run: g.dry_run,
                    met: meets(g.require, entry.verdict),
                });
            entry.verifiers = taking.verifiers.into_iter().cloned().collect();
            entry.streams = taking
                .streams
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

    /// The live participants and the streams, read together.
    async fn taking_part(&self) -> Result<Seen, StoreError> {
        let (live, streams) = tokio::join!(self.store.live(self.now_ms()), self.streams.all());
        Ok(Seen {
            live: live?,
            streams: streams?,
        })
    }

    /// The verdict of `audience` now.
    pub async fn verdict_of(&self, audience: &str) -> Result<Verdict, StoreError> {
        Ok(self.taking_part().await?.of(audience).verdict)
    }

    /// Every gate judged against its audience's verdict now, ordered by audience (what takes
    /// part is read once for all of them).
    pub async fn gates(&self) -> Result<Vec<GateDecision>, ParticipationError> {
        let (gates, seen) = tokio::join!(self.gates.gates(), self.taking_part());
        let seen = seen?;
        Ok(gates?
            .into_iter()
            .map(|gate| {
                let verdict = seen.of(&gate.audience).verdict;
                GateDecision::new(gate, verdict)
            })
            .collect())
    }

    /// Sets the gate of an app audience (audited as `gates.set`), judged now.
    pub async fn set_gate(
        &self,
        new: NewGate,
        by: &str,
    ) -> Result<GateDecision, ParticipationError> {
        let gate = self.gate_of(new, by)?;
        self.gates.put(&gate).await?;
        let detail = format!(
            "require {}{}",
            gate.require,
            if gate.dry_run { ", dry run" } else { "" }
        );
        self.audit
            .record(AuditEvent::new(
                gate.set_at_ms,
                by,
                "gates.set",
                &gate.audience,
                detail,
            ))
            .await;
        let verdict = self.verdict_of(&gate.audience).await?;
        Ok(GateDecision::new(gate, verdict))
    }

    /// The gate `new` describes, set by `by` now; an audience that is not an app's is refused.
    pub fn gate_of(&self, new: NewGate, by: &str) -> Result<Gate, ParticipationError> {
        match Audience::parse(&new.audience) {
            Ok(audience @ Audience::App(_)) => Ok(Gate {
                audience: audience.to_string(),
                require: new.require,
                dry_run: new.dry_run,
                set_by: by.into(),
                set_at_ms: self.now_ms(),
            }),
            _ => Err(ParticipationError::NotAnAppAudience(new.audience)),
        }
    }

    /// Removes the gate of `audience` (audited as `gates.remove`).
    pub async fn remove_gate(&self, audience: &str, by: &str) -> Result<(), ParticipationError> {
        if !self.gates.remove(audience).await? {
            return Err(ParticipationError::NoGate(audience.into()));
        }
        self.audit
            .record(AuditEvent::new(
                self.now_ms(),
                by,
                "gates.remove",
                audience,
                String::new(),
            ))
            .await;
        Ok(())
    }

    /// Seeds configured gates (made by [`ParticipationService::gate_of`]) into a store that
    /// never held any; whether it did.
    pub async fn seed_gates(&self, gates: &[Gate]) -> Result<bool, ParticipationError> {
        Ok(self.gates.seed_if_never_written(gates).await?)
    }
}

#[async_trait::async_trait]
impl TargetGate for ParticipationService {
    async fn gate(&self, target: &Audience) -> Result<Option<Gate>, StoreError> {
        match target {
            Audience::App(_) => self.gates.gate(&target.to_string()).await,
            Audience::Agent(_) => Ok(None),
        }
    }

    async fn judge(&self, gate: Gate) -> Result<GateDecision, StoreError> {
        let verdict = self.verdict_of(&gate.audience).await?;
        Ok(GateDecision::new(gate, verdict))
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
    fn a_gate_is_met_by_its_verdict_or_a_better_one() {
        use Requirement::{FollowsRevocations, None, Verifies};
        use Verdict::{Introspects, Silent, VerifiesOnly};
        let follows = Verdict::FollowsRevocations;
        for verdict in [follows, Introspects, VerifiesOnly, Silent] {
            assert!(meets(None, verdict));
        }
        assert!(meets(FollowsRevocations, follows));
        assert!(meets(FollowsRevocations, Introspects));
        assert!(!meets(FollowsRevocations, VerifiesOnly));
        assert!(!meets(FollowsRevocations, Silent));
        assert!(meets(Verifies, VerifiesOnly));
        assert!(meets(Verifies, Introspects));
        assert!(!meets(Verifies, Silent));
    }

    #[test]
    fn only_an_unmet_enforced_gate_refuses() {
        let gate = |dry_run| Gate {
            audience: "https://calendar.example.com".into(),
            require: Requirement::FollowsRevocations,
            dry_run,
            set_by: "ops".into(),
            set_at_ms: 0,
        };
        let unmet = GateDecision::new(gate(false), Verdict::VerifiesOnly);
        assert!(unmet.refuses());
        assert_eq!(
            unmet.shortfall(),
            "the participation gate of this audience requires a verifier that follows revocations; its participation is 'verifies only'"
        );
        assert!(!GateDecision::new(gate(true), Verdict::VerifiesOnly).refuses());
        assert!(!GateDecision::new(gate(false), Verdict::FollowsRevocations).refuses());
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
