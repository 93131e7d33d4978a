use proptest::prelude::*;

use super::*;
use crate::policy::row;

const ISSUER: &str = "https://mandate.example.com";
const CORP: &str = "https://corp.example.com";
const CAL: &str = "https://calendar.example.com";
const MAIL: &str = "https://mail.example.com";
const NOW: i64 = 1_800_000_000;

fn id(s: &str) -> ClientId {
    ClientId::parse(s).unwrap()
}

fn aud(s: &str) -> Audience {
    Audience::parse(s).unwrap()
}

fn scopes(s: &str) -> ScopeSet {
    ScopeSet::parse(s).unwrap()
}

fn policy() -> Policy {
    Policy::new(vec![
        row("assistant", CAL, "cal.read cal.write", None),
        row("assistant", MAIL, "mail.read", None),
        row(
            "assistant",
            "agent:booking",
            "cal.read cal.write mail.read",
            None,
        ),
        row("booking", CAL, "cal.read cal.write", None),
        row("booking", "agent:helper", "cal.read", None),
        row("helper", CAL, "cal.read", None),
        row("helper", "agent:assistant", "cal.read", None),
    ])
}

fn alias() -> IssuerAlias {
    IssuerAlias::parse("corp").unwrap()
}

struct Upstream {
    aud: Vec<String>,
    azp: Option<String>,
    may_act: Option<Value>,
    exp: i64,
    consents: Vec<ConsentGrant>,
}

fn issued_to(actor: &str) -> Upstream {
    Upstream {
        aud: vec![actor.into()],
        azp: None,
        may_act: None,
        exp: NOW + 3600,
        consents: vec![],
    }
}

fn context(hop: &str) -> ExchangeContext<'static> {
    ExchangeContext {
        issuer: ISSUER,
        now: NOW,
        ttl_secs: 300,
        max_chain_depth: 5,
        new_hop_id: HopId(hop.into()),
        root_chain_id: ChainId("chn_test".into()),
    }
}

fn root(
    policy: &Policy,
    actor: &str,
    target: &str,
    scope: Option<&str>,
    up: &Upstream,
) -> Result<Decision, Refusal> {
    let alias = alias();
    let actor = id(actor);
    let target = aud(target);
    let scope = scope.map(scopes);
    let subject = SubjectGrant::Upstream(UpstreamSubject {
        issuer: CORP,
        alias: &alias,
        subject: Subject::from_upstream(&alias, "alice", false).unwrap(),
        aud: &up.aud,
        azp: up.azp.as_deref(),
        client_id: None,
        may_act: up.may_act.as_ref(),
        grant_id: "grant-1".into(),
        expires_at: up.exp,
        actor_upstream_ids: vec![actor.to_string()],
        consents: &up.consents,
    });
    let request = ExchangeRequest {
        actor: &actor,
        target: &target,
        target_known: true,
        scope: scope.as_ref(),
        details: None,
    };
    decide(policy, &request, &subject, &context("hop_root"))
}

fn child(
    policy: &Policy,
    parent: &Decision,
    actor: &str,
    target: &str,
    scope: Option<&str>,
    hop: &str,
) -> Result<Decision, Refusal> {
    let actor = id(actor);
    let target = aud(target);
    let scope = scope.map(scopes);
    let subject = SubjectGrant::Mandate(MandateSubject {
        claims: &parent.claims,
        hop: Some(&parent.hop),
    });
    let request = ExchangeRequest {
        actor: &actor,
        target: &target,
        target_known: true,
        scope: scope.as_ref(),
        details: None,
    };
    decide(policy, &request, &subject, &context(hop))
}

#[test]
fn a_root_app_token_gets_what_policy_allows() {
    let decision = root(&policy(), "assistant", CAL, None, &issued_to("assistant")).unwrap();
    assert_eq!(decision.claims.scope.as_deref(), Some("cal.read cal.write"));
    assert_eq!(decision.claims.sub, "corp|alice");
    assert_eq!(decision.claims.act.actors(5), ["assistant"]);
    assert_eq!(decision.claims.exp, NOW + 300);
    assert_eq!(decision.hop.depth, 1);
    assert_eq!(decision.hop.evidence.kind, EvidenceKind::UpstreamAudience);
    assert!(decision.claims.ancestors.is_empty());
}

