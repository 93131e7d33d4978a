//! Explain (`POST /admin/policies/explain`): which policy row and consent evidence would allow an
//! exchange, or which rule refuses it and with which OAuth error code.
//!
//! It decides nothing itself: it builds the subject token the admin describes and asks the
//! validator ([`decide`], [`decide_id_jag`]), so that the answer cannot drift from what
//! `/token` does with the same inputs.

use mandate_model::{ClientId, IssuerAlias, ScopeSet, Subject};

use crate::validator::claims_for;
use crate::{
    decide, decide_id_jag, Authority, ChainId, ConsentGrant, Evidence, ExchangeContext,
    ExchangeRequest, GrantKind, HopId, HopRecord, IdJagGrant, MandateSubject, Policy, PolicyRow,
    Refusal, SubjectGrant, UpstreamSubject,
};

/// The subject token of the exchange to explain.
#[derive(Debug, Clone)]
pub enum ExplainSubject<'a> {
    /// An ID token or JWT from a trusted issuer (`id_token`, `jwt`). Evidence 1 (the token was
    /// issued to the agent) is always weighed; evidence 3 (a JWT addressed to mandate and bound
    /// to the agent, covered by a stored grant) when the subject's grants are given.
    Upstream {
        /// The user, when the admin names one.
        subject: Option<Subject>,
        /// The user's stored consent grants to the agent (ignored without `subject`).
        consents: &'a [ConsentGrant],
    },
    /// A mandate token (`access_token`), known by its recorded hop.
    Mandate {
        /// The hop of the token being exchanged.
        parent: &'a HopRecord,
    },
    /// An ID-JAG redeemed with the jwt-bearer grant; its `scope` is taken as absent, so the
    /// policy row alone bounds the grant.
    IdJag,
}

/// Everything explain needs besides the policy.
#[derive(Debug, Clone)]
pub struct ExplainInput<'a> {
    /// The agent, the target and the selection, as `/token` would see them.
    pub request: ExchangeRequest<'a>,
    /// The subject token.
    pub subject: ExplainSubject<'a>,
    /// mandate's issuer.
    pub issuer: &'a str,
    /// Now, in seconds.
    pub now: i64,
    /// `tokens.access_token_ttl_secs`.
    pub ttl_secs: i64,
    /// `tokens.max_chain_depth`.
    pub max_chain_depth: u32,
}

/// What would be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The policy row (merged for its actor and audience) that allows it.
    pub row: PolicyRow,
    /// Each consent evidence that would allow it, in the order `/token` tries them.
    pub evidence: Vec<Evidence>,
    /// The authority the token would carry (under the first evidence).
    pub authority: Authority,
    /// The depth the path may reach (`max_chain_depth`, every row's `max_depth` on the path).
    pub max_depth: u32,
}

