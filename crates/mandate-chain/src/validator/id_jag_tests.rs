//! `decide_id_jag`: the root hop of an ID-JAG redemption (DESIGN.md section 7).

use super::*;
use crate::policy::row;

const ISSUER: &str = "https://mandate.example.com";
const IDP: &str = "https://idp.example.com";
const CAL: &str = "https://calendar.example.com";
const MAIL: &str = "https://mail.example.com";
const NOW: i64 = 1_800_000_000;

fn id(s: &str) -> ClientId {
    ClientId::parse(s).unwrap()
}

fn scopes(s: &str) -> ScopeSet {
    ScopeSet::parse(s).unwrap()
}

fn policy() -> Policy {
    Policy::new(vec![
        row("assistant", CAL, "cal.read cal.write", None),
        row("assistant", "agent:booking", "cal.read", None),
        row("shallow", CAL, "cal.read", Some(0)),
    ])
}

fn context() -> ExchangeContext<'static> {
    ExchangeContext {
        issuer: ISSUER,
        now: NOW,
        ttl_secs: 300,
        max_chain_depth: 5,
        new_hop_id: HopId("hop_idjag".into()),
        root_chain_id: ChainId("chn_idjag".into()),
    }
}

struct Jag {
    scope: Option<ScopeSet>,
    exp: i64,
    act: Option<Value>,
}

fn jag(scope: Option<&str>) -> Jag {
    Jag {
        scope: scope.map(scopes),
        exp: NOW + 600,
        act: None,
    }
}

fn redeem(
    policy: &Policy,
    actor: &str,
    target: &str,
    known: bool,
    scope: Option<&str>,
    jag: &Jag,
) -> Result<Decision, Refusal> {
    let alias = IssuerAlias::parse("idp").unwrap();
    let actor = id(actor);
    let target = Audience::parse(target).unwrap();
    let scope = scope.map(scopes);
    let grant = IdJagGrant {
        issuer: IDP,
        subject: Subject::from_upstream(&alias, "alice", false).unwrap(),
        jti: "jag-1",
        expires_at: jag.exp,
        scope: jag.scope.as_ref(),
        act: jag.act.as_ref(),
    };
    let request = ExchangeRequest {
        actor: &actor,
        target: &target,
        target_known: known,
        scope: scope.as_ref(),
        details: None,
    };
    decide_id_jag(policy, &request, &grant, &context())
}

#[test]
fn the_root_hop_records_the_id_jag_and_intersects_its_scope_with_policy() {
    let decision = redeem(
        &policy(),
        "assistant",
        CAL,
        true,
        None,
        &jag(Some("cal.read cal.admin")),
    )
    .unwrap();
    let claims = &decision.claims;
    assert_eq!(claims.scope.as_deref(), Some("cal.read"));
    assert_eq!(claims.sub, "idp|alice");
    assert_eq!(claims.aud, CAL);
    assert_eq!(claims.client_id, "assistant");
    assert_eq!(claims.act.actors(5), ["assistant"]);
    assert!(claims.act.act.is_none());
    assert_eq!(claims.chain_id, "chn_idjag");
    assert!(claims.ancestors.is_empty());
    assert_eq!(claims.exp, NOW + 300);
    let hop = &decision.hop;
    assert_eq!(hop.depth, 1);
    assert_eq!(hop.parent, None);
    assert_eq!(hop.evidence.kind, EvidenceKind::IdJag);
    let reference: Value = serde_json::from_str(&hop.evidence.reference).unwrap();
    assert_eq!(reference, serde_json::json!({"iss": IDP, "jti": "jag-1"}));
    assert_eq!(
        hop.upstream,
        Some(UpstreamGrant {
            issuer: IDP.into(),
            grant_id: "jag-1".into(),
            expires_at: NOW + 600,
        })
    );
}

#[test]
fn without_a_scope_claim_the_policy_row_bounds_the_grant() {
    let decision = redeem(&policy(), "assistant", CAL, true, None, &jag(None)).unwrap();
    assert_eq!(decision.claims.scope.as_deref(), Some("cal.read cal.write"));
}

#[test]
fn the_request_scope_narrows_and_cannot_widen() {
    let granted = jag(Some("cal.read cal.write"));
    let narrowed = redeem(
        &policy(),
        "assistant",
        CAL,
        true,
        Some("cal.write"),
        &granted,
    )
    .unwrap();
    assert_eq!(narrowed.claims.scope.as_deref(), Some("cal.write"));
    let only_read = jag(Some("cal.read"));
    assert_eq!(
        redeem(
            &policy(),
            "assistant",
            CAL,
            true,
            Some("cal.write"),
            &only_read
        )
        .unwrap_err(),
        Refusal::ScopeWidening
    );
    assert_eq!(
        redeem(
            &policy(),
            "assistant",
            CAL,
            true,
            None,
            &jag(Some("cal.admin"))
        )
        .unwrap_err(),
        Refusal::EmptyAuthority
    );
    assert_eq!(Refusal::ScopeWidening.code(), RefusalCode::InvalidScope);
    assert_eq!(Refusal::EmptyAuthority.code(), RefusalCode::InvalidScope);
}

