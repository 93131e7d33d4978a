//! The RFC 8693 token-exchange grant: parse the request, verify the subject token, let the chain
//! validator decide, sign, record the hop, answer (DESIGN.md section 5, PROTOCOLS.md 1.2–1.7).

use mandate_chain::{
    decide, Authority, ExchangeContext, ExchangeRequest, GrantKind, MandateSubject, SubjectGrant,
    UpstreamSubject,
};
use mandate_model::{Audience, ScopeSet};
use mandate_store::Client;
use mandate_token::{urn, DelegationDetail};
use serde::Serialize;

use crate::error::{ErrorCode, OAuthError};
use crate::form::Form;
use crate::id_jag_issue::{issue as issue_id_jag, IdJagIssueRequest};
use crate::issue::sign_and_record;
use crate::state::AppState;
use crate::subject::{verify_subject, SubjectTokenType, VerifiedSubject};
use mandate_revocation::{TokenFacts, Verdict};

/// A parsed token-exchange request.
#[derive(Debug)]
pub struct TokenExchangeRequest {
    subject_token: String,
    subject_token_type: SubjectTokenType,
    requested: Requested,
}

/// What the exchange issues.
#[derive(Debug)]
enum Requested {
    /// A mandate access token for one target.
    AccessToken {
        target: Audience,
        scope: Option<ScopeSet>,
        details: Option<Authority>,
    },
    /// An ID-JAG for a configured resource AS (DESIGN.md section 7, IdP half).
    IdJag(IdJagIssueRequest),
}

impl TokenExchangeRequest {
    /// Reads the exchange parameters; every refusal here is about the request's shape.
    pub fn from_form(form: &Form) -> Result<Self, OAuthError> {
        // RFC 8693 §2.1: actor_token_type goes with actor_token. mandate takes neither: the
        // authenticated client is the actor (DESIGN.md section 5).
        if form.single("actor_token")?.is_some() || form.single("actor_token_type")?.is_some() {
            return Err(OAuthError::invalid_request(
                "actor_token is not supported: the authenticated client is the actor",
            ));
        }
        let subject_token = form.required("subject_token")?.to_owned();
        let subject_token_type = SubjectTokenType::parse(form.required("subject_token_type")?)?;
        match form.single("requested_token_type")? {
            None | Some(urn::TOKEN_TYPE_ACCESS_TOKEN) => {}
            Some(urn::TOKEN_TYPE_ID_JAG) => {
                // Here `audience` names the resource AS and `resource` its API (PROTOCOLS.md 2.3).
                return Ok(Self {
                    requested: Requested::IdJag(IdJagIssueRequest::from_form(
                        form,
                        subject_token_type,
                    )?),
                    subject_token,
                    subject_token_type,
                });
            }
            Some(_) => {
                return Err(OAuthError::invalid_request(
                    "unsupported requested_token_type",
                ))
            }
        }
        let targets: Vec<&String> = form
            .all("audience")
            .iter()
            .chain(form.all("resource"))
            .collect();
        let target = match targets.as_slice() {
            [] => {
                return Err(OAuthError::invalid_request(
                    "audience or resource is required",
                ))
            }
            [one] => Audience::parse(one).map_err(|_| {
                OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "the target must be an app URI or agent:<client_id>",
                )
            })?,
            _ => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "exactly one audience or resource is supported per token",
                ))
            }
        };
        let scope = form.scope()?;
        let details = match form.single("authorization_details")? {
            None => None,
            Some(json) => {
                let parsed: Vec<DelegationDetail> = serde_json::from_str(json).map_err(|_| {
                    OAuthError::invalid_request(
                        "authorization_details must be a JSON array of mandate_delegation objects",
                    )
                })?;
                Some(
                    Authority::from_details(&parsed)
                        .map_err(|e| OAuthError::invalid_request(format!("invalid {e}")))?,
                )
            }
        };
        Ok(Self {
            subject_token,
            subject_token_type,
            requested: Requested::AccessToken {
                target,
                scope,
                details,
            },
        })
    }
}

/// The RFC 8693 §2.2.1 response.
#[derive(Debug, Serialize)]
pub struct ExchangeResponse {
    access_token: String,
    issued_token_type: &'static str,
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_details: Option<Vec<DelegationDetail>>,
}

/// Performs the exchange for the authenticated agent `client`. A refusal is appended to the
/// audit stream (`exchange.refused`, target the requested audience); an ID-JAG request is
/// audited by its own issuance.
pub async fn exchange(
    state: &AppState,
    client: &Client,
    request: TokenExchangeRequest,
) -> Result<ExchangeResponse, OAuthError> {
    let refusals = crate::audit::Refusals::new(client.id.as_str(), "exchange.refused");
    let target = match &request.requested {
        Requested::AccessToken { target, .. } => target.to_string(),
        Requested::IdJag(_) => String::new(),
    };
    let result = exchange_for(state, client, request, &refusals).await;
    refusals.flush(state, &target).await;
    result
}