#[test]
fn requested_scope_narrows_and_cannot_widen() {
    let up = issued_to("assistant");
    let narrowed = root(&policy(), "assistant", CAL, Some("cal.read"), &up).unwrap();
    assert_eq!(narrowed.claims.scope.as_deref(), Some("cal.read"));
    assert_eq!(
        root(&policy(), "assistant", CAL, Some("cal.read cal.admin"), &up).unwrap_err(),
        Refusal::ScopeWidening
    );
}

#[test]
fn deny_by_default() {
    let up = issued_to("booking");
    assert_eq!(
        root(&policy(), "booking", MAIL, None, &up).unwrap_err(),
        Refusal::NoPolicy
    );
    assert_eq!(Refusal::NoPolicy.code(), RefusalCode::InvalidTarget);
}

#[test]
fn the_token_must_name_the_presenter() {
    let up = issued_to("someone-else");
    assert_eq!(
        root(&policy(), "assistant", CAL, None, &up).unwrap_err(),
        Refusal::NotNamedBySubjectToken
    );
    // Several audiences: azp decides.
    let mut up = issued_to("assistant");
    up.aud.push("other".into());
    assert_eq!(
        root(&policy(), "assistant", CAL, None, &up).unwrap_err(),
        Refusal::NotNamedBySubjectToken
    );
    up.azp = Some("assistant".into());
    assert!(root(&policy(), "assistant", CAL, None, &up).is_ok());
}

#[test]
fn may_act_names_the_actor_or_refuses() {
    let mut up = issued_to("someone-else");
    up.may_act = Some(serde_json::json!({"sub": "assistant", "iss": CORP}));
    let decision = root(&policy(), "assistant", CAL, None, &up).unwrap();
    assert_eq!(decision.hop.evidence.kind, EvidenceKind::MayAct);
    let mut up = issued_to("assistant");
    up.may_act = Some(serde_json::json!({"sub": "mallory"}));
    assert_eq!(
        root(&policy(), "assistant", CAL, None, &up).unwrap_err(),
        Refusal::MayActNamesAnother
    );
    up.may_act = Some(serde_json::json!({"sub": "assistant", "iss": "https://evil.example.com"}));
    assert_eq!(
        root(&policy(), "assistant", CAL, None, &up).unwrap_err(),
        Refusal::MayActNamesAnother
    );
}

fn consent(actor: &str, audience: &str, s: &str, expires_at: i64) -> ConsentGrant {
    ConsentGrant {
        id: format!("cns_{actor}_{s}"),
        subject: Subject::parse("corp|alice").unwrap(),
        actor: id(actor),
        audience: aud(audience),
        scopes: scopes(s),
        expires_at,
    }
}

#[test]
fn a_consent_grant_is_evidence_and_narrows() {
    let mut up = issued_to(ISSUER);
    up.azp = Some("assistant".into());
    assert_eq!(
        root(&policy(), "assistant", CAL, None, &up).unwrap_err(),
        Refusal::NoConsent
    );
    up.consents = vec![consent("assistant", CAL, "cal.read", NOW + 10)];
    let decision = root(&policy(), "assistant", CAL, None, &up).unwrap();
    assert_eq!(decision.claims.scope.as_deref(), Some("cal.read"));
    assert_eq!(decision.hop.evidence.kind, EvidenceKind::ConsentGrant);
    assert_eq!(decision.hop.evidence.reference, "cns_assistant_cal.read");
    up.consents = vec![consent("assistant", CAL, "cal.read", NOW - 1)];
    assert_eq!(
        root(&policy(), "assistant", CAL, None, &up).unwrap_err(),
        Refusal::NoConsent
    );
}

