//! The token endpoint's grants as services over the in-memory ports, with a fixed clock and
//! predictable ids: no HTTP, no sleeps. The exchange of an upstream ID token, a refused widening,
//! a revoked chain, a revocation landing between the hop's write and the second check, and both
//! halves of cross-app access (an ID-JAG issued by one service and redeemed at another).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use common::{client, CountingIds};

use std::sync::Arc;

use mandate_chain::{ChainId, HopId, HopRecord, Ledger, PolicyRow, PolicyStore};
use mandate_core::grants::{
    Acceptance, AccessTokenRequest, IdJagIssueRequest, IdJagRedeemRequest, IdJagResourceServer,
    IssuerVerifyError, SubjectTokenType, TrustedIssuers, UpstreamIssuer,
};
use mandate_core::{
    ChainIdKey, EntryLifetimes, GrantError, GrantPorts, GrantService, GrantSettings,
    HopRecordedHook, KeyRing, NewGate, ParticipationPorts, ParticipationService, Report,
    RevocationService,
};
use mandate_model::{Audience, ClientId, ClientKind, Clock, FixedClock, IssuerAlias, ScopeSet};
use mandate_revocation::MemoryRevocations;
use mandate_store::{
    AuditFilter, AuditLog, Client, ClientRegistry, MemoryAuditLog, MemoryClientRegistry,
    MemoryConsentStore, MemoryGates, MemoryLedger, MemoryParticipation, MemoryPolicyStore,
    MemoryReplayCache, MemorySsfStreams, Requirement,
};
use mandate_token::{
    AccessTokenClaims, Algorithm, IdJagClaims, KeySet, SigningAlgorithm, SigningKey, UnverifiedJws,
    Verified, VerifyingKey, VerifyingKeySet,
};
use serde_json::json;

const NOW: i64 = 1_900_000_000;
const MANDATE: &str = "https://mandate.example.com";
const IDP: &str = "https://idp.example.com";
const RESOURCE_AS: &str = "https://as.example.com";
const CAL: &str = "https://calendar.example.com";

/// An upstream issuer with fixed keys.
#[derive(Debug)]
struct Issuer {
    issuer: String,
    alias: IssuerAlias,
    accepts: Vec<Acceptance>,
    keys: VerifyingKeySet,
}

#[async_trait::async_trait]
impl UpstreamIssuer for Issuer {
    fn issuer(&self) -> &str {
        &self.issuer
    }
    fn alias(&self) -> &IssuerAlias {
        &self.alias
    }
    fn accepts(&self, what: Acceptance) -> bool {
        self.accepts.contains(&what)
    }
    fn subject_as_is(&self) -> bool {
        false
    }
    fn max_token_age_secs(&self) -> u32 {
        3_600
    }
    fn id_jag_reuse(&self) -> bool {
        false
    }
    async fn verify(&self, jws: &UnverifiedJws<'_>) -> Result<Verified, IssuerVerifyError> {
        jws.verify(&self.keys, &[Algorithm::Es256])
            .map_err(IssuerVerifyError::Signature)
    }
}

fn verifying(key: &SigningKey) -> VerifyingKeySet {
    VerifyingKeySet::new(vec![VerifyingKey::from_jwk(
        key.public_key().jwk(),
        &[Algorithm::Es256],
    )
    .unwrap()])
    .unwrap()
}

struct Node {
    grants: GrantService,
    clients: Arc<MemoryClientRegistry>,
    participation: Arc<ParticipationService>,
    keys: KeyRing,
    ledger: Arc<MemoryLedger>,
    audit: Arc<MemoryAuditLog>,
    revocation: RevocationService,
    assistant: Client,
}

