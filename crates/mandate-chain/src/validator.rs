//! `decide`: DESIGN.md section 5, rule by rule.

use mandate_model::{Audience, ClientId, IssuerAlias, ScopeSet, Subject};
use mandate_token::{AccessTokenClaims, Act};
use serde_json::Value;

use crate::{
    Authority, ChainId, ConsentGrant, Evidence, EvidenceKind, HopId, HopRecord, Policy, PolicyRow,
    UpstreamGrant,
};

/// Why an exchange is refused. Each maps to the code of DESIGN.md section 5's refusal table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An app token is spent at its app, never exchanged again.
    #[error("an app token cannot be exchanged; go back to the grant")]
    AppTokenReexchanged,
    /// The subject token was not issued to, or handed to, the presenting agent.
    #[error("the subject token does not name this client")]
    NotNamedBySubjectToken,
    /// `may_act` names another party.
    #[error("the subject token's may_act names another actor")]
    MayActNamesAnother,
    /// The consent evidence does not cover this target.
    #[error("no consent grant covers this target")]
    NoConsent,
    /// The parent hop is not in the ledger, or differs from the token.
    #[error("the subject token's hop is not recorded")]
    UnknownParentHop,
    /// The token's claims contradict themselves (act depth vs ancestors).
    #[error("the subject token's delegation chain is malformed")]
    MalformedChain,
    /// The agent already appears in the chain.
    #[error("an agent may appear only once in a delegation chain")]
    AgentTwice,
    /// Depth over `max_chain_depth` or a row's `max_depth`.
    #[error("the delegation chain would be too deep")]
    TooDeep,
    /// Nothing of the lifetime is left.
    #[error("the subject token has expired")]
    Expired,
    /// Both `scope` and `authorization_details` were sent.
    #[error("send scope or authorization_details, not both")]
    AmbiguousSelection,
    /// The audience is neither a registered app nor a registered agent.
    #[error("unknown audience")]
    UnknownAudience,
    /// No policy row for (actor, audience).
    #[error("no policy allows this client this audience")]
    NoPolicy,
    /// The target pair is not in the parent's authority.
    #[error("the audience is outside the authority delegated to this client")]
    OutsideParent,
    /// A requested scope is beyond the hop's authority.
    #[error("the requested scope exceeds the authority available")]
    ScopeWidening,
    /// Nothing would be left.
    #[error("no authority would remain for this request")]
    EmptyAuthority,
    /// An ID-JAG is redeemed for a token for an app, never for a hand-off to an agent.
    #[error("an ID-JAG is redeemed for an app, not for a hand-off")]
    IdJagForAgent,
}

/// The OAuth error code of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// `invalid_request`.
    InvalidRequest,
    /// `invalid_target`.
    InvalidTarget,
    /// `invalid_scope`.
    InvalidScope,
    /// `invalid_grant`: an ID-JAG redemption's refused grant (RFC 7523 §3.1).
    InvalidGrant,
}

impl RefusalCode {
    /// The code as it appears in an error response.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidGrant => "invalid_grant",
        }
    }
}

/// The grant a decision was asked for: the error codes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// RFC 8693 token exchange (also the IdP half of ID-JAG, which is one).
    TokenExchange,
    /// RFC 7523 jwt-bearer: the redemption of an ID-JAG.
    JwtBearer,
}

impl Refusal {
    /// The code DESIGN.md section 5 assigns.
    pub fn code(&self) -> RefusalCode {
        match self {
            Refusal::UnknownAudience
            | Refusal::NoPolicy
            | Refusal::OutsideParent
            | Refusal::IdJagForAgent => RefusalCode::InvalidTarget,
            Refusal::ScopeWidening | Refusal::EmptyAuthority => RefusalCode::InvalidScope,
            _ => RefusalCode::InvalidRequest,
        }
    }

    /// The code for a refusal of `grant`: what [`code`](Self::code) assigns, except that a
    /// jwt-bearer grant refused for any request-level reason is `invalid_grant` (RFC 7523 §3.1).
    /// The one mapping from refusals to OAuth codes: `/token` and the explain endpoint use it.
    pub fn code_for(&self, grant: GrantKind) -> RefusalCode {
        match (grant, self.code()) {
            (GrantKind::JwtBearer, RefusalCode::InvalidRequest) => RefusalCode::InvalidGrant,
            (_, code) => code,
        }
    }
}

