//! The revocation and consent services over the in-memory ports, with a fixed clock and
//! predictable ids: no HTTP, no sleeps. What each operation writes, what it kills, and the audit
//! event it leaves (or, refused, that it leaves nothing).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use common::{client, CountingIds};

use std::sync::Arc;

use mandate_chain::{
    Authority, ChainId, ConsentStore, Evidence, EvidenceKind, HopId, HopRecord, Ledger,
};
use mandate_core::{
    ConsentError, ConsentService, EntryLifetimes, NewConsent, RevocationService, RevokeError,
};
use mandate_model::{Audience, ClientId, ClientKind, ClientState, FixedClock, ScopeSet, Subject};
use mandate_revocation::{MemoryRevocations, RevocationKind, RevocationList, TokenFacts, Verdict};
use mandate_store::{
    AuditFilter, AuditLog, Client, ClientRegistry, MemoryAuditLog, MemoryClientRegistry,
    MemoryConsentStore, MemoryLedger,
};

const NOW: i64 = 1_900_000_000;
const CAL: &str = "https://calendar.example.com";

struct World {
    clock: Arc<FixedClock>,
    list: Arc<MemoryRevocations>,
    ledger: Arc<MemoryLedger>,
    audit: Arc<MemoryAuditLog>,
    consents: Arc<MemoryConsentStore>,
    clients: Arc<MemoryClientRegistry>,
    revocation: RevocationService,
    consent_grants: ConsentService,
}

fn world() -> World {
    let clock = Arc::new(FixedClock::at(NOW));
    let list = Arc::new(MemoryRevocations::new(clock.clone()));
    let ledger = Arc::new(MemoryLedger::new(86_400));
    let audit = Arc::new(MemoryAuditLog::new(100));
    let consents = Arc::new(MemoryConsentStore::new());
    let clients = Arc::new(MemoryClientRegistry::new());
    // Server skew 60 s; tokens live at most 300 s; upstream tokens at most an hour.
    let lifetimes = EntryLifetimes::new(60, 300, 3_600);
    let revocation = RevocationService::new(list.clone(), ledger.clone(), audit.clone(), lifetimes);
    let consent_grants = ConsentService::new(
        consents.clone(),
        clients.clone(),
        revocation.clone(),
        audit.clone(),
        clock.clone(),
        Arc::new(CountingIds::default()),
    );
    World {
        clock,
        list,
        ledger,
        audit,
        consents,
        clients,
        revocation,
        consent_grants,
    }
}

fn hop(id: &str, chain: &str, parent: Option<&str>, evidence: (EvidenceKind, &str)) -> HopRecord {
    let mut authority = Authority::new();
    authority.insert(CAL, ScopeSet::parse("calendar.read").unwrap());
    HopRecord {
        jkt: None,
        request: None,
        id: HopId(id.into()),
        parent: parent.map(|p| HopId(p.into())),
        chain_id: ChainId(chain.into()),
        ancestors: parent.iter().map(|p| HopId((*p).into())).collect(),
        subject: Subject::parse("corp|alice").unwrap(),
        actors: vec![ClientId::parse("assistant").unwrap()],
        client_id: ClientId::parse("assistant").unwrap(),
        audience: Audience::parse(CAL).unwrap(),
        authority,
        issued_at: NOW,
        expires_at: NOW + 300,
        depth: if parent.is_some() { 2 } else { 1 },
        depth_limit: 5,
        evidence: Evidence {
            kind: evidence.0,
            reference: evidence.1.into(),
        },
        upstream: None,
    }
}

async fn events(audit: &MemoryAuditLog) -> Vec<(String, String, String, String)> {
    audit
        .recent(&AuditFilter::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action, e.target, e.detail))
        .collect()
}

async fn verdict(list: &MemoryRevocations, hop: &HopRecord) -> Verdict {
    list.check(&mandate_core::facts_of_hop(hop))
        .await
        .unwrap()
        .verdict
}