async fn exchange_for(
    state: &AppState,
    client: &Client,
    request: TokenExchangeRequest,
    refusals: &crate::audit::Refusals,
) -> Result<ExchangeResponse, OAuthError> {
    let refuse = |reason: &dyn std::fmt::Display, error: OAuthError| refusals.refuse(reason, error);
    let (target, scope, details) = match request.requested {
        Requested::AccessToken {
            target,
            scope,
            details,
        } => (target, scope, details),
        Requested::IdJag(id_jag) => {
            let issued = issue_id_jag(state, client, &request.subject_token, id_jag).await?;
            return Ok(ExchangeResponse {
                access_token: issued.token,
                issued_token_type: urn::TOKEN_TYPE_ID_JAG,
                token_type: "N_A",
                expires_in: issued.expires_in,
                scope: Some(issued.scope),
                authorization_details: None,
            });
        }
    };
    let subject = verify_subject(state, &request.subject_token, request.subject_token_type)
        .await
        .map_err(|e| refuse(&e, e.to_oauth()))?;
    let tokens = &state.settings.tokens;
    let depth_bound = tokens.max_chain_depth as usize + 1;

    // DESIGN.md section 6: read the store's clock and check the subject token's chain; decide;
    // write the hop; check again; only then return the token.
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
                state
                    .chain_key
                    .derive(issuer.settings.alias.as_str(), grant_id)
                    .0,
            ),
            subject: Some(subject.to_string()),
            issued_at: claims.iat.unwrap_or(0),
            ..TokenFacts::default()
        },
    };
    // The reads the decision needs are independent of one another and of the first check, so
    // they go out together (one round-trip time instead of four on Redis). Nothing is decided
    // before all of them are in, and their outcomes are judged in the order they used to be
    // made: the target, then the revocation list, then the evidence and the policy.
    let (target_known, checked, evidence, policy) = tokio::join!(
        mandate_core::target_is_registered(state.clients.as_ref(), &target),
        state.revocations.check(&first_facts),
        read_evidence(state, client, &subject),
        state.policies.policy(),
    );
    let target_known = target_known.map_err(|e| OAuthError::store_down("token exchange", &e))?;
    let checked = checked.map_err(|e| OAuthError::store_down("token exchange", &e))?;
    if let Verdict::Revoked { kind, .. } = &checked.verdict {
        return Err(refuse(
            &format!("subject token revoked ({kind})"),
            OAuthError::invalid_request("the subject token has been revoked"),
        ));
    }
    let evidence = evidence?;
    let (policy, _) = policy.map_err(|e| OAuthError::store_down("token exchange", &e))?;
    let now = checked.now_ms.div_euclid(1000);
    let new_hop_id = state.ids.hop_id();

    let aud_values;
    let upstream_ids;
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
            upstream_ids = client_upstream_ids(client, &issuer.settings.issuer);
            let chain_id = state
                .chain_key
                .derive(issuer.settings.alias.as_str(), grant_id);
            (
                SubjectGrant::Upstream(UpstreamSubject {
                    issuer: &issuer.settings.issuer,
                    alias: &issuer.settings.alias,
                    subject: subject.clone(),
                    aud: &aud_values,
                    azp: claims.azp.as_deref(),
                    client_id: claims.client_id.as_deref(),
                    may_act: claims.may_act.as_ref(),
                    grant_id: grant_id.clone(),
                    expires_at: claims.exp.unwrap_or(now),
                    actor_upstream_ids: upstream_ids,
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
            mandate_chain::ChainId(claims.chain_id.clone()),
        ),
        _ => {
            tracing::error!("evidence read for another kind of subject token");
            return Err(OAuthError::new(
                ErrorCode::ServerError,
                "the exchange could not be completed",
            ));
        }
    };
    let exchange_request = ExchangeRequest {
        actor: &client.id,
        target: &target,
        target_known,
        scope: scope.as_ref(),
        details: details.as_ref(),
    };
    let context = ExchangeContext {
        issuer: &state.settings.issuer,
        now,
        ttl_secs: i64::from(tokens.access_token_ttl_secs),
        max_chain_depth: tokens.max_chain_depth,
        new_hop_id,
        root_chain_id,
    };
    let decision = decide(&policy, &exchange_request, &grant, &context).map_err(|refusal| {
        refuse(
            &refusal,
            OAuthError::refused(&refusal, GrantKind::TokenExchange),
        )
    })?;
    let access_token = sign_and_record(
        state,
        urn::TYP_ACCESS_TOKEN,
        &decision.claims,
        &decision.hop,
        |kind| {
            refuse(
                &format!("revoked while exchanging ({kind})"),
                OAuthError::invalid_request("the subject token has been revoked"),
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
    Ok(ExchangeResponse {
        access_token,
        issued_token_type: urn::TOKEN_TYPE_ACCESS_TOKEN,
        token_type: "Bearer",
        expires_in: decision.claims.exp - now,
        scope: decision.claims.scope.clone(),
        authorization_details: decision.claims.authorization_details.clone(),
    })
}

/// What the decision reads from the store about the subject token: the stored consent grants of
/// (user, actor) for an upstream token, the parent's hop record for a mandate token.
enum Evidence {
    Consents(Vec<mandate_chain::ConsentGrant>),
    ParentHop(Option<Box<mandate_chain::HopRecord>>),
}

async fn read_evidence(
    state: &AppState,
    client: &Client,
    subject: &VerifiedSubject,
) -> Result<Evidence, OAuthError> {
    match subject {
        VerifiedSubject::Upstream { subject, .. } => state
            .consents
            .consents(subject, &client.id)
            .await
            .map(Evidence::Consents)
            .map_err(|e| OAuthError::store_down("token exchange", &e)),
        VerifiedSubject::Mandate(claims) => state
            .ledger
            .hop(&mandate_chain::HopId(claims.jti.clone()))
            .await
            .map(|hop| Evidence::ParentHop(hop.map(Box::new)))
            .map_err(|e| OAuthError::store_down("token exchange", &e)),
    }
}

/// How `issuer` knows the agent: its `upstream_ids` for that issuer, else its own client id.
pub(crate) fn client_upstream_ids(client: &Client, issuer: &str) -> Vec<String> {
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