impl Refusal {
    /// The rule's name, as the admin API's explain answers it (`rule`).
    pub fn rule(&self) -> &'static str {
        match self {
            Refusal::AppTokenReexchanged => "app_token_reexchanged",
            Refusal::NotNamedBySubjectToken => "not_named_by_subject_token",
            Refusal::MayActNamesAnother => "may_act_names_another",
            Refusal::NoConsent => "no_consent",
            Refusal::UnknownParentHop => "unknown_parent_hop",
            Refusal::MalformedChain => "malformed_chain",
            Refusal::AgentTwice => "agent_twice",
            Refusal::TooDeep => "too_deep",
            Refusal::Expired => "expired",
            Refusal::AmbiguousSelection => "ambiguous_selection",
            Refusal::UnknownAudience => "unknown_audience",
            Refusal::NoPolicy => "no_policy",
            Refusal::OutsideParent => "outside_parent",
            Refusal::ScopeWidening => "scope_widening",
            Refusal::EmptyAuthority => "empty_authority",
            Refusal::IdJagForAgent => "id_jag_for_agent",
        }
    }
}

/// What the agent asked for.
#[derive(Debug, Clone)]
pub struct ExchangeRequest<'a> {
    /// The authenticated agent: the actor of the new hop.
    pub actor: &'a ClientId,
    /// The one target.
    pub target: &'a Audience,
    /// Whether the target is a registered app (owned by a resource server) or a registered agent.
    pub target_known: bool,
    /// `scope`, if sent.
    pub scope: Option<&'a ScopeSet>,
    /// `authorization_details` of type `mandate_delegation`, if sent (hand-offs).
    pub details: Option<&'a Authority>,
}

/// A verified upstream ID token or JWT from a trusted issuer.
#[derive(Debug, Clone)]
pub struct UpstreamSubject<'a> {
    /// The issuer.
    pub issuer: &'a str,
    /// Its alias.
    pub alias: &'a IssuerAlias,
    /// The namespaced user.
    pub subject: Subject,
    /// `aud` values.
    pub aud: &'a [String],
    /// `azp`.
    pub azp: Option<&'a str>,
    /// `client_id`.
    pub client_id: Option<&'a str>,
    /// `may_act`.
    pub may_act: Option<&'a Value>,
    /// The grant id: `jti`, or a hash of the token.
    pub grant_id: String,
    /// `exp`.
    pub expires_at: i64,
    /// How this issuer knows the actor: its `upstream_ids` for the issuer, or its own id.
    pub actor_upstream_ids: Vec<String>,
    /// The consent grants of this subject to this actor.
    pub consents: &'a [ConsentGrant],
}

/// A verified mandate access token and its recorded hop.
#[derive(Debug, Clone)]
pub struct MandateSubject<'a> {
    /// The claims.
    pub claims: &'a AccessTokenClaims,
    /// The ledger's record of that token (`None` if unknown).
    pub hop: Option<&'a HopRecord>,
}

/// The subject token, verified.
#[derive(Debug, Clone)]
pub enum SubjectGrant<'a> {
    /// From a trusted issuer: starts a chain.
    Upstream(UpstreamSubject<'a>),
    /// mandate's own: continues one.
    Mandate(MandateSubject<'a>),
}

/// A verified ID-JAG presented with the jwt-bearer grant (DESIGN.md section 7, resource-AS half).
/// The caller has checked everything about the assertion itself (signature, `typ`, `aud`,
/// `client_id` = the actor, time claims with the skew, replay, `cnf`) and chosen the target from
/// its `resource` claim and the request; this decides what the root hop may have.
#[derive(Debug, Clone)]
pub struct IdJagGrant<'a> {
    /// The IdP issuer (`iss`).
    pub issuer: &'a str,
    /// The namespaced user.
    pub subject: Subject,
    /// Its `jti`: the upstream grant id of the chain it starts.
    pub jti: &'a str,
    /// Its `exp`.
    pub expires_at: i64,
    /// Its `scope` claim. `None` when it carries none: the policy row alone bounds the grant.
    pub scope: Option<&'a ScopeSet>,
    /// Its `act` claim (semantics undefined by the draft): recorded in the ledger as information,
    /// never put in the token and never a source of authority.
    pub act: Option<&'a Value>,
}