#[test]
fn a_hand_off_passes_what_the_delegator_could_obtain() {
    let handoff = root(
        &policy(),
        "assistant",
        "agent:booking",
        None,
        &issued_to("assistant"),
    )
    .unwrap();
    let details = handoff.claims.authorization_details.clone().unwrap();
    let authority = Authority::from_details(&details).unwrap();
    assert_eq!(authority.scopes(CAL), Some(&scopes("cal.read cal.write")));
    assert_eq!(authority.scopes(MAIL), Some(&scopes("mail.read")));
    assert!(handoff.claims.scope.is_none());
    // The booking tool exchanges it for a calendar token.
    let app = child(
        &policy(),
        &handoff,
        "booking",
        CAL,
        Some("cal.read"),
        "hop_child",
    )
    .unwrap();
    assert_eq!(app.claims.act.actors(5), ["booking", "assistant"]);
    assert_eq!(app.claims.ancestors, ["hop_root"]);
    assert_eq!(app.claims.chain_id, "chn_test");
    assert_eq!(app.hop.depth, 2);
    assert!(app.claims.exp <= handoff.claims.exp);
    // Mail is in the hand-off, but the booking tool has no mail row.
    assert_eq!(
        child(&policy(), &handoff, "booking", MAIL, None, "hop_x").unwrap_err(),
        Refusal::NoPolicy
    );
}

#[test]
fn a_narrow_hand_off_bounds_the_next_hop() {
    let handoff = root(
        &policy(),
        "assistant",
        "agent:booking",
        Some("cal.read"),
        &issued_to("assistant"),
    )
    .unwrap();
    let err = child(
        &policy(),
        &handoff,
        "booking",
        CAL,
        Some("cal.write"),
        "hop_x",
    )
    .unwrap_err();
    assert_eq!(err, Refusal::ScopeWidening);
    let app = child(&policy(), &handoff, "booking", CAL, None, "hop_x").unwrap();
    assert_eq!(app.claims.scope.as_deref(), Some("cal.read"));
}

#[test]
fn app_tokens_and_foreign_hand_offs_are_not_exchangeable() {
    let app = root(&policy(), "assistant", CAL, None, &issued_to("assistant")).unwrap();
    assert_eq!(
        child(&policy(), &app, "booking", CAL, None, "hop_x").unwrap_err(),
        Refusal::AppTokenReexchanged
    );
    assert_eq!(
        child(&policy(), &app, "assistant", CAL, None, "hop_x").unwrap_err(),
        Refusal::AppTokenReexchanged
    );
    let handoff = root(
        &policy(),
        "assistant",
        "agent:booking",
        None,
        &issued_to("assistant"),
    )
    .unwrap();
    assert_eq!(
        child(&policy(), &handoff, "helper", CAL, None, "hop_x").unwrap_err(),
        Refusal::NotNamedBySubjectToken
    );
}

#[test]
fn an_agent_appears_once() {
    let h1 = root(
        &policy(),
        "assistant",
        "agent:booking",
        None,
        &issued_to("assistant"),
    )
    .unwrap();
    let h2 = child(&policy(), &h1, "booking", "agent:helper", None, "hop_2").unwrap();
    // helper handing back to the assistant would put it in the chain twice.
    assert_eq!(
        child(&policy(), &h2, "helper", "agent:assistant", None, "hop_3").unwrap_err(),
        Refusal::AgentTwice
    );
    // And a hand-off to oneself.
    let mut p = policy().rows().to_vec();
    p.push(row("assistant", "agent:assistant", "cal.read", None));
    assert_eq!(
        root(
            &Policy::new(p),
            "assistant",
            "agent:assistant",
            None,
            &issued_to("assistant")
        )
        .unwrap_err(),
        Refusal::AgentTwice
    );
}