/// One mandate node named `issuer`, trusting `issuers`, with the agent `agent` allowed
/// `calendar.read calendar.write` at the calendar (owned by a registered resource server).
async fn node(
    issuer: &str,
    agent: &str,
    clock: Arc<FixedClock>,
    issuers: Vec<Arc<dyn UpstreamIssuer>>,
    resource_servers: Vec<IdJagResourceServer>,
) -> Node {
    let keys = KeyRing::new(
        KeySet::new(
            SigningKey::generate(SigningAlgorithm::Es256).unwrap(),
            None,
            vec![],
        )
        .unwrap(),
    );
    let clients = Arc::new(MemoryClientRegistry::new());
    let assistant = client(agent, ClientKind::Agent, &[]);
    clients
        .insert_if_absent(client(agent, ClientKind::Agent, &[]))
        .await
        .unwrap();
    clients
        .insert_if_absent(client("calendar", ClientKind::ResourceServer, &[CAL]))
        .await
        .unwrap();
    // A second agent the first may hand calendar work to.
    clients
        .insert_if_absent(client("booking-tool", ClientKind::Agent, &[]))
        .await
        .unwrap();
    let row = |actor: &ClientId, audience: &str| PolicyRow {
        actor: actor.clone(),
        audience: Audience::parse(audience).unwrap(),
        scopes: ScopeSet::parse("calendar.read calendar.write").unwrap(),
        max_depth: None,
    };
    let booking = ClientId::parse("booking-tool").unwrap();
    let policies = Arc::new(MemoryPolicyStore::new());
    policies
        .seed_if_empty(vec![
            row(&assistant.id, CAL),
            row(&assistant.id, "agent:booking-tool"),
            row(&booking, CAL),
        ])
        .await
        .unwrap();
    let revocations = Arc::new(MemoryRevocations::new(clock.clone()));
    let ledger = Arc::new(MemoryLedger::new(86_400));
    let audit = Arc::new(MemoryAuditLog::new(100));
    let revocation = RevocationService::new(
        revocations.clone(),
        ledger.clone(),
        audit.clone(),
        EntryLifetimes::new(60, 300, 3_600),
    );
    let participation = Arc::new(ParticipationService::new(
        ParticipationPorts {
            participants: Arc::new(MemoryParticipation::new()),
            gates: Arc::new(MemoryGates::new()),
            clients: clients.clone(),
            streams: Arc::new(MemorySsfStreams::new()),
            audit: audit.clone(),
        },
        clock.clone(),
        "node-1".into(),
    ));
    let registry = clients.clone();
    let grants = GrantService::new(
        GrantPorts {
            clients,
            revocations,
            consents: Arc::new(MemoryConsentStore::new()),
            ledger: ledger.clone(),
            policies,
            replay: Arc::new(MemoryReplayCache::new()),
            audit: audit.clone(),
            issuers: TrustedIssuers::new(issuers),
            keys: keys.clone(),
            chain_key: Arc::new(
                ChainIdKey::from_bytes(zeroize::Zeroizing::new(vec![7; 32])).unwrap(),
            ),
            gate: participation.clone(),
        },
        GrantSettings {
            issuer: issuer.into(),
            access_token_ttl_secs: 300,
            id_jag_ttl_secs: 120,
            max_chain_depth: 4,
            clock_skew_secs: 30,
            resource_servers,
            dpop: mandate_core::grants::DpopSettings::for_endpoint(format!("{issuer}/token")),
        },
        clock,
        Arc::new(CountingIds::default()),
    );
    Node {
        grants,
        clients: registry,
        participation,
        keys,
        ledger,
        audit,
        revocation,
        assistant,
    }
}

struct World {
    clock: Arc<FixedClock>,
    idp: SigningKey,
    mandate: Node,
}