/// What the caller supplies besides the request: time, limits, fresh ids.
#[derive(Debug, Clone)]
pub struct ExchangeContext<'a> {
    /// mandate's issuer.
    pub issuer: &'a str,
    /// Now, in seconds (the store's clock).
    pub now: i64,
    /// `tokens.access_token_ttl_secs`.
    pub ttl_secs: i64,
    /// `tokens.max_chain_depth`.
    pub max_chain_depth: u32,
    /// The id of the new hop.
    pub new_hop_id: HopId,
    /// The chain id a root hop gets (derived from the upstream grant by the caller).
    pub root_chain_id: ChainId,
}

/// The decided hop and the claims of the token to sign.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The ledger record.
    pub hop: HopRecord,
    /// The token's claims.
    pub claims: AccessTokenClaims,
}

/// Decides a token exchange: evidence, authority, depth, cycles, lifetime. Deny by default.
pub fn decide(
    policy: &Policy,
    request: &ExchangeRequest<'_>,
    subject: &SubjectGrant<'_>,
    context: &ExchangeContext<'_>,
) -> Result<Decision, Refusal> {
    if request.details.is_some() && request.scope.is_some() {
        return Err(Refusal::AmbiguousSelection);
    }
    match subject {
        SubjectGrant::Upstream(upstream) => decide_root(policy, request, upstream, context),
        SubjectGrant::Mandate(mandate) => decide_child(policy, request, mandate, context),
    }
}

fn decide_root(
    policy: &Policy,
    request: &ExchangeRequest<'_>,
    upstream: &UpstreamSubject<'_>,
    context: &ExchangeContext<'_>,
) -> Result<Decision, Refusal> {
    let actor = request.actor;
    // Who may present: may_act, when present, must name the actor whatever else holds.
    let may_act = match upstream.may_act {
        None => None,
        Some(value) => Some(may_act_names(
            value,
            actor,
            &upstream.actor_upstream_ids,
            upstream.issuer,
        )?),
    };
    let issued_to_actor = issued_to(upstream);
    let evidence = if let Some(upstream_id) = issued_to_actor {
        Evidence {
            kind: EvidenceKind::UpstreamAudience,
            reference: upstream_id,
        }
    } else if may_act == Some(true) {
        Evidence {
            kind: EvidenceKind::MayAct,
            reference: actor.to_string(),
        }
    } else if bound_to_actor_for_mandate(upstream, actor, context.issuer) {
        // Evidence 3: resolved against the target below.
        Evidence {
            kind: EvidenceKind::ConsentGrant,
            reference: String::new(),
        }
    } else {
        return Err(Refusal::NotNamedBySubjectToken);
    };

    check_target(request)?;
    let row = policy.row(actor, request.target).ok_or(Refusal::NoPolicy)?;

    // What the actor could obtain itself, per app, narrowed by consent when that is the evidence.
    let live_consents: Vec<&ConsentGrant> = upstream
        .consents
        .iter()
        .filter(|c| {
            c.expires_at > context.now && &c.actor == actor && c.subject == upstream.subject
        })
        .collect();
    let consent_for = |audience: &Audience| -> Option<&ConsentGrant> {
        live_consents
            .iter()
            .copied()
            .find(|c| &c.audience == audience)
    };
    let mut evidence = evidence;
    let available = match request.target {
        Audience::App(uri) => {
            let mut scopes = row.scopes.clone();
            if evidence.kind == EvidenceKind::ConsentGrant {
                let grant = consent_for(request.target).ok_or(Refusal::NoConsent)?;
                scopes = scopes.intersection(&grant.scopes);
                evidence.reference = grant.id.clone();
            }
            let mut authority = Authority::new();
            authority.insert(uri, scopes);
            authority
        }
        Audience::Agent(_) => {
            let mut authority = Authority::new();
            let mut consent_ids = Vec::new();
            for app_row in policy.app_rows(actor) {
                let mut scopes = app_row.scopes.intersection(&row.scopes);
                if evidence.kind == EvidenceKind::ConsentGrant {
                    let Some(grant) = consent_for(&app_row.audience) else {
                        continue;
                    };
                    scopes = scopes.intersection(&grant.scopes);
                    consent_ids.push(grant.id.clone());
                }
                authority.insert(&app_row.audience.to_string(), scopes);
            }
            if evidence.kind == EvidenceKind::ConsentGrant {
                if consent_ids.is_empty() {
                    return Err(Refusal::NoConsent);
                }
                evidence.reference = consent_ids.join(" ");
            }
            authority
        }
    };
    let granted = select(&available, request)?;
    let depth = 1;
    let depth_limit = path_limit(context.max_chain_depth, row, None);
    if depth > depth_limit {
        return Err(Refusal::TooDeep);
    }
    let expires_at = lifetime(context, upstream.expires_at)?;
    let actors = vec![actor.clone()];
    let hop = HopRecord {
        jkt: None,
        request: None,
        id: context.new_hop_id.clone(),
        parent: None,
        chain_id: context.root_chain_id.clone(),
        ancestors: vec![],
        subject: upstream.subject.clone(),
        actors,
        client_id: actor.clone(),
        audience: request.target.clone(),
        authority: granted,
        issued_at: context.now,
        expires_at,
        depth,
        depth_limit,
        evidence,
        upstream: Some(UpstreamGrant {
            issuer: upstream.issuer.to_owned(),
            grant_id: upstream.grant_id.clone(),
            expires_at: upstream.expires_at,
        }),
    };
    let claims = claims_for(&hop, context.issuer);
    Ok(Decision { hop, claims })
}