#[test]
fn depth_respects_the_smallest_max_depth_on_the_path() {
    let mut rows = policy().rows().to_vec();
    rows.retain(|r| !(r.actor.as_str() == "assistant" && r.audience.agent().is_some()));
    rows.push(row("assistant", "agent:booking", "cal.read", Some(1)));
    let tight = Policy::new(rows);
    let handoff = root(
        &tight,
        "assistant",
        "agent:booking",
        None,
        &issued_to("assistant"),
    )
    .unwrap();
    assert_eq!(handoff.hop.depth_limit, 1);
    assert_eq!(
        child(&tight, &handoff, "booking", CAL, None, "hop_x").unwrap_err(),
        Refusal::TooDeep
    );
}

#[test]
fn the_parent_must_be_recorded_as_presented() {
    let handoff = root(
        &policy(),
        "assistant",
        "agent:booking",
        None,
        &issued_to("assistant"),
    )
    .unwrap();
    let actor = id("booking");
    let target = aud(CAL);
    let request = ExchangeRequest {
        actor: &actor,
        target: &target,
        target_known: true,
        scope: None,
        details: None,
    };
    let unknown = SubjectGrant::Mandate(MandateSubject {
        claims: &handoff.claims,
        hop: None,
    });
    assert_eq!(
        decide(&policy(), &request, &unknown, &context("h")).unwrap_err(),
        Refusal::UnknownParentHop
    );
    let mut other = handoff.hop.clone();
    other.expires_at += 1000;
    let mismatched = SubjectGrant::Mandate(MandateSubject {
        claims: &handoff.claims,
        hop: Some(&other),
    });
    assert_eq!(
        decide(&policy(), &request, &mismatched, &context("h")).unwrap_err(),
        Refusal::UnknownParentHop
    );
}

#[test]
fn lifetime_never_exceeds_the_parent() {
    let mut up = issued_to("assistant");
    up.exp = NOW + 30;
    let decision = root(&policy(), "assistant", CAL, None, &up).unwrap();
    assert_eq!(decision.claims.exp, NOW + 30);
    up.exp = NOW;
    assert_eq!(
        root(&policy(), "assistant", CAL, None, &up).unwrap_err(),
        Refusal::Expired
    );
}

#[test]
fn unknown_targets_are_invalid_target() {
    let alias = alias();
    let actor = id("assistant");
    let target = aud("https://unknown.example.com");
    let up = issued_to("assistant");
    let subject = SubjectGrant::Upstream(UpstreamSubject {
        issuer: CORP,
        alias: &alias,
        subject: Subject::from_upstream(&alias, "alice", false).unwrap(),
        aud: &up.aud,
        azp: None,
        client_id: None,
        may_act: None,
        grant_id: "g".into(),
        expires_at: up.exp,
        actor_upstream_ids: vec!["assistant".into()],
        consents: &[],
    });
    let request = ExchangeRequest {
        actor: &actor,
        target: &target,
        target_known: false,
        scope: None,
        details: None,
    };
    let err = decide(&policy(), &request, &subject, &context("h")).unwrap_err();
    assert_eq!(err, Refusal::UnknownAudience);
    assert_eq!(err.code(), RefusalCode::InvalidTarget);
}

// Property tests over random policies and random chains.

const AGENTS: [&str; 4] = ["a0", "a1", "a2", "a3"];
const APPS: [&str; 2] = ["https://x.example.com", "https://y.example.com"];
const SCOPES: [&str; 3] = ["s0", "s1", "s2"];

fn arb_scopes() -> impl Strategy<Value = ScopeSet> {
    proptest::sample::subsequence(SCOPES.to_vec(), 0..=3)
        .prop_map(|v| ScopeSet::from_tokens(v).unwrap())
}

fn arb_target() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(APPS.to_vec()).prop_map(str::to_owned),
        proptest::sample::select(AGENTS.to_vec()).prop_map(|a| format!("agent:{a}")),
    ]
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    proptest::collection::vec(
        (
            proptest::sample::select(AGENTS.to_vec()),
            arb_target(),
            arb_scopes(),
            proptest::option::of(1u32..4),
        ),
        0..14,
    )
    .prop_map(|rows| {
        Policy::new(
            rows.into_iter()
                .filter(|(_, _, s, _)| !s.is_empty())
                .map(|(actor, target, scopes, max_depth)| PolicyRow {
                    actor: id(actor),
                    audience: aud(&target),
                    scopes,
                    max_depth,
                })
                .collect(),
        )
    })
}