#[tokio::test]
async fn revoking_a_hop_kills_its_subtree_for_as_long_as_any_verifier_could_accept_it() {
    let w = world();
    let root = hop(
        "hop_r",
        "chn_1",
        None,
        (EvidenceKind::UpstreamAudience, "assistant"),
    );
    let child = hop(
        "hop_c",
        "chn_1",
        Some("hop_r"),
        (EvidenceKind::HandOff, "hop_r"),
    );
    let sibling_chain = hop(
        "hop_s",
        "chn_2",
        None,
        (EvidenceKind::UpstreamAudience, "assistant"),
    );
    for h in [&root, &child, &sibling_chain] {
        w.ledger.record(h).await.unwrap();
    }
    let outcome = w
        .revocation
        .revoke_hop("hop_r", "stolen", "ops")
        .await
        .unwrap();
    assert_eq!(outcome.hops_revoked, ["hop_r", "hop_c"]);
    // exp + the largest verifier skew (300 s), not the server's 60 s.
    assert_eq!(outcome.entries[0].until, (NOW + 300 + 300) * 1000);
    assert!(matches!(
        verdict(&w.list, &child).await,
        Verdict::Revoked { .. }
    ));
    assert_eq!(verdict(&w.list, &sibling_chain).await, Verdict::Live);
    // Just before the entry lapses it still holds; after, the token itself has long expired.
    w.clock.advance(300 + 299);
    assert!(matches!(
        verdict(&w.list, &child).await,
        Verdict::Revoked { .. }
    ));
    assert_eq!(
        events(&w.audit).await,
        [(
            "ops".into(),
            "revoke.hop".into(),
            "hop_r".into(),
            "1 entries, 2 hops".into()
        )]
    );
}

#[tokio::test]
async fn refused_revocations_write_and_audit_nothing() {
    let w = world();
    assert!(matches!(
        w.revocation.revoke_hop("hop_unknown", "x", "ops").await,
        Err(RevokeError::NotFound(_))
    ));
    assert!(matches!(
        w.revocation.revoke_chain("chn_unknown", "x", "ops").await,
        Err(RevokeError::NotFound(_))
    ));
    assert!(matches!(
        w.revocation
            .revoke_subject("not a subject|", "x", "ops")
            .await,
        Err(RevokeError::Invalid(_))
    ));
    // RFC 7009 on a hop the ledger does not know: no error, nothing written (decision D8).
    w.revocation
        .revoke_by_its_client("hop_unknown", "assistant")
        .await
        .unwrap();
    assert!(w.list.entries().await.unwrap().is_empty());
    assert!(events(&w.audit).await.is_empty());
}

#[tokio::test]
async fn timed_entries_start_at_the_store_clock_and_outlive_every_token_they_cover() {
    let w = world();
    let agent = w
        .revocation
        .revoke_agent("booking-tool", "suspended", "ops")
        .await
        .unwrap();
    assert_eq!(agent.entries[0].kind, RevocationKind::Agent);
    assert_eq!(agent.entries[0].at, NOW * 1000);
    assert_eq!(agent.entries[0].until, (NOW + 300 + 300) * 1000);
    let subject = w
        .revocation
        .revoke_subject("corp|alice", "left", "ops")
        .await
        .unwrap();
    assert_eq!(subject.entries[0].until, (NOW + 3_600 + 300) * 1000);
    // A token of alice issued in the same second is covered; one issued later is not.
    let facts = |issued_at| TokenFacts {
        subject: Some("corp|alice".into()),
        issued_at,
        ..TokenFacts::default()
    };
    let check = |f: TokenFacts| {
        let list = w.list.clone();
        async move { list.check(&f).await.unwrap().verdict }
    };
    assert!(matches!(check(facts(NOW)).await, Verdict::Revoked { .. }));
    assert_eq!(check(facts(NOW + 1)).await, Verdict::Live);
    // The agent entry is the lifecycle's to audit; the subject's is audited here.
    assert_eq!(
        events(&w.audit).await,
        [(
            "ops".into(),
            "revoke.subject".into(),
            "corp|alice".into(),
            "1 entries, 0 hops".into()
        )]
    );
    assert_eq!(
        w.revocation.lifetimes().longest_entry_ms(),
        (3_600 + 300) * 1000
    );
}

fn agent(id: &str) -> Client {
    client(id, ClientKind::Agent, &[])
}