async fn world() -> World {
    let clock = Arc::new(FixedClock::at(NOW));
    let idp = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let corp: Arc<dyn UpstreamIssuer> = Arc::new(Issuer {
        issuer: IDP.into(),
        alias: IssuerAlias::parse("corp").unwrap(),
        accepts: vec![Acceptance::IdToken],
        keys: verifying(&idp),
    });
    let resource_as = IdJagResourceServer {
        issuer: RESOURCE_AS.into(),
        client_ids: [(
            ClientId::parse("assistant").unwrap(),
            "assistant-at-as".to_owned(),
        )]
        .into_iter()
        .collect(),
        resources: vec![Audience::parse(CAL).unwrap()],
        scopes: ScopeSet::parse("calendar.read").unwrap(),
    };
    let mandate = node(
        MANDATE,
        "assistant",
        clock.clone(),
        vec![corp],
        vec![resource_as],
    )
    .await;
    World {
        clock,
        idp,
        mandate,
    }
}

/// alice's ID token from the IdP, issued to the assistant (evidence 1).
fn id_token(w: &World) -> String {
    let now = w.clock.now_secs();
    w.idp
        .sign(
            "JWT",
            &json!({"iss": IDP, "sub": "alice", "aud": "assistant", "iat": now, "exp": now + 600,
                    "jti": "idt-1"}),
        )
        .unwrap()
}

/// alice's ID-JAG for the resource AS, issued to the assistant (with `dpop` as its proof).
async fn issue_id_jag(w: &World, dpop: Option<String>) -> mandate_core::grants::IssuedIdJag {
    let m = &w.mandate;
    m.grants
        .issue_id_jag(
            &m.assistant,
            IdJagIssueRequest {
                subject_token: id_token(w),
                audience: RESOURCE_AS.into(),
                resource: None,
                scope: None,
                dpop,
            },
        )
        .await
        .unwrap()
}

/// A resource AS node trusting `w`'s mandate for ID-JAGs; its agent is `assistant-at-as`.
async fn resource_as(w: &World) -> Node {
    let idp_node: Arc<dyn UpstreamIssuer> = Arc::new(Issuer {
        issuer: MANDATE.into(),
        alias: IssuerAlias::parse("enterprise").unwrap(),
        accepts: vec![Acceptance::IdJag],
        keys: VerifyingKeySet::from_jwks(w.mandate.keys.current().jwks(), &[Algorithm::Es256])
            .unwrap(),
    });
    node(
        RESOURCE_AS,
        "assistant-at-as",
        w.clock.clone(),
        vec![idp_node],
        vec![],
    )
    .await
}

fn for_calendar(subject_token: String, scope: &str) -> AccessTokenRequest {
    AccessTokenRequest {
        subject_token,
        subject_token_type: SubjectTokenType::IdToken,
        target: Audience::parse(CAL).unwrap(),
        scope: Some(ScopeSet::parse(scope).unwrap()),
        details: None,
        dpop: None,
    }
}

fn claims_of(keys: &KeyRing, token: &str) -> AccessTokenClaims {
    let jws = UnverifiedJws::parse(token).unwrap();
    keys.current().verify(&jws).unwrap().claims().unwrap()
}

async fn audit_actions(audit: &MemoryAuditLog) -> Vec<(String, String)> {
    audit
        .recent(&AuditFilter::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.detail))
        .collect()
}

#[tokio::test]
async fn an_exchange_signs_at_the_stores_clock_and_records_its_hop() {
    let w = world().await;
    let m = &w.mandate;
    let exchanged = m
        .grants
        .exchange(&m.assistant, for_calendar(id_token(&w), "calendar.read"))
        .await
        .unwrap();
    assert_eq!(exchanged.expires_in, 300);
    assert_eq!(exchanged.scope.as_deref(), Some("calendar.read"));
    let claims = claims_of(&m.keys, &exchanged.access_token);
    assert_eq!(claims.iss, MANDATE);
    assert_eq!(claims.sub, "corp|alice");
    assert_eq!(claims.aud, CAL);
    assert_eq!((claims.iat, claims.exp), (NOW, NOW + 300));
    // The id generator names the hop, and the token is that hop.
    assert_eq!(claims.jti, "hop_0");
    let hop = m.ledger.hop(&HopId("hop_0".into())).await.unwrap().unwrap();
    assert_eq!(hop.chain_id, ChainId(claims.chain_id.clone()));
    assert_eq!(hop.audience, Audience::parse(CAL).unwrap());
    assert_eq!(hop.depth, 1);
    assert!(
        audit_actions(&m.audit).await.is_empty(),
        "a granted exchange is not a refusal"
    );
}

