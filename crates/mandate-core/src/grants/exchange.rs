//! The RFC 8693 token-exchange grant for an access token (DESIGN.md section 5, PROTOCOLS.md
//! 1.2–1.7): verify the subject token, let the chain validator decide, sign, record the hop.

use mandate_chain::{
    decide, Authority, ChainId, ConsentGrant, ExchangeContext, ExchangeRequest, GrantKind, HopId,
    HopRecord, MandateSubject, SubjectGrant, UpstreamSubject,
};
use mandate_model::{Audience, ScopeSet};
use mandate_revocation::{TokenFacts, Verdict};
use mandate_store::Client;
use mandate_token::{urn, Confirmation, DelegationDetail};
use tracing::Instrument as _;

use super::{
    revocation_check_span, validate_chain_span, GrantError, GrantService, Refusals, VerifiedSubject,
};

/// An exchange for a mandate access token for one target.
#[derive(Debug)]
pub struct AccessTokenRequest {
    /// The subject token as presented.
    pub subject_token: String,
    /// Its declared type.
    pub subject_token_type: super::SubjectTokenType,
    /// The one audience or resource.
    pub target: Audience,
    /// The requested scope, if any.
    pub scope: Option<ScopeSet>,
    /// The requested `authorization_details`, if any.
    pub details: Option<Authority>,
    /// The request's `DPoP` proof, if any.
    pub dpop: Option<String>,
}

/// An exchanged access token (the RFC 8693 §2.2.1 response's content).
#[derive(Debug)]
pub struct Exchanged {
    /// The signed token.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The granted scope.
    pub scope: Option<String>,
    /// The granted `authorization_details`.
    pub authorization_details: Option<Vec<DelegationDetail>>,
    /// Whether it is DPoP-bound (`token_type: DPoP`).
    pub bound: bool,
}

/// What the decision reads from the store about the subject token: the stored consent grants of
/// (user, actor) for an upstream token, the parent's hop record for a mandate token.
enum Evidence {
    Consents(Vec<ConsentGrant>),
    ParentHop(Option<Box<HopRecord>>),
}

impl GrantService {
    /// Exchanges a subject token for an access token for the authenticated agent `client`. A
    /// refusal is appended to the audit stream (`exchange.refused`, target the requested
    /// audience).
    pub async fn exchange(
        &self,
        client: &Client,
        request: AccessTokenRequest,
    ) -> Result<Exchanged, GrantError> {
        let refusals = Refusals::new(client.id.as_str(), "exchange.refused");
        let target = request.target.to_string();
        let result = self.exchange_for(client, request, &refusals).await;
        refusals
            .flush(self.ports.audit.as_ref(), self.clock.as_ref(), &target)
            .await;
        result
    }

