//! The resource-AS half of cross-app access (DESIGN.md section 7, PROTOCOLS.md 2.4): redeem an
//! Identity Assertion JWT Authorization Grant with the RFC 7523 JWT-bearer grant.
//!
//! The order follows the exchange: verify the assertion; check the revocation list with the
//! store's clock (the chain the ID-JAG starts, its subject); decide against policy; spend the
//! `jti` (strict mode); sign; record the hop; check the list again. Every problem with the
//! assertion is `invalid_grant` (RFC 7523 §3.1) with a fixed description that never echoes it.

use std::sync::Arc;
use tracing::Instrument as _;

use mandate_chain::{decide_id_jag, ExchangeContext, ExchangeRequest, GrantKind, IdJagGrant};
use mandate_model::{Audience, ScopeSet, Subject};
use mandate_revocation::{TokenFacts, Verdict};
use mandate_store::Client;
use mandate_token::{urn, IdJagClaims, JwtError, TimeError, TimeWindow, UnverifiedJws};
use serde::Deserialize;

use super::{Acceptance, GrantError, GrantService, IssuerVerifyError, Refusals, UpstreamIssuer};

/// The longest lifetime (`exp` − `iat`) of an ID-JAG mandate accepts; an issuer's
/// `max_token_age_secs` may lower it.
pub const MAX_ID_JAG_LIFETIME_SECS: i64 = 3600;

/// A JWT-bearer request.
#[derive(Debug)]
pub struct IdJagRedeemRequest {
    /// The ID-JAG.
    pub assertion: String,
    /// The requested resource, if any.
    pub resource: Option<String>,
    /// The requested scope, if any.
    pub scope: Option<ScopeSet>,
    /// The request's `DPoP` proof, if any.
    pub dpop: Option<String>,
}

/// A redeemed ID-JAG's access token (the RFC 6749 §5.1 response's content).
#[derive(Debug)]
pub struct RedeemedIdJag {
    /// The signed token.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The granted scope.
    pub scope: Option<String>,
    /// Whether it is DPoP-bound (`token_type: DPoP`).
    pub bound: bool,
}

/// A verified ID-JAG.
#[derive(Debug)]
pub struct VerifiedIdJag {
    /// The issuer that signed it.
    pub issuer: Arc<dyn UpstreamIssuer>,
    /// Its claims.
    pub claims: IdJagClaims,
    /// The namespaced user.
    pub subject: Subject,
    /// `jti`.
    pub jti: String,
    /// `iat`.
    pub issued_at: i64,
    /// `exp`.
    pub expires_at: i64,
    /// The `resource` claim's values, when it has one.
    pub resources: Option<Vec<String>>,
    /// The `scope` claim, when it has one.
    pub scope: Option<ScopeSet>,
    /// `cnf.jkt`: the key it is bound to, when it is (PROTOCOLS.md 2.6).
    pub jkt: Option<String>,
}