fn decide_child(
    policy: &Policy,
    request: &ExchangeRequest<'_>,
    mandate: &MandateSubject<'_>,
    context: &ExchangeContext<'_>,
) -> Result<Decision, Refusal> {
    let actor = request.actor;
    let claims = mandate.claims;
    // Evidence 4: only a hand-off addressed to this agent may be presented by it.
    match Audience::parse(&claims.aud) {
        Ok(Audience::App(_)) => return Err(Refusal::AppTokenReexchanged),
        Ok(Audience::Agent(to)) if &to == actor => {}
        _ => return Err(Refusal::NotNamedBySubjectToken),
    }
    let parent = mandate.hop.ok_or(Refusal::UnknownParentHop)?;
    if parent.id.0 != claims.jti
        || parent.chain_id.0 != claims.chain_id
        || parent.expires_at != claims.exp
        || parent.subject.as_str() != claims.sub
    {
        return Err(Refusal::UnknownParentHop);
    }
    let limit = context.max_chain_depth as usize;
    let chain_actors = claims.act.actors(limit + 1);
    if claims.act.depth(limit) != claims.ancestors.len() + 1
        || chain_actors.len() != parent.actors.len()
    {
        return Err(Refusal::MalformedChain);
    }
    let in_chain = |id: &ClientId| chain_actors.iter().any(|a| *a == id.as_str());
    if in_chain(actor) || request.target.agent().is_some_and(in_chain) {
        return Err(Refusal::AgentTwice);
    }
    check_target(request)?;
    let row = policy.row(actor, request.target).ok_or(Refusal::NoPolicy)?;
    let parent_authority = &parent.authority;
    let available = match request.target {
        Audience::App(uri) => {
            let parent_scopes = parent_authority.scopes(uri).ok_or(Refusal::OutsideParent)?;
            let mut authority = Authority::new();
            authority.insert(uri, parent_scopes.intersection(&row.scopes));
            authority
        }
        Audience::Agent(_) => delegable(policy, actor, row, Some(parent_authority)),
    };
    if let Some(details) = request.details {
        if details
            .pairs()
            .any(|(aud, _)| parent_authority.scopes(aud).is_none())
        {
            return Err(Refusal::OutsideParent);
        }
    }
    let granted = select(&available, request)?;
    let depth = parent.depth + 1;
    let depth_limit = path_limit(context.max_chain_depth, row, Some(parent.depth_limit));
    if depth > depth_limit {
        return Err(Refusal::TooDeep);
    }
    let expires_at = lifetime(context, claims.exp)?;
    let mut actors = Vec::with_capacity(parent.actors.len() + 1);
    actors.push(actor.clone());
    actors.extend(parent.actors.iter().cloned());
    let mut ancestors = parent.ancestors.clone();
    ancestors.push(parent.id.clone());
    let hop = HopRecord {
        jkt: None,
        request: None,
        id: context.new_hop_id.clone(),
        parent: Some(parent.id.clone()),
        chain_id: parent.chain_id.clone(),
        ancestors,
        subject: parent.subject.clone(),
        actors,
        client_id: actor.clone(),
        audience: request.target.clone(),
        authority: granted,
        issued_at: context.now,
        expires_at,
        depth,
        depth_limit,
        evidence: Evidence {
            kind: EvidenceKind::HandOff,
            reference: parent.id.to_string(),
        },
        upstream: None,
    };
    let claims = claims_for(&hop, context.issuer);
    Ok(Decision { hop, claims })
}

