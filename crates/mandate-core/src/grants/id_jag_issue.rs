//! The IdP half of cross-app access (DESIGN.md section 7, PROTOCOLS.md 2.3): token exchange with
//! `requested_token_type=urn:ietf:params:oauth:token-type:id-jag` turns the user's ID token,
//! issued to the requesting agent, into an Identity Assertion JWT Authorization Grant for a
//! configured resource AS.
//!
//! The order follows the exchange: verify the subject token and the evidence-1 rule; resolve the
//! row (audience, resource, scope, client-id mapping); check the revocation list with the store's
//! clock; decide through the chain crate; sign; record the hop; check the list again.

use std::collections::BTreeMap;
use tracing::Instrument as _;

use mandate_chain::{
    decide_id_jag_issuance, issued_to_actor, ExchangeContext, GrantKind, IdJagIssuance, Refusal,
    UpstreamGrant,
};
use mandate_model::{Audience, ClientId, ScopeSet};
use mandate_revocation::{TokenFacts, Verdict};
use mandate_store::Client;
use mandate_token::{urn, IdJagClaims, OneOrMany};
use serde::Deserialize;

use super::exchange::client_upstream_ids;
use super::{GrantError, GrantService, Refusals, SubjectTokenType, VerifiedSubject};

/// A resource authorization server ID-JAGs are issued for (`[[id_jag.resource_servers]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdJagResourceServer {
    /// The resource AS issuer (the ID-JAG's `aud`).
    pub issuer: String,
    /// Agent id here → its client id at that server.
    pub client_ids: BTreeMap<ClientId, String>,
    /// Resources (RFC 8707) at that server agents may ask for.
    pub resources: Vec<Audience>,
    /// Scopes agents may ask for.
    pub scopes: ScopeSet,
}

/// An exchange for an ID-JAG.
#[derive(Debug)]
pub struct IdJagIssueRequest {
    /// The user's ID token.
    pub subject_token: String,
    /// The resource AS's issuer.
    pub audience: String,
    /// Its API, if named.
    pub resource: Option<String>,
    /// The requested scope, if any.
    pub scope: Option<ScopeSet>,
    /// The request's `DPoP` proof, if any: the ID-JAG is then bound to its key.
    pub dpop: Option<String>,
}

/// What the row grants: the resource (when one), the scopes and the client id at that server.
#[derive(Debug, PartialEq, Eq)]
pub struct Granted {
    /// The `resource` claim.
    pub resource: Option<String>,
    /// The `scope` claim.
    pub scope: ScopeSet,
    /// The `client_id` claim.
    pub client_id: String,
}

/// Applies the row's policy to the request: `resource` within `resources` (absent: the one
/// resource when the row lists exactly one, else none), `scope` within `scopes` (absent: all of
/// them), and the agent's client id at that server from `client_ids`.
pub fn grant_at_resource_server(
    row: &IdJagResourceServer,
    agent: &ClientId,
    resource: Option<&str>,
    scope: Option<&ScopeSet>,
) -> Result<Granted, GrantError> {
    let client_id = row.client_ids.get(agent).cloned().ok_or_else(|| {
        GrantError::InvalidTarget(
            "this client has no client id at that resource authorization server".into(),
        )
    })?;
    let resource = match (resource, row.resources.as_slice()) {
        (Some(wanted), listed) => {
            if !listed.iter().any(|r| r.to_string() == wanted) {
                return Err(GrantError::InvalidTarget(
                    "the resource is not allowed at that resource authorization server".into(),
                ));
            }
            Some(wanted.to_owned())
        }
        (None, [only]) => Some(only.to_string()),
        (None, _) => None,
    };
    let scope = match scope {
        Some(wanted) if !wanted.is_subset(&row.scopes) => {
            return Err(GrantError::InvalidScope(
                "the scope is not allowed at that resource authorization server".into(),
            ))
        }
        Some(wanted) => wanted.clone(),
        None => row.scopes.clone(),
    };
    if scope.is_empty() {
        return Err(GrantError::InvalidScope("no scope granted".into()));
    }
    Ok(Granted {
        resource,
        scope,
        client_id,
    })
}

/// An issued ID-JAG.
#[derive(Debug)]
pub struct IssuedIdJag {
    /// The signed JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The granted scope.
    pub scope: String,
}

impl GrantService {
    /// Issues an ID-JAG for the authenticated agent `client` from its user's ID token. A
    /// refusal is appended to the audit stream (`id_jag_issue.refused`, target the resource AS).
    pub async fn issue_id_jag(
        &self,
        client: &Client,
        request: IdJagIssueRequest,
    ) -> Result<IssuedIdJag, GrantError> {
        let refusals = Refusals::new(client.id.as_str(), "id_jag_issue.refused");
        let target = request.audience.clone();
        let result = self.issue_id_jag_for(client, request, &refusals).await;
        refusals
            .flush(self.ports.audit.as_ref(), self.clock.as_ref(), &target)
            .await;
        result
    }