impl Allowed {
    /// Every scope of the authority.
    pub fn scopes(&self) -> ScopeSet {
        ScopeSet::from_tokens(self.authority.pairs().flat_map(|(_, s)| s.iter()))
            .unwrap_or_default()
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Explanation {
    /// Allowed: by which row, on which evidence.
    Allowed(Allowed),
    /// Refused, with the rule and the OAuth error code `/token` answers with.
    Refused {
        /// The rule.
        refusal: Refusal,
        /// `invalid_request`, `invalid_target`, `invalid_scope`, or for an ID-JAG redemption
        /// `invalid_grant` in place of `invalid_request` (RFC 7523 §3.1).
        error: &'static str,
    },
}

/// Why a hand-off can carry less than its row says: the hand-off row, and what the delegator may
/// pass on through it ([`crate::validator::delegable`], the rule `/token` applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOffCap {
    /// The row for the delegator and the receiving agent.
    pub row: PolicyRow,
    /// At most this, per app: the delegator's own rows, bounded by the hand-off row (and by the
    /// parent token below a mandate token).
    pub cap: Authority,
}

/// For a hand-off (an `agent:` target) that has a row, the row and its cap; `None` otherwise.
pub fn hand_off_cap(policy: &Policy, input: &ExplainInput<'_>) -> Option<HandOffCap> {
    input.request.target.agent()?;
    let row = policy.row(input.request.actor, input.request.target)?;
    let parent = match &input.subject {
        ExplainSubject::Mandate { parent } => Some(&parent.authority),
        _ => None,
    };
    Some(HandOffCap {
        row: row.clone(),
        cap: crate::validator::delegable(policy, input.request.actor, row, parent),
    })
}

/// Explains the exchange described by `input` under `policy`.
pub fn explain(policy: &Policy, input: &ExplainInput<'_>) -> Explanation {
    let context = ExchangeContext {
        issuer: input.issuer,
        now: input.now,
        ttl_secs: input.ttl_secs,
        max_chain_depth: input.max_chain_depth,
        new_hop_id: HopId("hop_explain".into()),
        root_chain_id: ChainId("chn_explain".into()),
    };
    // Constants that always parse (a unit test holds them to it); a failure would refuse,
    // never allow.
    let (Ok(alias), Ok(anyone)) = (
        IssuerAlias::parse(PLACEHOLDER_ALIAS),
        Subject::parse(PLACEHOLDER_SUBJECT),
    ) else {
        return refused(Refusal::NotNamedBySubjectToken);
    };
    let actor = input.request.actor;
    let outcomes: Vec<Result<HopRecord, Refusal>> = match &input.subject {
        ExplainSubject::Upstream { subject, consents } => {
            upstream_candidates(actor, subject.as_ref(), &anyone, consents, input)
                .iter()
                .map(|candidate| {
                    decide(
                        policy,
                        &input.request,
                        &SubjectGrant::Upstream(candidate.as_subject(&alias)),
                        &context,
                    )
                    .map(|d| d.hop)
                })
                .collect()
        }
        ExplainSubject::Mandate { parent } => {
            let claims = claims_for(parent, input.issuer);
            let grant = SubjectGrant::Mandate(MandateSubject {
                claims: &claims,
                hop: Some(parent),
            });
            vec![decide(policy, &input.request, &grant, &context).map(|d| d.hop)]
        }
        ExplainSubject::IdJag => {
            let grant = IdJagGrant {
                issuer: input.issuer,
                subject: anyone.clone(),
                jti: "explain",
                expires_at: input.now + input.ttl_secs,
                scope: None,
                act: None,
            };
            return match decide_id_jag(policy, &input.request, &grant, &context) {
                Ok(decision) => allowed(policy, &input.request, vec![decision.hop]),
                Err(refusal) => Explanation::Refused {
                    error: id_jag_error_code(&refusal),
                    refusal,
                },
            };
        }
    };
    let (hops, refusals): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
    let hops: Vec<HopRecord> = hops.into_iter().filter_map(Result::ok).collect();
    if !hops.is_empty() {
        return allowed(policy, &input.request, hops);
    }
    // Every candidate refused: the first, as `/token` tries evidence 1 before evidence 3.
    refused(
        refusals
            .into_iter()
            .find_map(Result::err)
            .unwrap_or(Refusal::NotNamedBySubjectToken),
    )
}

fn refused(refusal: Refusal) -> Explanation {
    Explanation::Refused {
        error: error_code(&refusal),
        refusal,
    }
}

/// The OAuth error code `/token` answers a token-exchange refusal with (DESIGN.md section 5).
pub fn error_code(refusal: &Refusal) -> &'static str {
    refusal.code_for(GrantKind::TokenExchange).as_str()
}

/// The code for an ID-JAG redemption: a refused grant is `invalid_grant` (RFC 7523 §3.1).
pub fn id_jag_error_code(refusal: &Refusal) -> &'static str {
    refusal.code_for(GrantKind::JwtBearer).as_str()
}

fn allowed(policy: &Policy, request: &ExchangeRequest<'_>, hops: Vec<HopRecord>) -> Explanation {
    // A decision was reached, so the row exists.
    let (Some(first), Some(row)) = (hops.first(), policy.row(request.actor, request.target)) else {
        return refused(Refusal::NoPolicy);
    };
    Explanation::Allowed(Allowed {
        row: row.clone(),
        authority: first.authority.clone(),
        max_depth: first.depth_limit,
        evidence: hops.iter().map(|h| h.evidence.clone()).collect(),
    })
}

/// The upstream token the admin describes, once per evidence `/token` would try.
struct Candidate {
    subject: Subject,
    aud: Vec<String>,
    azp: Option<String>,
    actor_upstream_ids: Vec<String>,
    expires_at: i64,
    consents: Vec<ConsentGrant>,
}

impl Candidate {
    fn as_subject<'a>(&'a self, alias: &'a IssuerAlias) -> UpstreamSubject<'a> {
        UpstreamSubject {
            issuer: "explain",
            alias,
            subject: self.subject.clone(),
            aud: &self.aud,
            azp: self.azp.as_deref(),
            client_id: None,
            may_act: None,
            grant_id: "explain".into(),
            expires_at: self.expires_at,
            actor_upstream_ids: self.actor_upstream_ids.clone(),
            consents: &self.consents,
        }
    }
}

fn upstream_candidates(
    actor: &ClientId,
    subject: Option<&Subject>,
    anyone: &Subject,
    consents: &[ConsentGrant],
    input: &ExplainInput<'_>,
) -> Vec<Candidate> {
    let expires_at = input.now + input.ttl_secs;
    let ids = vec![actor.to_string()];
    // Evidence 1: a token issued to the agent.
    let mut candidates = vec![Candidate {
        subject: subject.unwrap_or(anyone).clone(),
        aud: ids.clone(),
        azp: None,
        actor_upstream_ids: ids.clone(),
        expires_at,
        consents: vec![],
    }];
    // Evidence 3: a JWT addressed to mandate, bound to the agent, and the user's grants.
    if let Some(subject) = subject {
        candidates.push(Candidate {
            subject: subject.clone(),
            aud: vec![input.issuer.to_owned()],
            azp: Some(actor.to_string()),
            actor_upstream_ids: ids,
            expires_at,
            consents: consents.to_vec(),
        });
    }
    candidates
}