/// Decides the root hop of an ID-JAG redemption: the authority is the policy row of (client,
/// resource) ∩ the ID-JAG's `scope`, narrowed by the request's `scope`; the authenticated client
/// is the only actor (`act = {"sub": client}`); the hop is rooted on the ID-JAG (evidence
/// [`EvidenceKind::IdJag`], `upstream` = its issuer, `jti` and `exp`) in the chain the caller
/// derived from it. Deny by default.
///
/// Lifetime: `min(now + ttl, exp)`. An ID-JAG the caller accepted within the clock skew after
/// its `exp` gives a token that expires within the second: a token never outlives the grant.
pub fn decide_id_jag(
    policy: &Policy,
    request: &ExchangeRequest<'_>,
    grant: &IdJagGrant<'_>,
    context: &ExchangeContext<'_>,
) -> Result<Decision, Refusal> {
    let actor = request.actor;
    let Audience::App(uri) = request.target else {
        return Err(Refusal::IdJagForAgent);
    };
    check_target(request)?;
    let row = policy.row(actor, request.target).ok_or(Refusal::NoPolicy)?;
    let scopes = match grant.scope {
        Some(granted) => row.scopes.intersection(granted),
        None => row.scopes.clone(),
    };
    let mut available = Authority::new();
    available.insert(uri, scopes);
    // `authorization_details` selects hand-off pairs only; for an app target `scope` decides.
    let app_request = ExchangeRequest {
        details: None,
        ..request.clone()
    };
    let granted = select(&available, &app_request)?;
    let depth = 1;
    let depth_limit = path_limit(context.max_chain_depth, row, None);
    if depth > depth_limit {
        return Err(Refusal::TooDeep);
    }
    let expires_at = (context.now + context.ttl_secs).min(grant.expires_at.max(context.now + 1));
    let mut reference = serde_json::json!({ "iss": grant.issuer, "jti": grant.jti });
    if let Some(act) = grant.act {
        reference["act"] = act.clone();
    }
    let hop = HopRecord {
        jkt: None,
        request: None,
        id: context.new_hop_id.clone(),
        parent: None,
        chain_id: context.root_chain_id.clone(),
        ancestors: vec![],
        subject: grant.subject.clone(),
        actors: vec![actor.clone()],
        client_id: actor.clone(),
        audience: request.target.clone(),
        authority: granted,
        issued_at: context.now,
        expires_at,
        depth,
        depth_limit,
        evidence: Evidence {
            kind: EvidenceKind::IdJag,
            reference: reference.to_string(),
        },
        upstream: Some(UpstreamGrant {
            issuer: grant.issuer.to_owned(),
            grant_id: grant.jti.to_owned(),
            expires_at: grant.expires_at,
        }),
    };
    let claims = claims_for(&hop, context.issuer);
    Ok(Decision { hop, claims })
}

/// The IdP half of cross-app access (DESIGN.md section 7): what an ID-JAG is issued on. The
/// resource AS row has already bounded the scopes (the row is configuration, not policy rows).
#[derive(Debug, Clone)]
pub struct IdJagIssuance<'a> {
    /// The agent the ID-JAG is for: the only actor.
    pub actor: &'a ClientId,
    /// The user.
    pub subject: &'a Subject,
    /// How the ID token names the agent (its `aud`/`azp`): the evidence.
    pub issued_to: String,
    /// What the ledger records the hop against: the resource AS (or its resource).
    pub audience: &'a Audience,
    /// The scopes the row grants.
    pub scopes: &'a ScopeSet,
    /// The ID token the chain is rooted on.
    pub upstream: UpstreamGrant,
}