fn calendar_report(mode: &str) -> Report {
    serde_json::from_value(json!({
        "instance": "cal-1", "kind": "sdk", "mode": mode, "audiences": [CAL]
    }))
    .unwrap()
}

#[tokio::test]
async fn a_gated_app_gets_tokens_only_once_a_verifier_follows_revocations() {
    let w = world().await;
    let m = &w.mandate;
    let gate = NewGate {
        audience: CAL.into(),
        require: Requirement::FollowsRevocations,
        dry_run: false,
    };
    m.participation.set_gate(gate, "ops").await.unwrap();
    // Silent: refused, audited, nothing recorded.
    let error = m
        .grants
        .exchange(&m.assistant, for_calendar(id_token(&w), "calendar.read"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "invalid_target", "{error}");
    assert!(
        error.to_string().contains("its participation is 'silent'"),
        "{error}"
    );
    assert!(
        !error.to_string().contains(CAL),
        "the audience is not echoed: {error}"
    );
    assert!(m
        .ledger
        .hop(&HopId("hop_0".into()))
        .await
        .unwrap()
        .is_none());
    // A verifier that follows nothing does not meet it either.
    let calendar = client("calendar", ClientKind::ResourceServer, &[CAL]);
    m.participation
        .report(&calendar, calendar_report("none"))
        .await
        .unwrap();
    let error = m
        .grants
        .exchange(&m.assistant, for_calendar(id_token(&w), "calendar.read"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("'verifies only'"), "{error}");
    // The follower starts: the same exchange passes.
    m.participation
        .report(&calendar, calendar_report("followed"))
        .await
        .unwrap();
    m.grants
        .exchange(&m.assistant, for_calendar(id_token(&w), "calendar.read"))
        .await
        .unwrap();
    let actions = audit_actions(&m.audit).await;
    let refusals: Vec<_> = actions
        .iter()
        .filter(|(action, _)| action == "exchange.refused")
        .collect();
    assert_eq!(refusals.len(), 2, "{actions:?}");
    assert!(refusals[0]
        .1
        .starts_with("invalid_target: the participation gate"));
    // Its report expires (two minutes): silent again, refused again.
    w.clock.advance(121);
    let error = m
        .grants
        .exchange(&m.assistant, for_calendar(id_token(&w), "calendar.read"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("'silent'"), "{error}");
}

#[tokio::test]
async fn a_dry_run_gate_issues_and_audits_what_it_would_refuse() {
    let w = world().await;
    let m = &w.mandate;
    let gate = NewGate {
        audience: CAL.into(),
        require: Requirement::Verifies,
        dry_run: true,
    };
    m.participation.set_gate(gate, "ops").await.unwrap();
    m.grants
        .exchange(&m.assistant, for_calendar(id_token(&w), "calendar.read"))
        .await
        .unwrap();
    let actions = audit_actions(&m.audit).await;
    let would: Vec<_> = actions
        .iter()
        .filter(|(action, _)| action == "gates.would_refuse")
        .collect();
    assert_eq!(would.len(), 1, "{actions:?}");
    assert!(would[0]
        .1
        .contains("requires a verifier; its participation is 'silent'"));
    assert!(!actions.iter().any(|(a, _)| a == "exchange.refused"));
    // A refused exchange is not also a dry-run refusal: the gate is asked only once the rest
    // allowed it.
    m.grants
        .exchange(&m.assistant, for_calendar(id_token(&w), "calendar.admin"))
        .await
        .unwrap_err();
    let actions = audit_actions(&m.audit).await;
    assert_eq!(
        actions
            .iter()
            .filter(|(a, _)| a == "gates.would_refuse")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_widening_is_refused_audited_and_records_nothing() {
    let w = world().await;
    let m = &w.mandate;
    let error = m
        .grants
        .exchange(&m.assistant, for_calendar(id_token(&w), "calendar.admin"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "invalid_scope", "{error}");
    assert!(m
        .ledger
        .hop(&HopId("hop_0".into()))
        .await
        .unwrap()
        .is_none());
    let events = audit_actions(&m.audit).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "exchange.refused");
    assert!(events[0].1.starts_with("invalid_scope: "), "{events:?}");
}

#[tokio::test]
async fn a_revoked_chain_is_not_exchanged_again() {
    let w = world().await;
    let m = &w.mandate;
    let token = id_token(&w);
    let first = m
        .grants
        .exchange(&m.assistant, for_calendar(token.clone(), "calendar.read"))
        .await
        .unwrap();
    let chain = claims_of(&m.keys, &first.access_token).chain_id;
    m.revocation
        .revoke_chain(&chain, "incident", "test")
        .await
        .unwrap();
    w.clock.advance(1);
    let error = m
        .grants
        .exchange(&m.assistant, for_calendar(token, "calendar.read"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, GrantError::InvalidRequest(d) if d.contains("revoked")),
        "{error}"
    );
    // Nor is a token of that chain taken as a subject token.
    let error = m
        .grants
        .exchange(
            &m.assistant,
            AccessTokenRequest {
                subject_token_type: SubjectTokenType::AccessToken,
                ..for_calendar(first.access_token, "calendar.read")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), "invalid_request", "{error}");
}

/// Revokes the hop's chain after the hop is written, before the second check.
#[derive(Debug)]
struct RevokeMidway(RevocationService);

#[async_trait::async_trait]
impl HopRecordedHook for RevokeMidway {
    async fn after_hop_recorded(&self, hop: &HopRecord) {
        self.0
            .revoke_chain(&hop.chain_id.0, "race", "test")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_revocation_between_the_hops_write_and_the_second_check_leaves_no_token() {
    let w = world().await;
    let m = &w.mandate;
    let grants = m
        .grants
        .clone()
        .with_hook(Arc::new(RevokeMidway(m.revocation.clone())));
    let error = grants
        .exchange(&m.assistant, for_calendar(id_token(&w), "calendar.read"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "invalid_request", "{error}");
    // The hop was recorded (nothing is issued without it) and is dead.
    assert!(m
        .ledger
        .hop(&HopId("hop_0".into()))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn an_id_jag_issued_by_one_node_is_redeemed_once_at_the_resource_as() {
    let w = world().await;
    let m = &w.mandate;
    let issued = issue_id_jag(&w, None).await;
    assert_eq!(
        (issued.expires_in, issued.scope.as_str()),
        (120, "calendar.read")
    );
    let jws = UnverifiedJws::parse(&issued.token).unwrap();
    let jag: IdJagClaims = m.keys.current().verify(&jws).unwrap().claims().unwrap();
    assert_eq!(jag.client_id.as_deref(), Some("assistant-at-as"));
    assert_eq!(jag.sub.as_deref(), Some("corp|alice"));
    // The IdP half's hop went through the chain crate and is in the ledger.
    let hop = m
        .ledger
        .hop(&HopId(jag.jti.clone().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hop.depth, 1);

    // The resource AS trusts the IdP node for ID-JAGs; its agent is `assistant-at-as`.
    let resource_as = resource_as(&w).await;
    let redeem = |resource: Option<&str>| IdJagRedeemRequest {
        assertion: issued.token.clone(),
        resource: resource.map(str::to_owned),
        scope: None,
        dpop: None,
    };
    // Another client cannot present it: its client_id names `assistant-at-as`.
    let other = client("assistant", ClientKind::Agent, &[]);
    let refused = resource_as
        .grants
        .redeem_id_jag(&other, redeem(None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "invalid_grant", "{refused}");
    // A refusal by policy does not spend it.
    let refused = resource_as
        .grants
        .redeem_id_jag(
            &resource_as.assistant,
            redeem(Some("https://files.example.com")),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "invalid_target", "{refused}");
    // Nor does a refusal by the calendar's participation gate, until its verifier reports.
    let gate = NewGate {
        audience: CAL.into(),
        require: Requirement::Verifies,
        dry_run: false,
    };
    resource_as
        .participation
        .set_gate(gate, "ops")
        .await
        .unwrap();
    let refused = resource_as
        .grants
        .redeem_id_jag(&resource_as.assistant, redeem(None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "invalid_target", "{refused}");
    assert!(
        refused.to_string().contains("participation gate"),
        "{refused}"
    );
    resource_as
        .participation
        .report(
            &client("calendar", ClientKind::ResourceServer, &[CAL]),
            calendar_report("none"),
        )
        .await
        .unwrap();
    let redeemed = resource_as
        .grants
        .redeem_id_jag(&resource_as.assistant, redeem(None))
        .await
        .unwrap();
    assert_eq!(redeemed.scope.as_deref(), Some("calendar.read"));
    let claims = claims_of(&resource_as.keys, &redeemed.access_token);
    assert_eq!(claims.iss, RESOURCE_AS);
    assert_eq!(claims.sub, "enterprise|corp|alice");
    assert_eq!(claims.aud, CAL);
    let replayed = resource_as
        .grants
        .redeem_id_jag(&resource_as.assistant, redeem(None))
        .await
        .unwrap_err();
    assert!(
        matches!(&replayed, GrantError::InvalidGrant(d) if d.contains("already been used")),
        "{replayed}"
    );
    let events = audit_actions(&resource_as.audit).await;
    assert_eq!(
        events
            .iter()
            .filter(|(action, _)| action == "id_jag_redeem.refused")
            .count(),
        4,
        "{events:?}"
    );
}

/// A DPoP proof for `MANDATE`'s token endpoint, by `key`, now.
fn proof(w: &World, key: &SigningKey, jti: &str) -> String {
    key.sign_dpop_proof(&json!({
        "jti": jti, "htm": "POST", "htu": format!("{MANDATE}/token"), "iat": w.clock.now_secs()
    }))
    .unwrap()
}

fn jkt(key: &SigningKey) -> String {
    mandate_token::thumbprint(key.public_key().jwk()).unwrap()
}

/// RFC 9449 at the token endpoint: the assistant's hand-off to the booking tool is bound to the
/// assistant's key; the booking tool cannot exchange it without a proof, and with its own proof
/// gets a token bound to its own key; the ledger records each hop's thumbprint; a replayed proof
/// and a proof for another endpoint are refused and record nothing.
#[tokio::test]
async fn every_hop_is_bound_to_the_key_of_the_agent_that_holds_it() {
    let w = world().await;
    let m = &w.mandate;
    let (a_key, b_key) = (
        SigningKey::generate(SigningAlgorithm::Es256).unwrap(),
        SigningKey::generate(SigningAlgorithm::EdDsa).unwrap(),
    );
    let mut hand_off = for_calendar(id_token(&w), "calendar.read");
    hand_off.target = Audience::parse("agent:booking-tool").unwrap();
    hand_off.dpop = Some(proof(&w, &a_key, "a-1"));
    let exchanged = m.grants.exchange(&m.assistant, hand_off).await.unwrap();
    assert!(exchanged.bound);
    let claims = claims_of(&m.keys, &exchanged.access_token);
    assert_eq!(claims.cnf.as_ref().unwrap().jkt, jkt(&a_key));
    let parent = m
        .ledger
        .hop(&HopId(claims.jti.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parent.jkt.as_deref(), Some(jkt(&a_key).as_str()));

    let booking = common::client("booking-tool", ClientKind::Agent, &[]);
    let from_hand_off = |dpop: Option<String>| AccessTokenRequest {
        subject_token: exchanged.access_token.clone(),
        subject_token_type: SubjectTokenType::AccessToken,
        target: Audience::parse(CAL).unwrap(),
        scope: Some(ScopeSet::parse("calendar.read").unwrap()),
        details: None,
        dpop,
    };
    // Never less bound than its parent.
    let refused = m
        .grants
        .exchange(&booking, from_hand_off(None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "invalid_dpop_proof", "{refused}");
    // A proof for another endpoint, or a stale one.
    let elsewhere = b_key
        .sign_dpop_proof(&json!({"jti": "b-0", "htm": "POST",
            "htu": format!("{MANDATE}/revoke"), "iat": w.clock.now_secs()}))
        .unwrap();
    let refused = m
        .grants
        .exchange(&booking, from_hand_off(Some(elsewhere)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "invalid_dpop_proof", "{refused}");
    let b_proof = proof(&w, &b_key, "b-1");
    let child = m
        .grants
        .exchange(&booking, from_hand_off(Some(b_proof.clone())))
        .await
        .unwrap();
    assert!(child.bound);
    let child_claims = claims_of(&m.keys, &child.access_token);
    assert_eq!(child_claims.cnf.unwrap().jkt, jkt(&b_key));
    let child_hop = m
        .ledger
        .hop(&HopId(child_claims.jti.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(child_hop.jkt.as_deref(), Some(jkt(&b_key).as_str()));
    assert_eq!(child_hop.parent.as_ref(), Some(&parent.id));
    // The same proof again: refused, nothing more recorded.
    let chain_before = m.ledger.chain(&parent.chain_id).await.unwrap().len();
    let replayed = m
        .grants
        .exchange(&booking, from_hand_off(Some(b_proof)))
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), "invalid_dpop_proof", "{replayed}");
    assert!(replayed.to_string().contains("used already"), "{replayed}");
    assert_eq!(
        m.ledger.chain(&parent.chain_id).await.unwrap().len(),
        chain_before
    );
    // Without DPoP nothing is bound.
    let bearer = m
        .grants
        .exchange(&m.assistant, for_calendar(id_token(&w), "calendar.read"))
        .await
        .unwrap();
    assert!(!bearer.bound);
    assert!(claims_of(&m.keys, &bearer.access_token).cnf.is_none());
}

/// PROTOCOLS.md 2.6: an ID-JAG issued with a proof carries `cnf.jkt`; the resource AS redeems
/// it only with a proof by that key (another key or none: invalid_grant, the grant unspent),
/// and binds its access token to it.
#[tokio::test]
async fn a_bound_id_jag_is_redeemed_only_by_its_key() {
    let w = world().await;
    let m = &w.mandate;
    let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let issued = issue_id_jag(&w, Some(proof(&w, &key, "i-1"))).await;
    let jws = UnverifiedJws::parse(&issued.token).unwrap();
    let jag: IdJagClaims = m.keys.current().verify(&jws).unwrap().claims().unwrap();
    assert_eq!(jag.cnf, Some(json!({ "jkt": jkt(&key) })));

    let resource_as = resource_as(&w).await;
    let at_as = |key: Option<&SigningKey>, jti: &str| IdJagRedeemRequest {
        assertion: issued.token.clone(),
        resource: None,
        scope: None,
        dpop: key.map(|k| {
            k.sign_dpop_proof(&json!({"jti": jti, "htm": "POST",
                "htu": format!("{RESOURCE_AS}/token"), "iat": w.clock.now_secs()}))
                .unwrap()
        }),
    };
    let other = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    for (presented, jti) in [(None, "r-0"), (Some(&other), "r-1")] {
        let refused = resource_as
            .grants
            .redeem_id_jag(&resource_as.assistant, at_as(presented, jti))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), "invalid_grant", "{refused}");
    }
    let redeemed = resource_as
        .grants
        .redeem_id_jag(&resource_as.assistant, at_as(Some(&key), "r-2"))
        .await
        .unwrap();
    assert!(redeemed.bound);
    let claims = claims_of(&resource_as.keys, &redeemed.access_token);
    assert_eq!(claims.cnf.unwrap().jkt, jkt(&key));
}

/// `dpop = "required"` on an agent (every request it makes) and on a resource server (every
/// token for its audiences): without a proof, `invalid_dpop_proof`; with one, a bound token.
#[tokio::test]
async fn required_dpop_refuses_bearer_tokens_for_the_agent_and_for_the_app() {
    let w = world().await;
    let m = &w.mandate;
    let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let mut strict = common::client("assistant", ClientKind::Agent, &[]);
    strict.dpop = mandate_model::DpopPolicy::Required;
    let refused = m
        .grants
        .exchange(&strict, for_calendar(id_token(&w), "calendar.read"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "invalid_dpop_proof", "{refused}");
    assert!(refused.to_string().contains("this agent"), "{refused}");
    let mut proven = for_calendar(id_token(&w), "calendar.read");
    proven.dpop = Some(proof(&w, &key, "s-1"));
    assert!(m.grants.exchange(&strict, proven).await.unwrap().bound);

    // The calendar's resource server now wants bound tokens.
    let current = m
        .clients
        .client(&ClientId::parse("calendar").unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut calendar = common::client("calendar", ClientKind::ResourceServer, &[CAL]);
    calendar.revision = current.revision;
    calendar.dpop = mandate_model::DpopPolicy::Required;
    m.clients.replace(calendar).await.unwrap();
    let refused = m
        .grants
        .exchange(&m.assistant, for_calendar(id_token(&w), "calendar.read"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "invalid_dpop_proof", "{refused}");
    assert!(refused.to_string().contains("this audience"), "{refused}");
    let mut proven = for_calendar(id_token(&w), "calendar.read");
    proven.dpop = Some(proof(&w, &key, "s-2"));
    assert!(m.grants.exchange(&m.assistant, proven).await.unwrap().bound);
}

/// At the resource AS, an app whose resource server requires DPoP gets no token from an
/// unbound ID-JAG redeemed without a proof (and the ID-JAG is not spent); with a proof it does.
#[tokio::test]
async fn a_resource_server_requiring_dpop_refuses_an_unproven_redemption() {
    let w = world().await;
    let issued = issue_id_jag(&w, None).await;
    let resource_as = resource_as(&w).await;
    let calendar_id = ClientId::parse("calendar").unwrap();
    let current = resource_as
        .clients
        .client(&calendar_id)
        .await
        .unwrap()
        .unwrap();
    let mut calendar = common::client("calendar", ClientKind::ResourceServer, &[CAL]);
    calendar.revision = current.revision;
    calendar.dpop = mandate_model::DpopPolicy::Required;
    resource_as.clients.replace(calendar).await.unwrap();
    let redeem = |dpop: Option<String>| IdJagRedeemRequest {
        assertion: issued.token.clone(),
        resource: None,
        scope: None,
        dpop,
    };
    let refused = resource_as
        .grants
        .redeem_id_jag(&resource_as.assistant, redeem(None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "invalid_dpop_proof", "{refused}");
    let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let proof = key
        .sign_dpop_proof(&json!({"jti": "rr-1", "htm": "POST",
            "htu": format!("{RESOURCE_AS}/token"), "iat": w.clock.now_secs()}))
        .unwrap();
    let redeemed = resource_as
        .grants
        .redeem_id_jag(&resource_as.assistant, redeem(Some(proof)))
        .await
        .unwrap();
    assert!(redeemed.bound);
}