#[test]
fn deny_by_default_and_only_registered_apps() {
    assert_eq!(
        redeem(&policy(), "assistant", MAIL, true, None, &jag(None)).unwrap_err(),
        Refusal::NoPolicy
    );
    assert_eq!(
        redeem(&policy(), "assistant", CAL, false, None, &jag(None)).unwrap_err(),
        Refusal::UnknownAudience
    );
    assert_eq!(
        redeem(
            &policy(),
            "assistant",
            "agent:booking",
            true,
            None,
            &jag(None)
        )
        .unwrap_err(),
        Refusal::IdJagForAgent
    );
    assert_eq!(Refusal::IdJagForAgent.code(), RefusalCode::InvalidTarget);
    assert_eq!(
        redeem(&policy(), "shallow", CAL, true, None, &jag(None)).unwrap_err(),
        Refusal::TooDeep
    );
}

#[test]
fn the_token_never_outlives_the_id_jag() {
    let mut short = jag(None);
    short.exp = NOW + 42;
    let decision = redeem(&policy(), "assistant", CAL, true, None, &short).unwrap();
    assert_eq!(decision.claims.exp, NOW + 42);
    // Accepted by the caller within the clock skew after exp: the token expires within the second.
    short.exp = NOW - 30;
    let decision = redeem(&policy(), "assistant", CAL, true, None, &short).unwrap();
    assert_eq!(decision.claims.exp, NOW + 1);
    assert_eq!(decision.hop.upstream.unwrap().expires_at, NOW - 30);
}

#[test]
fn a_foreign_act_is_kept_in_the_ledger_only() {
    let mut with_act = jag(None);
    with_act.act = Some(serde_json::json!({"sub": "idp-agent", "act": {"sub": "someone"}}));
    let decision = redeem(&policy(), "assistant", CAL, true, None, &with_act).unwrap();
    assert_eq!(decision.claims.act.actors(5), ["assistant"]);
    assert!(decision.claims.act.act.is_none());
    assert_eq!(decision.hop.actors, vec![id("assistant")]);
    let reference: Value = serde_json::from_str(&decision.hop.evidence.reference).unwrap();
    assert_eq!(reference["act"]["sub"], "idp-agent");
    // The grant is still only what policy allows the client.
    assert_eq!(decision.claims.scope.as_deref(), Some("cal.read cal.write"));
}

// `decide_id_jag_issuance`: the IdP half's root hop.

fn issuance<'a>(
    actor: &'a ClientId,
    subject: &'a Subject,
    audience: &'a Audience,
    scopes: &'a ScopeSet,
    id_token_exp: i64,
) -> IdJagIssuance<'a> {
    IdJagIssuance {
        actor,
        subject,
        issued_to: "assistant-at-idp".into(),
        audience,
        scopes,
        upstream: UpstreamGrant {
            issuer: IDP.into(),
            grant_id: "sha256:abc".into(),
            expires_at: id_token_exp,
        },
    }
}

#[test]
fn an_issued_id_jag_is_a_root_hop_that_never_outlives_its_id_token() {
    let (actor, subject) = (id("assistant"), Subject::parse("corp|alice").unwrap());
    let (audience, granted) = (Audience::parse(CAL).unwrap(), scopes("cal.read"));
    let long = issuance(&actor, &subject, &audience, &granted, NOW + 3_600);
    let hop = decide_id_jag_issuance(&long, &context()).unwrap();
    assert_eq!(hop.depth, 1);
    assert_eq!(hop.actors, std::slice::from_ref(&actor));
    assert_eq!(hop.evidence.kind, EvidenceKind::UpstreamAudience);
    assert_eq!(hop.evidence.reference, "assistant-at-idp");
    assert_eq!(hop.authority.scopes(CAL), Some(&granted));
    assert_eq!(hop.expires_at, NOW + context().ttl_secs);
    assert_eq!(hop.upstream.as_ref().unwrap().grant_id, "sha256:abc");
    // A short ID token bounds the ID-JAG; one that expires now gives nothing.
    let short = issuance(&actor, &subject, &audience, &granted, NOW + 10);
    assert_eq!(
        decide_id_jag_issuance(&short, &context())
            .unwrap()
            .expires_at,
        NOW + 10
    );
    let spent = issuance(&actor, &subject, &audience, &granted, NOW);
    assert_eq!(
        decide_id_jag_issuance(&spent, &context()),
        Err(Refusal::Expired)
    );
    // Nothing granted, or an agent as the audience: refused.
    let none = ScopeSet::new();
    let empty = issuance(&actor, &subject, &audience, &none, NOW + 3_600);
    assert_eq!(
        decide_id_jag_issuance(&empty, &context()),
        Err(Refusal::EmptyAuthority)
    );
    let agent = Audience::parse("agent:booking").unwrap();
    let hand_off = issuance(&actor, &subject, &agent, &granted, NOW + 3_600);
    assert_eq!(
        decide_id_jag_issuance(&hand_off, &context()),
        Err(Refusal::IdJagForAgent)
    );
}