/// Decides the root hop of an ID-JAG issuance, like every other hop: evidence
/// [`EvidenceKind::UpstreamAudience`], the agent as the only actor, depth 1 within
/// `max_chain_depth`, and a lifetime of `min(now + ttl, the ID token's exp)`: an ID-JAG never
/// outlives the ID token it was issued on, and one with nothing left is refused.
pub fn decide_id_jag_issuance(
    grant: &IdJagIssuance<'_>,
    context: &ExchangeContext<'_>,
) -> Result<HopRecord, Refusal> {
    let Audience::App(uri) = grant.audience else {
        return Err(Refusal::IdJagForAgent);
    };
    if grant.scopes.is_empty() {
        return Err(Refusal::EmptyAuthority);
    }
    let depth = 1;
    if depth > context.max_chain_depth {
        return Err(Refusal::TooDeep);
    }
    let expires_at = lifetime(context, grant.upstream.expires_at)?;
    let mut authority = Authority::new();
    authority.insert(uri, grant.scopes.clone());
    Ok(HopRecord {
        jkt: None,
        request: None,
        id: context.new_hop_id.clone(),
        parent: None,
        chain_id: context.root_chain_id.clone(),
        ancestors: vec![],
        subject: grant.subject.clone(),
        actors: vec![grant.actor.clone()],
        client_id: grant.actor.clone(),
        audience: grant.audience.clone(),
        authority,
        issued_at: context.now,
        expires_at,
        depth,
        depth_limit: context.max_chain_depth,
        evidence: Evidence {
            kind: EvidenceKind::UpstreamAudience,
            reference: grant.issued_to.clone(),
        },
        upstream: Some(grant.upstream.clone()),
    })
}

/// The target must be registered, and a hand-off may not go to an agent already acting.
fn check_target(request: &ExchangeRequest<'_>) -> Result<(), Refusal> {
    if !request.target_known {
        return Err(Refusal::UnknownAudience);
    }
    if request.target.agent() == Some(request.actor) {
        return Err(Refusal::AgentTwice);
    }
    Ok(())
}

/// Evidence 1: `aud` names the actor as the issuer knows it; with several audiences, `azp` must
/// be present and name it (OIDC Core §2).
fn issued_to(upstream: &UpstreamSubject<'_>) -> Option<String> {
    crate::evidence::issued_to_actor(upstream.aud, upstream.azp, &upstream.actor_upstream_ids)
}

/// Evidence 3's precondition: the JWT is addressed to mandate and bound to the actor by `azp` or
/// `client_id`.
fn bound_to_actor_for_mandate(
    upstream: &UpstreamSubject<'_>,
    actor: &ClientId,
    issuer: &str,
) -> bool {
    let addressed = upstream.aud.iter().any(|a| a == issuer);
    let bound = upstream.azp.or(upstream.client_id).is_some_and(|c| {
        c == actor.as_str() || upstream.actor_upstream_ids.iter().any(|id| id == c)
    });
    addressed && bound
}

/// RFC 8693 §4.4: `may_act` names the actor (by its mandate id or its id at the issuer), and its
/// `iss`, when present, is the subject token's issuer. Anything else names someone else.
fn may_act_names(
    value: &Value,
    actor: &ClientId,
    upstream_ids: &[String],
    issuer: &str,
) -> Result<bool, Refusal> {
    let sub = value.get("sub").and_then(Value::as_str);
    let iss = value.get("iss").and_then(Value::as_str);
    let names_actor =
        sub.is_some_and(|s| s == actor.as_str() || upstream_ids.iter().any(|id| id == s));
    if names_actor && iss.is_none_or(|i| i == issuer) {
        Ok(true)
    } else {
        Err(Refusal::MayActNamesAnother)
    }
}