/// Why an ID-JAG was refused (logged; the client sees the matching fixed description).
#[derive(Debug, thiserror::Error)]
pub enum IdJagError {
    /// Not a JWT, or too large.
    #[error("assertion is malformed: {0}")]
    Malformed(JwtError),
    /// Its claims are not a JSON object of the right shape (a string `exp`, say).
    #[error("assertion claims are malformed: {0}")]
    MalformedClaims(JwtError),
    /// `typ` is missing or not `oauth-id-jag+jwt`.
    #[error("assertion typ is not oauth-id-jag+jwt")]
    WrongTyp,
    /// A required claim is missing (or empty).
    #[error("assertion has no {0}")]
    MissingClaim(&'static str),
    /// `iss` is mandate itself: it never redeems its own ID-JAGs.
    #[error("assertion was issued by this server")]
    OwnIdJag,
    /// The issuer is not trusted for ID-JAGs.
    #[error("assertion issuer is not trusted for ID-JAGs")]
    Untrusted,
    /// Signature, key or algorithm.
    #[error("assertion signature is invalid: {0}")]
    Signature(JwtError),
    /// The issuer's keys could not be fetched.
    #[error("issuer keys unavailable: {0}")]
    KeysUnavailable(String),
    /// `aud` is not exactly this server's issuer (decision D3).
    #[error("assertion aud is not this server's issuer alone")]
    WrongAudience,
    /// `client_id` names another client.
    #[error("assertion client_id does not match the authenticated client")]
    WrongClient,
    /// Time claims.
    #[error("assertion time claims rejected: {0}")]
    Time(TimeError),
    /// `cnf` is not `{"jkt": "<thumbprint>"}` (mandate binds by DPoP only).
    #[error("assertion cnf is not a DPoP key thumbprint")]
    KeyBound,
    /// Any other claim problem.
    #[error("assertion claims rejected: {0}")]
    Claims(&'static str),
}

impl IdJagError {
    /// What the client is told: `invalid_grant` with a fixed description per kind.
    pub fn to_grant_error(&self) -> GrantError {
        let description: &'static str = match self {
            IdJagError::Malformed(_) => "the assertion is not a well-formed JWT",
            IdJagError::MalformedClaims(_) => "the ID-JAG claims are malformed",
            IdJagError::WrongTyp => "the assertion must have typ oauth-id-jag+jwt",
            IdJagError::MissingClaim("iss") => "the ID-JAG has no iss",
            IdJagError::MissingClaim("sub") => "the ID-JAG has no sub",
            IdJagError::MissingClaim("aud") => "the ID-JAG has no aud",
            IdJagError::MissingClaim("client_id") => "the ID-JAG has no client_id",
            IdJagError::MissingClaim("jti") => "the ID-JAG has no jti",
            IdJagError::MissingClaim("exp") => "the ID-JAG has no exp",
            IdJagError::MissingClaim("iat") => "the ID-JAG has no iat",
            IdJagError::MissingClaim(_) => "the ID-JAG lacks a required claim",
            IdJagError::OwnIdJag => "this server does not redeem ID-JAGs it issued",
            IdJagError::Untrusted => "the ID-JAG issuer is not trusted for ID-JAGs",
            IdJagError::Signature(_) => "the ID-JAG signature is invalid",
            IdJagError::KeysUnavailable(_) => "the ID-JAG issuer keys are unavailable",
            IdJagError::WrongAudience => "the ID-JAG audience must be this server's issuer alone",
            IdJagError::WrongClient => {
                "the ID-JAG client_id does not match the authenticated client"
            }
            IdJagError::Time(TimeError::Expired) => "the ID-JAG has expired",
            IdJagError::Time(TimeError::IssuedInFuture) => "the ID-JAG is issued in the future",
            IdJagError::Time(TimeError::NotYetValid) => "the ID-JAG is not yet valid",
            IdJagError::Time(TimeError::LifetimeTooLong) => "the ID-JAG lives too long",
            IdJagError::Time(_) => "the ID-JAG is not valid at this time",
            IdJagError::KeyBound => "the ID-JAG cnf must be a DPoP key thumbprint (jkt)",
            IdJagError::Claims(what) => what,
        };
        GrantError::InvalidGrant(description.into())
    }
}

impl From<IssuerVerifyError> for IdJagError {
    fn from(error: IssuerVerifyError) -> Self {
        match error {
            IssuerVerifyError::Signature(e) => IdJagError::Signature(e),
            IssuerVerifyError::KeysUnavailable(m) => IdJagError::KeysUnavailable(m),
        }
    }
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
}

/// The one resource the token is for: the ID-JAG's `resource` claim, picked by the request's
/// `resource` when the claim names several; with no claim, the request's `resource` (which
/// policy still bounds). Anything else is `invalid_target`.
pub fn choose_target(
    granted: Option<&[String]>,
    requested: Option<&str>,
) -> Result<Audience, GrantError> {
    let invalid = |description: &'static str| GrantError::InvalidTarget(description.into());
    let chosen = match (granted, requested) {
        (None, None) => {
            return Err(invalid(
                "the ID-JAG names no resource: the request must name one with resource",
            ))
        }
        (None, Some(requested)) => requested,
        (Some([only]), None) => only.as_str(),
        (Some(_), None) => {
            return Err(invalid(
                "the ID-JAG names several resources: choose one with resource",
            ))
        }
        (Some(granted), Some(requested)) => {
            if !granted.iter().any(|g| g == requested) {
                return Err(invalid(
                    "the requested resource is not granted by the ID-JAG",
                ));
            }
            requested
        }
    };
    match Audience::parse(chosen) {
        Ok(app @ Audience::App(_)) => Ok(app),
        _ => Err(invalid("the resource must be an app URI")),
    }
}

impl GrantService {
    /// Verifies `token` as an ID-JAG presented by `client` (PROTOCOLS.md 2.4's checklist,
    /// except the replay and policy steps, which [`GrantService::redeem_id_jag`] does).
    #[tracing::instrument(
        name = "mandate.subject_token",
        level = "debug",
        skip_all,
        fields(token_type = "id-jag")
    )]
    pub async fn verify_id_jag(
        &self,
        token: &str,
        client: &Client,
    ) -> Result<VerifiedIdJag, IdJagError> {
        let jws = UnverifiedJws::parse(token).map_err(IdJagError::Malformed)?;
        // Explicit typing first (RFC 8725 §3.11, decision D5): an access token, an ID token or
        // a client assertion is never taken for an ID-JAG.
        if !jws.header().typ_is(urn::TYP_ID_JAG) {
            return Err(IdJagError::WrongTyp);
        }
        // The issuer chooses the keys; the claim is read unverified only to choose, and
        // checked again after verification.
        let peek: Peek = jws
            .dangerous_unverified_claims()
            .map_err(IdJagError::Malformed)?;
        let iss = peek
            .iss
            .filter(|i| !i.is_empty())
            .ok_or(IdJagError::MissingClaim("iss"))?;
        if iss == self.settings.issuer {
            return Err(IdJagError::OwnIdJag);
        }
        let issuer = self
            .ports
            .issuers
            .find(&iss)
            .cloned()
            .ok_or(IdJagError::Untrusted)?;
        if !issuer.accepts(Acceptance::IdJag) {
            return Err(IdJagError::Untrusted);
        }
        let verified = issuer.verify(&jws).await?;
        let claims: IdJagClaims = verified.claims().map_err(IdJagError::MalformedClaims)?;
        if claims.iss.as_deref() != Some(issuer.issuer()) {
            return Err(IdJagError::Claims(
                "the ID-JAG iss does not match its issuer",
            ));
        }
        let required = |value: Option<&str>, name: &'static str| {
            value
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or(IdJagError::MissingClaim(name))
        };
        let sub = required(claims.sub.as_deref(), "sub")?;
        let aud = claims.aud.as_ref().ok_or(IdJagError::MissingClaim("aud"))?;
        let client_id = required(claims.client_id.as_deref(), "client_id")?;
        let jti = required(claims.jti.as_deref(), "jti")?;
        let expires_at = claims.exp.ok_or(IdJagError::MissingClaim("exp"))?;
        let issued_at = claims.iat.ok_or(IdJagError::MissingClaim("iat"))?;
        // Decision D3: this server's issuer identifier, alone; not the token endpoint URL.
        if aud.as_slice() != [self.settings.issuer.as_str()] {
            return Err(IdJagError::WrongAudience);
        }
        if client_id != client.id.as_str() {
            return Err(IdJagError::WrongClient);
        }
        let window = TimeWindow {
            now: self.clock.now_secs(),
            skew: i64::from(self.settings.clock_skew_secs),
        };
        let max_lifetime = MAX_ID_JAG_LIFETIME_SECS.min(i64::from(issuer.max_token_age_secs()));
        window
            .check(Some(expires_at), claims.nbf, Some(issued_at), max_lifetime)
            .map_err(IdJagError::Time)?;
        if jti.len() > 256 {
            return Err(IdJagError::Claims(
                "the ID-JAG jti is longer than 256 characters",
            ));
        }
        // PROTOCOLS.md 2.6: a bound ID-JAG names its key's thumbprint; the redemption checks the
        // proof against it.
        let jkt = match &claims.cnf {
            None => None,
            Some(cnf) => Some(
                cnf.get("jkt")
                    .and_then(serde_json::Value::as_str)
                    .filter(|jkt| !jkt.is_empty() && jkt.len() <= 128)
                    .filter(|_| cnf.as_object().is_some_and(|o| o.len() == 1))
                    .ok_or(IdJagError::KeyBound)?
                    .to_owned(),
            ),
        };
        let subject = Subject::from_upstream(issuer.alias(), &sub, issuer.subject_as_is())
            .map_err(|_| IdJagError::Claims("the ID-JAG sub cannot be used for this issuer"))?;
        let resources = match &claims.resource {
            None => None,
            Some(values) if values.as_slice().is_empty() => {
                return Err(IdJagError::Claims("the ID-JAG resource claim is empty"))
            }
            Some(values) => Some(values.as_slice().to_vec()),
        };
        let scope = claims
            .scope
            .as_deref()
            .map(ScopeSet::parse)
            .transpose()
            .map_err(|_| IdJagError::Claims("the ID-JAG scope claim is malformed"))?;
        Ok(VerifiedIdJag {
            issuer,
            claims,
            subject,
            jti,
            issued_at,
            expires_at,
            resources,
            scope,
            jkt,
        })
    }

    /// Redeems the ID-JAG in `request` for the authenticated agent `client`. A refusal is
    /// appended to the audit stream (`id_jag_redeem.refused`, target the requested resource, or
    /// `-` when the request names none).
    pub async fn redeem_id_jag(
        &self,
        client: &Client,
        request: IdJagRedeemRequest,
    ) -> Result<RedeemedIdJag, GrantError> {
        let refusals = Refusals::new(client.id.as_str(), "id_jag_redeem.refused");
        let target = request.resource.clone().unwrap_or_else(|| "-".into());
        let result = self.redeem_id_jag_for(client, request, &refusals).await;
        refusals
            .flush(self.ports.audit.as_ref(), self.clock.as_ref(), &target)
            .await;
        result
    }

    async fn redeem_id_jag_for(
        &self,
        client: &Client,
        request: IdJagRedeemRequest,
        refusals: &Refusals,
    ) -> Result<RedeemedIdJag, GrantError> {
        let refuse = |reason: &dyn std::fmt::Display, error| refusals.refuse(reason, error);
        let unavailable =
            |e: &dyn std::fmt::Display| GrantError::unavailable("ID-JAG redemption", e);
        let proof = self.check_proof(request.dpop.as_deref(), refusals)?;
        let jag = self
            .verify_id_jag(&request.assertion, client)
            .await
            .map_err(|e| refuse(&e, e.to_grant_error()))?;
        // PROTOCOLS.md 2.6: a bound ID-JAG needs a proof by its own key (cases 1 and 2).
        if let Some(jkt) = &jag.jkt {
            match &proof {
                Some(proof) if proof.jkt() == jkt => {}
                Some(_) => {
                    return Err(refuse(
                        &"ID-JAG bound to another key",
                        GrantError::InvalidGrant(
                            "the DPoP proof is not by the key the ID-JAG is bound to".into(),
                        ),
                    ))
                }
                None => {
                    return Err(refuse(
                        &"bound ID-JAG without a proof",
                        GrantError::InvalidGrant(
                            "the ID-JAG is DPoP-bound: proof of possession required".into(),
                        ),
                    ))
                }
            }
        }
        let target = choose_target(jag.resources.as_deref(), request.resource.as_deref())
            .map_err(|e| refuse(&"resource not chosen", e))?;
        let (target_facts, gate) = tokio::join!(
            crate::target_facts(self.ports.clients.as_ref(), &target),
            self.ports.gate.gate(&target),
        );
        let target_facts = target_facts.map_err(|e| unavailable(&e))?;
        let target_known = target_facts.known;
        let gate = gate.map_err(|e| unavailable(&e))?;
        let alias = jag.issuer.alias().as_str();
        let chain_id = self.ports.chain_key.derive(alias, &jag.jti);

        // DESIGN.md section 6: read the store's clock and check what the new chain depends on
        // (a revoked chain also stops its ID-JAG from starting it again); decide; write the hop;
        // check again; only then return the token.
        let first = self
            .ports
            .revocations
            .check(&TokenFacts {
                chain: Some(chain_id.0.clone()),
                subject: Some(jag.subject.to_string()),
                issued_at: jag.issued_at,
                ..TokenFacts::default()
            })
            .instrument(super::revocation_check_span("first"))
            .await
            .map_err(|e| unavailable(&e))?;
        if let Verdict::Revoked { kind, .. } = &first.verdict {
            return Err(refuse(
                &format!("ID-JAG revoked ({kind})"),
                GrantError::InvalidGrant("the ID-JAG has been revoked".into()),
            ));
        }
        let now = first.now_ms.div_euclid(1000);
        let exchange_request = ExchangeRequest {
            actor: &client.id,
            target: &target,
            target_known,
            scope: request.scope.as_ref(),
            details: None,
        };
        let grant = IdJagGrant {
            issuer: jag.issuer.issuer(),
            subject: jag.subject.clone(),
            jti: &jag.jti,
            expires_at: jag.expires_at,
            scope: jag.scope.as_ref(),
            act: jag.claims.act.as_ref(),
        };
        let context = ExchangeContext {
            issuer: &self.settings.issuer,
            now,
            ttl_secs: i64::from(self.settings.access_token_ttl_secs),
            max_chain_depth: self.settings.max_chain_depth,
            new_hop_id: self.ids.hop_id(),
            root_chain_id: chain_id,
        };
        let (policy, _) = self
            .ports
            .policies
            .policy()
            .await
            .map_err(|e| unavailable(&e))?;
        let mut decision = super::validate_chain_span()
            .in_scope(|| decide_id_jag(&policy, &exchange_request, &grant, &context))
            .map_err(|refusal| {
                refusals.refuse_by(
                    refusal.rule(),
                    &refusal,
                    GrantError::refused(&refusal, GrantKind::JwtBearer),
                )
            })?;
        // Before the ID-JAG is spent: a refusal by the gate does not burn the grant.
        self.pass_gate(client.id.as_str(), gate, refusals).await?;
        self.require_policy_proof(client, target_facts.dpop_required, proof.as_ref(), refusals)?;
        // The proof is spent before the ID-JAG: a replayed proof leaves the grant unspent.
        self.spend_proof(proof.as_ref(), now, refusals).await?;
        if let Some(proof) = &proof {
            decision.claims.cnf = Some(mandate_token::Confirmation {
                jkt: proof.jkt().to_owned(),
            });
            decision.hop.jkt = Some(proof.jkt().to_owned());
        }
        // Decision D2. Strict (default): single use, remembered until exp + skew + 1 s, spent
        // only once everything else has passed, so a refused request does not burn the grant.
        // Reuse: the same client may present it again until it expires; no other client can, as
        // the ID-JAG's client_id must name the authenticated client.
        if !jag.issuer.id_jag_reuse() {
            let skew = i64::from(self.settings.clock_skew_secs);
            let key = format!("id-jag:{alias}:{}", jag.jti);
            let first_use = self
                .ports
                .replay
                .first_use(&key, jag.expires_at + skew + 1, now)
                .await
                .map_err(|e| unavailable(&e))?;
            if !first_use {
                return Err(refuse(
                    &"ID-JAG replayed",
                    GrantError::InvalidGrant("the ID-JAG has already been used".into()),
                ));
            }
        }
        let access_token = self
            .sign_and_record(
                urn::TYP_ACCESS_TOKEN,
                &decision.claims,
                &decision.hop,
                |kind| {
                    refuse(
                        &format!("revoked while redeeming ({kind})"),
                        GrantError::InvalidGrant("the ID-JAG has been revoked".into()),
                    )
                },
            )
            .await?;
        tracing::info!(
            target: "audit",
            client_id = %client.id,
            issuer = %jag.issuer.issuer(),
            hop = %decision.hop.id,
            chain = %decision.hop.chain_id,
            audience = %decision.hop.audience,
            "ID-JAG redeemed"
        );
        super::issued("jwt_bearer", "access_token", proof.is_some());
        Ok(RedeemedIdJag {
            access_token,
            expires_in: decision.claims.exp - now,
            scope: decision.claims.scope.clone(),
            bound: proof.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "https://api.example.com";
    const FILES: &str = "https://files.example.com";

    fn code(result: Result<Audience, GrantError>) -> &'static str {
        result.unwrap_err().code()
    }

    #[test]
    fn a_single_granted_resource_is_the_target() {
        let granted = vec![API.to_owned()];
        assert_eq!(
            choose_target(Some(&granted), None).unwrap(),
            Audience::App(API.into())
        );
        assert_eq!(
            choose_target(Some(&granted), Some(API)).unwrap(),
            Audience::App(API.into())
        );
        assert_eq!(
            code(choose_target(Some(&granted), Some(FILES))),
            "invalid_target"
        );
        // Exact string comparison: a trailing slash is another resource.
        assert_eq!(
            code(choose_target(
                Some(&granted),
                Some("https://api.example.com/")
            )),
            "invalid_target"
        );
    }

    #[test]
    fn several_granted_resources_need_the_request_to_pick_one() {
        let granted = vec![API.to_owned(), FILES.to_owned()];
        assert_eq!(code(choose_target(Some(&granted), None)), "invalid_target");
        assert_eq!(
            choose_target(Some(&granted), Some(FILES)).unwrap(),
            Audience::App(FILES.into())
        );
    }

    #[test]
    fn without_a_resource_claim_the_request_names_it() {
        assert_eq!(code(choose_target(None, None)), "invalid_target");
        assert_eq!(
            choose_target(None, Some(API)).unwrap(),
            Audience::App(API.into())
        );
    }

    #[test]
    fn only_app_uris_are_targets() {
        for bad in ["agent:helper", "not a uri", "http://api.example.com"] {
            let granted = vec![bad.to_owned()];
            assert_eq!(code(choose_target(Some(&granted), None)), "invalid_target");
            assert_eq!(code(choose_target(None, Some(bad))), "invalid_target");
        }
    }

    #[test]
    fn every_assertion_problem_is_invalid_grant() {
        let errors = [
            IdJagError::Malformed(JwtError::Malformed("x")),
            IdJagError::MalformedClaims(JwtError::Malformed("x")),
            IdJagError::WrongTyp,
            IdJagError::MissingClaim("jti"),
            IdJagError::OwnIdJag,
            IdJagError::Untrusted,
            IdJagError::Signature(JwtError::BadSignature),
            IdJagError::KeysUnavailable("down".into()),
            IdJagError::WrongAudience,
            IdJagError::WrongClient,
            IdJagError::Time(TimeError::Expired),
            IdJagError::KeyBound,
            IdJagError::Claims("x"),
        ];
        for error in errors {
            assert_eq!(error.to_grant_error().code(), "invalid_grant", "{error}");
        }
    }
}