    async fn exchange_for(
        &self,
        client: &Client,
        request: AccessTokenRequest,
        refusals: &Refusals,
    ) -> Result<Exchanged, GrantError> {
        let refuse = |reason: &dyn std::fmt::Display, error| refusals.refuse(reason, error);
        let unavailable = |e: &dyn std::fmt::Display| GrantError::unavailable("token exchange", e);
        let proof = self.check_proof(request.dpop.as_deref(), refusals)?;
        let subject = self
            .verify_subject(&request.subject_token, request.subject_token_type)
            .await
            .map_err(|e| refuse(&e, e.to_grant_error()))?;
        let depth_bound = self.settings.max_chain_depth as usize + 1;

        // DESIGN.md section 6: read the store's clock and check the subject token's chain;
        // decide; write the hop; check again; only then return the token.
        let first_facts = match &subject {
            VerifiedSubject::Mandate(claims) => TokenFacts::of_access_token(claims, depth_bound),
            VerifiedSubject::Upstream {
                issuer,
                claims,
                subject,
                grant_id,
                ..
            } => TokenFacts {
                chain: Some(
                    self.ports
                        .chain_key
                        .derive(issuer.alias().as_str(), grant_id)
                        .0,
                ),
                subject: Some(subject.to_string()),
                issued_at: claims.iat.unwrap_or(0),
                ..TokenFacts::default()
            },
        };
        // The reads the decision needs are independent of one another and of the first check,
        // so they go out together (one round-trip time instead of four on Redis). Nothing is
        // decided before all of them are in, and their outcomes are judged in the order they
        // used to be made: the target, then the revocation list, then the evidence and the
        // policy.
        let (target_known, checked, evidence, policy, gate) = tokio::join!(
            crate::target_facts(self.ports.clients.as_ref(), &request.target),
            self.ports
                .revocations
                .check(&first_facts)
                .instrument(revocation_check_span("first")),
            self.read_evidence(client, &subject),
            self.ports.policies.policy(),
            self.ports.gate.gate(&request.target),
        );
        let target = target_known.map_err(|e| unavailable(&e))?;
        let target_known = target.known;
        let gate = gate.map_err(|e| unavailable(&e))?;
        let checked = checked.map_err(|e| unavailable(&e))?;
        if let Verdict::Revoked { kind, .. } = &checked.verdict {
            return Err(refuse(
                &format!("subject token revoked ({kind})"),
                GrantError::InvalidRequest("the subject token has been revoked".into()),
            ));
        }
        let evidence = evidence?;
        let (policy, _) = policy.map_err(|e| unavailable(&e))?;
        let now = checked.now_ms.div_euclid(1000);
        let new_hop_id = self.ids.hop_id();

        let aud_values;
        let (grant, root_chain_id) = match (&subject, &evidence) {
            (
                VerifiedSubject::Upstream {
                    issuer,
                    claims,
                    subject,
                    grant_id,
                    aud,
                },
                Evidence::Consents(consents),
            ) => {
                aud_values = aud.clone();
                let chain_id = self
                    .ports
                    .chain_key
                    .derive(issuer.alias().as_str(), grant_id);
                (
                    SubjectGrant::Upstream(UpstreamSubject {
                        issuer: issuer.issuer(),
                        alias: issuer.alias(),
                        subject: subject.clone(),
                        aud: &aud_values,
                        azp: claims.azp.as_deref(),
                        client_id: claims.client_id.as_deref(),
                        may_act: claims.may_act.as_ref(),
                        grant_id: grant_id.clone(),
                        expires_at: claims.exp.unwrap_or(now),
                        actor_upstream_ids: client_upstream_ids(client, issuer.issuer()),
                        consents,
                    }),
                    chain_id,
                )
            }
            (VerifiedSubject::Mandate(claims), Evidence::ParentHop(parent_hop)) => (
                SubjectGrant::Mandate(MandateSubject {
                    claims,
                    hop: parent_hop.as_deref(),
                }),
                ChainId(claims.chain_id.clone()),
            ),
            _ => {
                return Err(GrantError::Internal {
                    description: "the exchange could not be completed",
                    cause: "evidence read for another kind of subject token".into(),
                })
            }
        };
        let exchange_request = ExchangeRequest {
            actor: &client.id,
            target: &request.target,
            target_known,
            scope: request.scope.as_ref(),
            details: request.details.as_ref(),
        };
        let context = ExchangeContext {
            issuer: &self.settings.issuer,
            now,
            ttl_secs: i64::from(self.settings.access_token_ttl_secs),
            max_chain_depth: self.settings.max_chain_depth,
            new_hop_id,
            root_chain_id,
        };
        let mut decision = validate_chain_span()
            .in_scope(|| decide(&policy, &exchange_request, &grant, &context))
            .map_err(|refusal| {
                refusals.refuse_by(
                    refusal.rule(),
                    &refusal,
                    GrantError::refused(&refusal, GrantKind::TokenExchange),
                )
            })?;
        self.pass_gate(client.id.as_str(), gate, refusals).await?;
        // A hop is never less bound than its parent: a bound subject token (a hand-off bound to
        // its delegator's key) is exchanged only with a proof, of the presenting agent's own key.
        if let VerifiedSubject::Mandate(claims) = &subject {
            if claims.cnf.is_some() {
                Self::require_proof(
                    proof.as_ref(),
                    "the subject token is DPoP-bound: the exchange needs a DPoP proof",
                    refusals,
                )?;
            }
        }
        self.require_policy_proof(client, target.dpop_required, proof.as_ref(), refusals)?;
        self.spend_proof(proof.as_ref(), now, refusals).await?;
        if let Some(proof) = &proof {
            decision.claims.cnf = Some(Confirmation {
                jkt: proof.jkt().to_owned(),
            });
            decision.hop.jkt = Some(proof.jkt().to_owned());
        }
        let access_token = self
            .sign_and_record(
                urn::TYP_ACCESS_TOKEN,
                &decision.claims,
                &decision.hop,
                |kind| {
                    refuse(
                        &format!("revoked while exchanging ({kind})"),
                        GrantError::InvalidRequest("the subject token has been revoked".into()),
                    )
                },
            )
            .await?;
        tracing::info!(
            target: "audit",
            client_id = %client.id,
            hop = %decision.hop.id,
            chain = %decision.hop.chain_id,
            audience = %decision.hop.audience,
            depth = decision.hop.depth,
            "token exchanged"
        );
        super::issued(
            "token_exchange",
            if decision.hop.audience.agent().is_some() {
                "hand_off"
            } else {
                "access_token"
            },
            proof.is_some(),
        );
        Ok(Exchanged {
            access_token,
            expires_in: decision.claims.exp - now,
            scope: decision.claims.scope.clone(),
            authorization_details: decision.claims.authorization_details.clone(),
            bound: proof.is_some(),
        })
    }

    async fn read_evidence(
        &self,
        client: &Client,
        subject: &VerifiedSubject,
    ) -> Result<Evidence, GrantError> {
        match subject {
            VerifiedSubject::Upstream { subject, .. } => self
                .ports
                .consents
                .consents(subject, &client.id)
                .await
                .map(Evidence::Consents)
                .map_err(|e| GrantError::unavailable("token exchange", e)),
            VerifiedSubject::Mandate(claims) => self
                .ports
                .ledger
                .hop(&HopId(claims.jti.clone()))
                .await
                .map(|hop| Evidence::ParentHop(hop.map(Box::new)))
                .map_err(|e| GrantError::unavailable("token exchange", e)),
        }
    }
}

/// How `issuer` knows the agent: its `upstream_ids` for that issuer, else its own client id.
pub(super) fn client_upstream_ids(client: &Client, issuer: &str) -> Vec<String> {
    let mapped: Vec<String> = client
        .upstream_ids
        .iter()
        .filter(|u| u.issuer == issuer)
        .map(|u| u.client_id.clone())
        .collect();
    if mapped.is_empty() {
        vec![client.id.to_string()]
    } else {
        mapped
    }
}