/// Picks the authority the request asks for out of what is available.
fn select(available: &Authority, request: &ExchangeRequest<'_>) -> Result<Authority, Refusal> {
    let granted = match (request.target, request.details, request.scope) {
        (Audience::App(uri), _, scope) => {
            let scopes = available.scopes(uri).cloned().unwrap_or_default();
            let mut authority = Authority::new();
            match scope {
                Some(requested) if !requested.is_subset(&scopes) => {
                    return Err(Refusal::ScopeWidening)
                }
                Some(requested) => authority.insert(uri, requested.clone()),
                None => authority.insert(uri, scopes),
            }
            authority
        }
        (Audience::Agent(_), Some(details), _) => {
            if !details.is_subset(available) {
                return Err(
                    if details.pairs().all(|(a, _)| available.scopes(a).is_some()) {
                        Refusal::ScopeWidening
                    } else {
                        Refusal::OutsideParent
                    },
                );
            }
            details.clone()
        }
        (Audience::Agent(_), None, Some(requested)) => {
            let mut authority = Authority::new();
            let mut covered = ScopeSet::new();
            for (audience, scopes) in available.pairs() {
                let kept = scopes.intersection(requested);
                covered =
                    ScopeSet::from_tokens(covered.iter().chain(kept.iter())).unwrap_or_default();
                authority.insert(audience, kept);
            }
            if !requested.is_subset(&covered) {
                return Err(Refusal::ScopeWidening);
            }
            authority
        }
        (Audience::Agent(_), None, None) => available.clone(),
    };
    if granted.is_empty() {
        return Err(Refusal::EmptyAuthority);
    }
    Ok(granted)
}

fn path_limit(max_chain_depth: u32, row: &PolicyRow, parent_limit: Option<u32>) -> u32 {
    let mut limit = max_chain_depth;
    if let Some(max_depth) = row.max_depth {
        limit = limit.min(max_depth);
    }
    if let Some(parent) = parent_limit {
        limit = limit.min(parent);
    }
    limit
}

/// `min(now + ttl, parent exp)`: a hop never outlives what it derives from.
fn lifetime(context: &ExchangeContext<'_>, parent_exp: i64) -> Result<i64, Refusal> {
    let expires_at = (context.now + context.ttl_secs).min(parent_exp);
    if expires_at <= context.now {
        return Err(Refusal::Expired);
    }
    Ok(expires_at)
}

/// The claims of the token a hop was issued as (explain rebuilds a parent token from its hop).
pub(crate) fn claims_for(hop: &HopRecord, issuer: &str) -> AccessTokenClaims {
    let actors: Vec<String> = hop.actors.iter().map(ToString::to_string).collect();
    let act = Act::from_current_first(&actors).unwrap_or(Act {
        sub: hop.client_id.to_string(),
        act: None,
    });
    let (scope, authorization_details) = match &hop.audience {
        Audience::App(uri) => (hop.authority.scopes(uri).map(ToString::to_string), None),
        Audience::Agent(_) => (None, Some(hop.authority.to_details())),
    };
    AccessTokenClaims {
        cnf: None,
        iss: issuer.to_owned(),
        sub: hop.subject.to_string(),
        aud: hop.audience.to_string(),
        client_id: hop.client_id.to_string(),
        scope,
        authorization_details,
        iat: hop.issued_at,
        nbf: hop.issued_at,
        exp: hop.expires_at,
        jti: hop.id.to_string(),
        act,
        chain_id: hop.chain_id.to_string(),
        ancestors: hop.ancestors.iter().map(ToString::to_string).collect(),
    }
}

/// What `actor` may pass on through the hand-off `row`: for each app, only scopes it could obtain
/// itself (its own row for that app), bounded by the hand-off row, and, below a mandate token,
/// by what that token carries (`parent`). The hand-off cap `policies explain` shows.
pub fn delegable(
    policy: &Policy,
    actor: &ClientId,
    row: &PolicyRow,
    parent: Option<&Authority>,
) -> Authority {
    let mut authority = Authority::new();
    match parent {
        Some(parent) => {
            for (audience, scopes) in parent.pairs() {
                let Ok(app) = Audience::parse(audience) else {
                    continue;
                };
                if let Some(app_row) = policy.row(actor, &app) {
                    authority.insert(
                        audience,
                        scopes
                            .intersection(&app_row.scopes)
                            .intersection(&row.scopes),
                    );
                }
            }
        }
        None => {
            for app_row in policy.app_rows(actor) {
                authority.insert(
                    &app_row.audience.to_string(),
                    app_row.scopes.intersection(&row.scopes),
                );
            }
        }
    }
    authority
}

#[cfg(test)]
mod id_jag_tests;
#[cfg(test)]
mod tests;