fn new_consent(actor: &str) -> NewConsent {
    serde_json::from_value(serde_json::json!({
        "subject": "corp|alice", "actor": actor, "audience": CAL,
        "scopes": ["calendar.read"], "expires_at": "2031-01-01T00:00:00Z"
    }))
    .unwrap()
}

#[tokio::test]
async fn a_consent_is_created_for_a_registered_agent_and_its_withdrawal_kills_its_chains() {
    let w = world();
    assert!(matches!(
        w.consent_grants
            .create(new_consent("assistant"), "ops", false)
            .await,
        Err(ConsentError::Invalid(_))
    ));
    assert!(
        events(&w.audit).await.is_empty(),
        "a refusal audits nothing"
    );
    w.clients
        .insert_if_absent(agent("assistant"))
        .await
        .unwrap();
    let grant = w
        .consent_grants
        .create(new_consent("assistant"), "ops", false)
        .await
        .unwrap();
    assert_eq!(
        grant.id, "cns_1",
        "the second id made: the refused request took the first"
    );
    let root = hop(
        "hop_r",
        "chn_1",
        None,
        (EvidenceKind::ConsentGrant, &grant.id),
    );
    w.ledger.record(&root).await.unwrap();
    assert_eq!(verdict(&w.list, &root).await, Verdict::Live);

    let outcome = w
        .consent_grants
        .withdraw(&grant.id, "user withdrew", "ops")
        .await
        .unwrap();
    let kinds: Vec<RevocationKind> = outcome.entries.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [RevocationKind::Consent, RevocationKind::Chain]);
    assert_eq!(outcome.hops_revoked, ["hop_r"]);
    assert!(matches!(
        verdict(&w.list, &root).await,
        Verdict::Revoked { .. }
    ));
    assert!(w.consents.consent(&grant.id).await.unwrap().is_none());
    let audited = events(&w.audit).await;
    assert_eq!(
        audited[0],
        (
            "ops".into(),
            "consent.withdraw".into(),
            grant.id.clone(),
            "2 entries, 1 hops: user withdrew".into()
        )
    );
    assert_eq!(audited[1].1, "consent.create");
    assert!(matches!(
        w.consent_grants.withdraw(&grant.id, "again", "ops").await,
        Err(ConsentError::NotFound(_))
    ));
}

fn agent_service(w: &World) -> mandate_core::AgentService {
    mandate_core::AgentService::new(
        w.clients.clone(),
        w.revocation.clone(),
        w.audit.clone(),
        w.clock.clone(),
        vec!["https://corp.example.com".into()],
    )
}

#[tokio::test]
async fn suspending_an_agent_revokes_before_and_after_the_change_and_audits_once() {
    let w = world();
    let agents = agent_service(&w);
    let request: mandate_core::NewAgent = serde_json::from_value(serde_json::json!({
        "client_id": "booking-tool", "kind": "agent", "owners": [" team@example.com "],
        "auth_method": "client_secret_basic", "state": "active"
    }))
    .unwrap();
    let created = agents.create(request, "ops").await.unwrap();
    assert!(
        created.secret.is_some(),
        "a secret client gets its secret once"
    );
    assert_eq!(created.client.owners, ["team@example.com"]);
    let id = ClientId::parse("booking-tool").unwrap();
    let (client, revocation) = agents
        .transition(
            &id,
            mandate_model::Transition::Suspend,
            "lost laptop",
            "ops",
        )
        .await
        .unwrap();
    assert_eq!(client.state, ClientState::Suspended);
    let entry = &revocation.unwrap().entries[0];
    assert_eq!(
        (entry.kind, entry.id.as_str()),
        (RevocationKind::Agent, "booking-tool")
    );
    // A hand-off addressed to the agent is covered: it is one of the tokens it appears in.
    let hand_off = TokenFacts {
        agents: TokenFacts::agents_named(&[], "assistant", "agent:booking-tool"),
        issued_at: NOW,
        ..TokenFacts::default()
    };
    assert!(matches!(
        w.list.check(&hand_off).await.unwrap().verdict,
        Verdict::Revoked { .. }
    ));
    // Suspending a suspended agent is refused and writes nothing more.
    let before = w.list.entries().await.unwrap();
    assert!(matches!(
        agents
            .transition(&id, mandate_model::Transition::Suspend, "again", "ops")
            .await,
        Err(mandate_core::AgentError::InvalidTransition(_))
    ));
    assert_eq!(w.list.entries().await.unwrap(), before);
    let audited: Vec<String> = events(&w.audit).await.into_iter().map(|e| e.1).collect();
    assert_eq!(audited, ["agent.suspend", "agent.create"]);
}