/// One step: (actor, target, optional scope).
fn arb_steps() -> impl Strategy<Value = Vec<(&'static str, String, Option<ScopeSet>)>> {
    proptest::collection::vec(
        (
            proptest::sample::select(AGENTS.to_vec()),
            arb_target(),
            proptest::option::of(arb_scopes().prop_filter("non-empty", |s| !s.is_empty())),
        ),
        1..7,
    )
}

fn policy_allows(policy: &Policy, actor: &ClientId, authority: &Authority) -> bool {
    authority.pairs().all(|(app, scopes)| {
        policy
            .row(actor, &aud(app))
            .is_some_and(|row| scopes.is_subset(&row.scopes))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every issued hop: authority ⊆ parent's (or the root's policy), ⊆ the actor's app rows,
    /// depth within bounds, lifetime within the parent's, the actor named by its evidence.
    #[test]
    fn chains_only_narrow(policy in arb_policy(), steps in arb_steps(), first_aud in proptest::sample::select(AGENTS.to_vec())) {
        let mut current: Option<Decision> = None;
        for (n, (actor_name, target_name, scope)) in steps.into_iter().enumerate() {
            let actor = id(actor_name);
            let target = aud(&target_name);
            let hop_id = format!("hop_{n}");
            let result = match &current {
                None => {
                    let up = issued_to(first_aud);
                    let alias = alias();
                    let subject = SubjectGrant::Upstream(UpstreamSubject {
                        issuer: CORP, alias: &alias,
                        subject: Subject::from_upstream(&alias, "alice", false).unwrap(),
                        aud: &up.aud, azp: None, client_id: None, may_act: None,
                        grant_id: "g".into(), expires_at: up.exp,
                        actor_upstream_ids: vec![actor.to_string()], consents: &[],
                    });
                    let request = ExchangeRequest { actor: &actor, target: &target, target_known: true, scope: scope.as_ref(), details: None };
                    let result = decide(&policy, &request, &subject, &context(&hop_id));
                    // No evidence, no token: the root token must have been issued to the actor.
                    if actor_name != first_aud { prop_assert!(result.is_err()); }
                    result
                }
                Some(parent) => {
                    let subject = SubjectGrant::Mandate(MandateSubject { claims: &parent.claims, hop: Some(&parent.hop) });
                    let request = ExchangeRequest { actor: &actor, target: &target, target_known: true, scope: scope.as_ref(), details: None };
                    let result = decide(&policy, &request, &subject, &context(&hop_id));
                    if parent.claims.aud != format!("agent:{actor_name}") { prop_assert!(result.is_err()); }
                    if let Ok(decision) = &result {
                        prop_assert!(decision.hop.authority.is_subset(&parent.hop.authority));
                        prop_assert!(decision.claims.exp <= parent.claims.exp);
                        prop_assert_eq!(decision.hop.depth, parent.hop.depth + 1);
                        prop_assert!(!parent.hop.actors.contains(&actor));
                    }
                    result
                }
            };
            if let Ok(decision) = result {
                prop_assert!(policy.row(&actor, &target).is_some());
                // App tokens and hand-offs alike carry only what the actor could obtain itself.
                prop_assert!(policy_allows(&policy, &actor, &decision.hop.authority));
                prop_assert!(!decision.hop.authority.is_empty());
                prop_assert!(decision.hop.depth <= 5);
                prop_assert!(decision.hop.depth <= decision.hop.depth_limit);
                prop_assert_eq!(decision.claims.act.depth(10), decision.claims.ancestors.len() + 1);
                if let Some(s) = &scope {
                    if target.agent().is_none() {
                        prop_assert_eq!(decision.claims.scope.clone(), Some(s.to_string()));
                    }
                }
                current = Some(decision);
            }
        }
    }
}