/// The issuer alias of the upstream token explain imagines (unused by the rules).
const PLACEHOLDER_ALIAS: &str = "explain";
/// The user explain imagines when the admin names none (evidence 1 does not depend on them).
const PLACEHOLDER_SUBJECT: &str = "explain|anyone";

#[cfg(test)]
mod tests {
    use mandate_model::Audience;

    use super::*;
    use crate::policy::row;

    const ISSUER: &str = "https://mandate.example.com";
    const CAL: &str = "https://calendar.example.com";
    const NOW: i64 = 1_800_000_000;

    fn input<'a>(
        actor: &'a ClientId,
        target: &'a Audience,
        scope: Option<&'a ScopeSet>,
        subject: ExplainSubject<'a>,
    ) -> ExplainInput<'a> {
        ExplainInput {
            request: ExchangeRequest {
                actor,
                target,
                target_known: true,
                scope,
                details: None,
            },
            subject,
            issuer: ISSUER,
            now: NOW,
            ttl_secs: 300,
            max_chain_depth: 5,
        }
    }

    #[test]
    fn the_placeholders_parse() {
        assert!(IssuerAlias::parse(PLACEHOLDER_ALIAS).is_ok());
        assert!(Subject::parse(PLACEHOLDER_SUBJECT).is_ok());
    }

    #[test]
    fn an_allowed_exchange_names_the_merged_row_and_the_evidence() {
        let policy = Policy::new(vec![
            row("assistant", CAL, "cal.read", Some(3)),
            row("assistant", CAL, "cal.write", None),
        ]);
        let actor = ClientId::parse("assistant").unwrap();
        let target = Audience::parse(CAL).unwrap();
        let upstream = ExplainSubject::Upstream {
            subject: None,
            consents: &[],
        };
        let Explanation::Allowed(allowed) =
            explain(&policy, &input(&actor, &target, None, upstream))
        else {
            panic!("allowed expected");
        };
        assert_eq!(
            allowed.row,
            row("assistant", CAL, "cal.read cal.write", Some(3))
        );
        assert_eq!(allowed.max_depth, 3);
        assert_eq!(
            allowed.scopes(),
            ScopeSet::parse("cal.read cal.write").unwrap()
        );
        assert_eq!(
            allowed.evidence.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [crate::EvidenceKind::UpstreamAudience]
        );
    }

    #[test]
    fn consent_evidence_is_weighed_only_for_a_named_subject_and_narrows() {
        let policy = Policy::new(vec![row("assistant", CAL, "cal.read cal.write", None)]);
        let actor = ClientId::parse("assistant").unwrap();
        let target = Audience::parse(CAL).unwrap();
        let alice = Subject::parse("corp|alice").unwrap();
        let grant = ConsentGrant {
            id: "cns_1".into(),
            subject: alice.clone(),
            actor: actor.clone(),
            audience: target.clone(),
            scopes: ScopeSet::parse("cal.read").unwrap(),
            expires_at: NOW + 3600,
        };
        let consents = [grant];
        let named = ExplainSubject::Upstream {
            subject: Some(alice),
            consents: &consents,
        };
        let Explanation::Allowed(allowed) = explain(&policy, &input(&actor, &target, None, named))
        else {
            panic!("allowed expected");
        };
        let kinds: Vec<_> = allowed.evidence.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                crate::EvidenceKind::UpstreamAudience,
                crate::EvidenceKind::ConsentGrant
            ]
        );
        assert_eq!(allowed.evidence[1].reference, "cns_1");
    }

    #[test]
    fn refusals_carry_the_rule_and_the_token_endpoints_code() {
        let policy = Policy::new(vec![row("assistant", CAL, "cal.read", None)]);
        let actor = ClientId::parse("assistant").unwrap();
        let other = ClientId::parse("helper").unwrap();
        let target = Audience::parse(CAL).unwrap();
        let upstream = || ExplainSubject::Upstream {
            subject: None,
            consents: &[],
        };
        let wide = ScopeSet::parse("cal.write").unwrap();
        assert_eq!(
            explain(&policy, &input(&other, &target, None, upstream())),
            Explanation::Refused {
                refusal: Refusal::NoPolicy,
                error: "invalid_target"
            }
        );
        assert_eq!(
            explain(&policy, &input(&actor, &target, Some(&wide), upstream())),
            Explanation::Refused {
                refusal: Refusal::ScopeWidening,
                error: "invalid_scope"
            }
        );
        let hand_off = Audience::parse("agent:helper").unwrap();
        assert_eq!(
            explain(
                &policy,
                &input(&actor, &hand_off, None, ExplainSubject::IdJag)
            ),
            Explanation::Refused {
                refusal: Refusal::IdJagForAgent,
                error: "invalid_target"
            }
        );
        assert_eq!(id_jag_error_code(&Refusal::TooDeep), "invalid_grant");
        assert_eq!(error_code(&Refusal::TooDeep), "invalid_request");
    }
}
