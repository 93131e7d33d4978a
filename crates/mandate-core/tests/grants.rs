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
    let policies = Arc::new(MemoryPolicyStore::new());
    policies
        .seed_if_empty(vec![PolicyRow {
            actor: assistant.id.clone(),
            audience: Audience::parse(CAL).unwrap(),
            scopes: ScopeSet::parse("calendar.read calendar.write").unwrap(),
            max_depth: None,
        }])
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
        },
        clock,
        Arc::new(CountingIds::default()),
    );
    Node {
        grants,
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

fn for_calendar(subject_token: String, scope: &str) -> AccessTokenRequest {
    AccessTokenRequest {
        subject_token,
        subject_token_type: SubjectTokenType::IdToken,
        target: Audience::parse(CAL).unwrap(),
        scope: Some(ScopeSet::parse(scope).unwrap()),
        details: None,
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
    let issued = m
        .grants
        .issue_id_jag(
            &m.assistant,
            IdJagIssueRequest {
                subject_token: id_token(&w),
                audience: RESOURCE_AS.into(),
                resource: None,
                scope: None,
            },
        )
        .await
        .unwrap();
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
    let idp_node: Arc<dyn UpstreamIssuer> = Arc::new(Issuer {
        issuer: MANDATE.into(),
        alias: IssuerAlias::parse("enterprise").unwrap(),
        accepts: vec![Acceptance::IdJag],
        keys: VerifyingKeySet::from_jwks(m.keys.current().jwks(), &[Algorithm::Es256]).unwrap(),
    });
    let resource_as = node(
        RESOURCE_AS,
        "assistant-at-as",
        w.clock.clone(),
        vec![idp_node],
        vec![],
    )
    .await;
    let redeem = |resource: Option<&str>| IdJagRedeemRequest {
        assertion: issued.token.clone(),
        resource: resource.map(str::to_owned),
        scope: None,
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