    async fn issue_id_jag_for(
        &self,
        client: &Client,
        request: IdJagIssueRequest,
        refusals: &Refusals,
    ) -> Result<IssuedIdJag, GrantError> {
        let refuse = |reason: &dyn std::fmt::Display, error| refusals.refuse(reason, error);
        // Not advertised in discovery either: without a resource AS, the requested type is
        // unknown.
        if !self.issues_id_jags() {
            return Err(refuse(
                &"no resource AS configured",
                GrantError::InvalidRequest("this server is not configured to issue ID-JAGs".into()),
            ));
        }
        let proof = self.check_proof(request.dpop.as_deref(), refusals)?;
        let subject = self
            .verify_subject(&request.subject_token, SubjectTokenType::IdToken)
            .await
            .map_err(|e| refuse(&e, e.to_grant_error()))?;
        let VerifiedSubject::Upstream {
            issuer,
            claims,
            subject,
            grant_id,
            aud,
        } = subject
        else {
            return Err(refuse(
                &"not an upstream ID token",
                GrantError::InvalidRequest(
                    "subject_token_type does not match the subject_token".into(),
                ),
            ));
        };
        // PROTOCOLS.md 2.3: a client cannot use an ID token issued to another client
        // (evidence 1).
        let upstream_ids = client_upstream_ids(client, issuer.issuer());
        let Some(upstream_id) = issued_to_actor(&aud, claims.azp.as_deref(), &upstream_ids) else {
            return Err(refuse(
                &"ID token issued to another client",
                GrantError::InvalidRequest(
                    "the subject_token was not issued to this client".into(),
                ),
            ));
        };
        let row = self
            .settings
            .resource_servers
            .iter()
            .find(|r| r.issuer == request.audience)
            .ok_or_else(|| {
                refuse(
                    &"unknown resource AS",
                    GrantError::InvalidTarget(
                        "the audience is not a known resource authorization server".into(),
                    ),
                )
            })?;
        let granted = grant_at_resource_server(
            row,
            &client.id,
            request.resource.as_deref(),
            request.scope.as_ref(),
        )
        .map_err(|e| refuse(&"outside the resource AS row", e))?;

        let chain_id = self
            .ports
            .chain_key
            .derive(issuer.alias().as_str(), &grant_id);
        let first = self
            .ports
            .revocations
            .check(&TokenFacts {
                chain: Some(chain_id.0.clone()),
                subject: Some(subject.to_string()),
                issued_at: claims.iat.unwrap_or(0),
                ..TokenFacts::default()
            })
            .instrument(super::revocation_check_span("first"))
            .await
            .map_err(|e| GrantError::unavailable("ID-JAG issuance", e))?;
        if let Verdict::Revoked { kind, .. } = &first.verdict {
            return Err(refuse(
                &format!("subject token revoked ({kind})"),
                GrantError::InvalidRequest("the subject token has been revoked".into()),
            ));
        }
        let now = first.now_ms.div_euclid(1000);
        let id_token_exp = claims.exp.unwrap_or(now);
        // The ledger names the resource AS by its issuer when that is an app URI (it is, for
        // any issuer the configuration accepts), else by the resource.
        let hop_audience = Audience::parse(&row.issuer)
            .ok()
            .filter(|a| a.agent().is_none())
            .or_else(|| {
                granted
                    .resource
                    .as_deref()
                    .and_then(|r| Audience::parse(r).ok())
            })
            .or_else(|| row.resources.first().cloned())
            .ok_or_else(|| GrantError::Internal {
                description: "no audience to record",
                cause: format!("resource AS row {} names no app URI", row.issuer),
            })?;
        let context = ExchangeContext {
            issuer: &self.settings.issuer,
            now,
            ttl_secs: i64::from(self.settings.id_jag_ttl_secs),
            max_chain_depth: self.settings.max_chain_depth,
            new_hop_id: self.ids.hop_id(),
            root_chain_id: chain_id,
        };
        let issuance = IdJagIssuance {
            actor: &client.id,
            subject: &subject,
            issued_to: upstream_id,
            audience: &hop_audience,
            scopes: &granted.scope,
            upstream: UpstreamGrant {
                issuer: issuer.issuer().to_owned(),
                grant_id,
                expires_at: id_token_exp,
            },
        };
        let mut hop = super::validate_chain_span()
            .in_scope(|| decide_id_jag_issuance(&issuance, &context))
            .map_err(|refusal| match refusal {
                Refusal::Expired => refuse(
                    &"ID token expires now",
                    GrantError::InvalidRequest("subject_token has expired".into()),
                ),
                other => refusals.refuse_by(
                    other.rule(),
                    &other,
                    GrantError::refused(&other, GrantKind::TokenExchange),
                ),
            })?;
        let expires_at = hop.expires_at;
        // PROTOCOLS.md 2.6: with a proof the ID-JAG carries `cnf.jkt` (its response still says
        // `token_type: N_A`); the resource AS then requires a proof by the same key.
        self.require_policy_proof(client, false, proof.as_ref(), refusals)?;
        self.spend_proof(proof.as_ref(), now, refusals).await?;
        hop.jkt = proof.as_ref().map(|p| p.jkt().to_owned());
        // `sub` is mandate's namespaced subject (`corp|alice`; bare for the `subject_as_is`
        // issuer): the resource AS trusts mandate as the enterprise's IdP, and `sub` must be
        // unique per `iss` across every upstream issuer mandate brokers (DECISIONS.md, "ID-JAG
        // issuance").
        let jag = IdJagClaims {
            iss: Some(self.settings.issuer.clone()),
            sub: Some(subject.to_string()),
            aud: Some(OneOrMany::One(row.issuer.clone())),
            client_id: Some(granted.client_id.clone()),
            jti: Some(hop.id.to_string()),
            exp: Some(expires_at),
            iat: Some(now),
            nbf: None,
            resource: granted.resource.clone().map(OneOrMany::One),
            scope: Some(granted.scope.to_string()),
            act: None,
            cnf: hop
                .jkt
                .as_ref()
                .map(|jkt| serde_json::json!({ "jkt": jkt })),
            tenant: None,
            auth_time: claims.auth_time,
        };
        let token = self
            .sign_and_record(urn::TYP_ID_JAG, &jag, &hop, |kind| {
                refuse(
                    &format!("revoked while issuing ({kind})"),
                    GrantError::InvalidRequest("the subject token has been revoked".into()),
                )
            })
            .await?;
        tracing::info!(
            target: "audit",
            client_id = %client.id,
            hop = %hop.id,
            chain = %hop.chain_id,
            audience = %row.issuer,
            "ID-JAG issued"
        );
        super::issued("token_exchange", "id_jag", proof.is_some());
        Ok(IssuedIdJag {
            token,
            expires_in: expires_at - now,
            scope: granted.scope.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(resources: &[&str]) -> IdJagResourceServer {
        IdJagResourceServer {
            issuer: "https://as.example.com".into(),
            client_ids: BTreeMap::from([(
                ClientId::parse("agent").unwrap(),
                "agent-at-as".to_owned(),
            )]),
            resources: resources
                .iter()
                .map(|r| Audience::parse(r).unwrap())
                .collect(),
            scopes: ScopeSet::parse("a b").unwrap(),
        }
    }

    fn agent() -> ClientId {
        ClientId::parse("agent").unwrap()
    }

    #[test]
    fn defaults_are_the_single_resource_and_all_scopes() {
        let granted =
            grant_at_resource_server(&row(&["https://api.example.com"]), &agent(), None, None)
                .unwrap();
        assert_eq!(granted.resource.as_deref(), Some("https://api.example.com"));
        assert_eq!(granted.scope.to_string(), "a b");
        assert_eq!(granted.client_id, "agent-at-as");
        let several = row(&["https://api.example.com", "https://files.example.com"]);
        assert_eq!(
            grant_at_resource_server(&several, &agent(), None, None)
                .unwrap()
                .resource,
            None
        );
    }

    #[test]
    fn refusals_name_the_right_error() {
        let r = row(&["https://api.example.com"]);
        let code = |e: Result<Granted, GrantError>| e.unwrap_err().code();
        assert_eq!(
            code(grant_at_resource_server(
                &r,
                &agent(),
                Some("https://files.example.com"),
                None
            )),
            "invalid_target"
        );
        let wide = ScopeSet::parse("a c").unwrap();
        assert_eq!(
            code(grant_at_resource_server(&r, &agent(), None, Some(&wide))),
            "invalid_scope"
        );
        let other = ClientId::parse("other").unwrap();
        assert_eq!(
            code(grant_at_resource_server(&r, &other, None, None)),
            "invalid_target"
        );
        let narrow = ScopeSet::parse("a").unwrap();
        let granted =
            grant_at_resource_server(&r, &agent(), Some("https://api.example.com"), Some(&narrow))
                .unwrap();
        assert_eq!(granted.scope.to_string(), "a");
    }
}