fn policy_service(w: &World) -> mandate_core::PolicyService {
    mandate_core::PolicyService::new(
        mandate_core::PolicyPorts {
            policies: Arc::new(mandate_store::MemoryPolicyStore::new()),
            clients: w.clients.clone(),
            consents: w.consents.clone(),
            ledger: w.ledger.clone(),
            revocations: w.list.clone(),
            audit: w.audit.clone(),
            gate: Arc::new(mandate_core::NoGates),
        },
        w.clock.clone(),
        mandate_core::ExplainSettings {
            issuer: "https://mandate.example.com".into(),
            ttl_secs: 300,
            max_chain_depth: 5,
        },
    )
}

fn row(actor: &str, audience: &str) -> mandate_chain::PolicyRow {
    mandate_chain::PolicyRow {
        actor: ClientId::parse(actor).unwrap(),
        audience: Audience::parse(audience).unwrap(),
        scopes: ScopeSet::parse("calendar.read").unwrap(),
        max_depth: None,
    }
}

#[tokio::test]
async fn policy_rows_are_replaced_over_the_version_read_and_explained_as_token_would() {
    let w = world();
    let policies = policy_service(&w);
    let (_, version) = policies.current().await.unwrap();
    // A row naming an unregistered agent is refused by index; nothing is stored or audited.
    let refused = policies
        .replace(vec![row("assistant", CAL)], version, "ops")
        .await;
    assert!(matches!(
        refused,
        Err(mandate_core::PolicyError::InvalidRow { index: 0, .. })
    ));
    assert!(events(&w.audit).await.is_empty());
    w.clients
        .insert_if_absent(agent("assistant"))
        .await
        .unwrap();
    let next = policies
        .replace(vec![row("assistant", CAL)], version, "ops")
        .await
        .unwrap();
    assert!(next > version);
    // Written against the old version again: stale, nothing changes.
    assert!(matches!(
        policies.replace(vec![], version, "ops").await,
        Err(mandate_core::PolicyError::Stale { current, .. }) if current == next
    ));
    assert_eq!(policies.current().await.unwrap().0.rows().len(), 1);
    assert_eq!(
        events(&w.audit).await,
        [(
            "ops".into(),
            "policies.replace".into(),
            "policies".into(),
            format!("version {next}, 1 rows")
        )]
    );
    // Explain: the calendar is not owned by any resource server, so /token would refuse it.
    let question = mandate_core::ExplainQuestion {
        agent: ClientId::parse("assistant").unwrap(),
        token: mandate_core::ExplainedToken::Upstream { subject: None },
        audience: Audience::parse(CAL).unwrap(),
        scope: None,
    };
    match policies.explain(&question).await.unwrap().answer {
        mandate_core::ExplainAnswer::Decided(mandate_chain::Explanation::Refused {
            error, ..
        }) => assert_eq!(error, "invalid_target"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// alice's standing authority: the assistant holds a calendar token and a hand-off to the
/// booking tool, which may exchange it for the calendar (its row allows) but not for mail (no
/// row); a consent grant to the helper reaches mail only through a row; a revoked hop, an
/// expired hop and bob's hop are not hers now; a suspended agent reaches nothing.
#[tokio::test]
async fn a_users_standing_authority_is_what_is_live_granted_and_allowed() {
    use mandate_chain::{ConsentGrant, PolicyStore};
    let w = world();
    for (id, kind, audiences) in [
        ("assistant", ClientKind::Agent, vec![]),
        ("booking-tool", ClientKind::Agent, vec![]),
        ("helper", ClientKind::Agent, vec![]),
        ("idle", ClientKind::Agent, vec![]),
        ("calendar", ClientKind::ResourceServer, vec![CAL]),
    ] {
        let mut registered = client(id, kind, &audiences);
        if id == "idle" {
            registered.state = ClientState::Suspended;
        }
        w.clients.insert_if_absent(registered).await.unwrap();
    }
    const MAIL: &str = "https://mail.example.com";
    let token = hop(
        "hop_token",
        "chn_a",
        None,
        (EvidenceKind::UpstreamAudience, "assistant"),
    );
    let mut hand_off = hop(
        "hop_handoff",
        "chn_a",
        Some("hop_token"),
        (EvidenceKind::HandOff, "hop_token"),
    );
    hand_off.audience = Audience::parse("agent:booking-tool").unwrap();
    hand_off
        .authority
        .insert(MAIL, ScopeSet::parse("mail.read").unwrap());
    let revoked = hop(
        "hop_revoked",
        "chn_b",
        None,
        (EvidenceKind::UpstreamAudience, "assistant"),
    );
    let mut expired = hop(
        "hop_expired",
        "chn_c",
        None,
        (EvidenceKind::UpstreamAudience, "assistant"),
    );
    expired.expires_at = NOW - 1;
    let mut bobs = hop(
        "hop_bob",
        "chn_d",
        None,
        (EvidenceKind::UpstreamAudience, "assistant"),
    );
    bobs.subject = Subject::parse("corp|bob").unwrap();
    let mut idle = hop(
        "hop_idle",
        "chn_e",
        None,
        (EvidenceKind::UpstreamAudience, "idle"),
    );
    idle.client_id = ClientId::parse("idle").unwrap();
    for record in [&token, &hand_off, &revoked, &expired, &bobs, &idle] {
        w.ledger.record(record).await.unwrap();
    }
    w.revocation
        .revoke_hop("hop_revoked", "test", "ops")
        .await
        .unwrap();
    let alice = Subject::parse("corp|alice").unwrap();
    w.consents
        .insert_if_absent(ConsentGrant {
            id: "cns_mail".into(),
            subject: alice.clone(),
            actor: ClientId::parse("helper").unwrap(),
            audience: Audience::parse(MAIL).unwrap(),
            scopes: ScopeSet::parse("mail.read mail.send").unwrap(),
            expires_at: NOW + 3_600,
        })
        .await
        .unwrap();
    let policies = Arc::new(mandate_store::MemoryPolicyStore::new());
    let mut helper_mail = row("helper", MAIL);
    helper_mail.scopes = ScopeSet::parse("mail.read").unwrap();
    policies
        .seed_if_empty(vec![
            row("assistant", CAL),
            row("assistant", "agent:booking-tool"),
            row("booking-tool", CAL),
            helper_mail,
        ])
        .await
        .unwrap();
    let service = mandate_core::AuthorityService::new(
        mandate_core::AuthorityPorts {
            ledger: w.ledger.clone(),
            revocations: w.list.clone(),
            consents: w.consents.clone(),
            clients: w.clients.clone(),
            policies,
        },
        3_600 + 300 * 6,
    );
    let authority = service.of(&alice).await.unwrap();
    let agents: Vec<&str> = authority
        .agents
        .iter()
        .map(|a| a.client_id.as_str())
        .collect();
    assert_eq!(agents, ["assistant", "booking-tool", "helper", "idle"]);
    let assistant = &authority.agents[0];
    let held: Vec<&str> = assistant.live_hops.iter().map(|h| h.hop.as_str()).collect();
    assert_eq!(
        held,
        ["hop_token"],
        "revoked, expired and bob's hops are not hers now"
    );
    assert!(assistant.can_act);
    assert_eq!(assistant.policy.len(), 2);
    let booking = &authority.agents[1];
    assert_eq!(booking.live_hops[0].hop, "hop_handoff");
    let helper = &authority.agents[2];
    assert!(helper.consents[0].allowed_by_policy);
    let idle_agent = &authority.agents[3];
    assert!(!idle_agent.can_act);
    assert_eq!(idle_agent.state.as_deref(), Some("suspended"));

    type Access<'a> = (&'a str, &'a str, Vec<String>);
    let reach: Vec<(&str, Vec<Access>)> = authority
        .apps
        .iter()
        .map(|app| {
            (
                app.audience.as_str(),
                app.access
                    .iter()
                    .map(|a| (a.client_id.as_str(), a.via, a.scopes.clone()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        reach,
        vec![
            (
                CAL,
                vec![
                    ("assistant", "token", vec!["calendar.read".to_owned()]),
                    ("booking-tool", "hand_off", vec!["calendar.read".to_owned()]),
                ]
            ),
            // The hand-off carries mail.read, but the booking tool has no mail row; the helper's
            // grant is cut to its row.
            (
                MAIL,
                vec![("helper", "consent", vec!["mail.read".to_owned()])]
            ),
        ]
    );
}

/// Alice's chain `chn_1`: the assistant's hand-off to the booking tool (`hop_r`) and the booking
/// tool's mail token below it (`hop_c`); bob's chain `chn_2` (`hop_b`, the assistant's calendar
/// token).
async fn two_chains(w: &World) -> [HopRecord; 3] {
    let mut root = hop(
        "hop_r",
        "chn_1",
        None,
        (EvidenceKind::UpstreamAudience, "assistant"),
    );
    root.audience = Audience::parse("agent:booking-tool").unwrap();
    let mut child = hop(
        "hop_c",
        "chn_1",
        Some("hop_r"),
        (EvidenceKind::HandOff, "hop_r"),
    );
    child.client_id = ClientId::parse("booking-tool").unwrap();
    child
        .actors
        .insert(0, ClientId::parse("booking-tool").unwrap());
    child.audience = Audience::parse("https://mail.example.com").unwrap();
    let mut bobs = hop(
        "hop_b",
        "chn_2",
        None,
        (EvidenceKind::UpstreamAudience, "assistant"),
    );
    bobs.subject = Subject::parse("corp|bob").unwrap();
    for h in [&root, &child, &bobs] {
        w.ledger.record(h).await.unwrap();
    }
    [root, child, bobs]
}

#[tokio::test]
async fn a_preview_names_what_the_revocation_then_kills_and_writes_nothing() {
    use mandate_core::Target;
    let cases = [
        (Target::Hop("hop_c".into()), vec!["hop_c"]),
        (Target::Hop("hop_r".into()), vec!["hop_r", "hop_c"]),
        (Target::Chain("chn_1".into()), vec!["hop_r", "hop_c"]),
        (Target::Subject("corp|alice".into()), vec!["hop_r", "hop_c"]),
        (Target::Subject("corp|bob".into()), vec!["hop_b"]),
        (Target::Agent("booking-tool".into()), vec!["hop_r", "hop_c"]),
        (
            Target::Agent("assistant".into()),
            vec!["hop_b", "hop_r", "hop_c"],
        ),
        (Target::Agent("helper".into()), vec![]),
    ];
    for (target, expected) in cases {
        let w = world();
        two_chains(&w).await;
        let preview = w.revocation.preview(&target, "why", "ops").await.unwrap();
        assert!(preview.dry_run);
        assert_eq!(preview.outcome.hops_revoked, expected, "{target}");
        assert!(
            w.list.entries().await.unwrap().is_empty(),
            "{target}: a dry run writes no entry"
        );
        assert!(events(&w.audit).await.is_empty(), "{target}: nor audits");
        assert_eq!(preview.counts.live, expected.len(), "{target}");
        assert!(preview
            .hops
            .iter()
            .all(|h| h.status == mandate_core::HopStatus::Live));

        let outcome = match &target {
            Target::Hop(id) => w.revocation.revoke_hop(id, "why", "ops").await,
            Target::Chain(id) => w.revocation.revoke_chain(id, "why", "ops").await,
            Target::Subject(id) => w.revocation.revoke_subject(id, "why", "ops").await,
            Target::Agent(id) => w.revocation.revoke_agent(id, "why", "ops").await,
        }
        .unwrap();
        assert_eq!(
            outcome.hops_revoked, preview.outcome.hops_revoked,
            "{target}"
        );
        assert_eq!(
            outcome.chains_revoked, preview.outcome.chains_revoked,
            "{target}"
        );
        // The same entry: on a fixed clock even its T is the one the preview announced.
        assert_eq!(outcome.entries, preview.outcome.entries, "{target}");
    }
}

#[tokio::test]
async fn a_preview_tells_hops_already_dead_from_the_ones_it_would_kill() {
    let w = world();
    let [_, child, _] = two_chains(&w).await;
    w.revocation.revoke_hop("hop_c", "x", "ops").await.unwrap();
    let preview = w
        .revocation
        .preview(&mandate_core::Target::Chain("chn_1".into()), "y", "ops")
        .await
        .unwrap();
    assert_eq!(preview.outcome.hops_revoked, ["hop_r", "hop_c"]);
    assert_eq!(preview.hops[0].status, mandate_core::HopStatus::Live);
    assert_eq!(
        preview.hops[1].status,
        mandate_core::HopStatus::Revoked {
            revoked_by: mandate_core::RevokedBy {
                kind: RevocationKind::Hop,
                id: child.id.0.clone(),
            }
        }
    );
    assert_eq!(
        (
            preview.counts.live,
            preview.counts.already_revoked,
            preview.counts.expired
        ),
        (1, 1, 0)
    );
    // A chain's revocation reaches its expired hops too; a user's only the unexpired ones.
    w.clock.advance(301);
    let chain = w
        .revocation
        .preview(&mandate_core::Target::Chain("chn_1".into()), "y", "ops")
        .await
        .unwrap();
    assert_eq!(
        (
            chain.counts.hops,
            chain.counts.expired,
            chain.counts.already_revoked
        ),
        (2, 1, 1)
    );
    let user = w
        .revocation
        .preview(
            &mandate_core::Target::Subject("corp|alice".into()),
            "y",
            "ops",
        )
        .await
        .unwrap();
    assert!(user.outcome.hops_revoked.is_empty());
    // Refusals are the revocation's own.
    assert!(matches!(
        w.revocation
            .preview(&mandate_core::Target::Hop("hop_unknown".into()), "y", "ops")
            .await,
        Err(RevokeError::NotFound(_))
    ));
    assert!(matches!(
        w.revocation
            .preview(
                &mandate_core::Target::Subject("not a subject|".into()),
                "y",
                "ops"
            )
            .await,
        Err(RevokeError::Invalid(_))
    ));
    assert_eq!(
        w.list.entries().await.unwrap().len(),
        1,
        "only hop_c's entry"
    );
}

#[tokio::test]
async fn a_transitions_preview_changes_no_state_and_is_refused_as_the_transition_is() {
    let w = world();
    let agents = agent_service(&w);
    let request: mandate_core::NewAgent = serde_json::from_value(serde_json::json!({
        "client_id": "booking-tool", "kind": "agent", "owners": ["team@example.com"],
        "auth_method": "client_secret_basic", "state": "active"
    }))
    .unwrap();
    agents.create(request, "ops").await.unwrap();
    two_chains(&w).await;
    let id = ClientId::parse("booking-tool").unwrap();
    for transition in [
        mandate_model::Transition::Suspend,
        mandate_model::Transition::Retire,
    ] {
        let preview = agents
            .preview_transition(&id, transition, "lost laptop", "ops")
            .await
            .unwrap();
        assert_ne!(preview.client.state, ClientState::Active);
        let revocation = preview.revocation.unwrap();
        assert_eq!(revocation.outcome.hops_revoked, ["hop_r", "hop_c"]);
        assert_eq!(revocation.outcome.entries[0].kind, RevocationKind::Agent);
    }
    let activation = agents
        .preview_transition(&id, mandate_model::Transition::Activate, "x", "ops")
        .await;
    assert!(matches!(
        activation,
        Err(mandate_core::AgentError::InvalidTransition(_))
    ));
    assert_eq!(agents.show(&id).await.unwrap().state, ClientState::Active);
    assert!(w.list.entries().await.unwrap().is_empty());
    let audited: Vec<String> = events(&w.audit).await.into_iter().map(|e| e.1).collect();
    assert_eq!(audited, ["agent.create"]);
    // The real suspension kills what its preview named.
    let preview = agents
        .preview_transition(&id, mandate_model::Transition::Suspend, "x", "ops")
        .await
        .unwrap();
    let (_, outcome) = agents
        .transition(&id, mandate_model::Transition::Suspend, "x", "ops")
        .await
        .unwrap();
    assert_eq!(
        outcome.unwrap().hops_revoked,
        preview.revocation.unwrap().outcome.hops_revoked
    );
}
