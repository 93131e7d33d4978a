//! The IdP half of cross-app access (DESIGN.md section 7, PROTOCOLS.md 2.3): token exchange with
//! `requested_token_type=urn:ietf:params:oauth:token-type:id-jag` turns the user's ID token,
//! issued to the requesting agent, into an Identity Assertion JWT Authorization Grant for a
//! configured resource AS (`[[id_jag.resource_servers]]`).
//!
//! The order follows the exchange: verify the subject token and the evidence-1 rule; resolve the
//! row (audience, resource, scope, client-id mapping); check the revocation list with the store's
//! clock; sign; record the hop; check the list again; answer.

use mandate_chain::{
    decide_id_jag_issuance, issued_to_actor, ExchangeContext, GrantKind, IdJagIssuance, Refusal,
    UpstreamGrant,
};
use mandate_model::{Audience, ScopeSet};
use mandate_revocation::{TokenFacts, Verdict};
use mandate_store::Client;
use mandate_token::{urn, IdJagClaims, OneOrMany};

use crate::config::IdJagResourceServerSettings;
use crate::error::{ErrorCode, OAuthError};
use crate::exchange::client_upstream_ids;
use crate::form::Form;
use crate::issue::sign_and_record;
use crate::state::AppState;
use crate::subject::{verify_subject, SubjectTokenType, VerifiedSubject};

/// The ID-JAG-specific parameters of a token-exchange request.
#[derive(Debug)]
pub struct IdJagIssueRequest {
    audience: String,
    resource: Option<String>,
    scope: Option<ScopeSet>,
}

impl IdJagIssueRequest {
    /// Reads `audience` (required: the resource AS issuer), `resource` (optional: its API) and
    /// `scope`. `subject_token_type` must be an ID token; SAML and refresh tokens are already
    /// refused by name when it is parsed.
    pub fn from_form(
        form: &Form,
        subject_token_type: SubjectTokenType,
    ) -> Result<Self, OAuthError> {
        if subject_token_type != SubjectTokenType::IdToken {
            return Err(OAuthError::invalid_request(
                "an ID-JAG is issued only for an ID token (subject_token_type id_token)",
            ));
        }
        let audience = match form.all("audience") {
            [] => {
                return Err(OAuthError::invalid_request(
                    "audience (the resource authorization server's issuer) is required",
                ))
            }
            [one] => one.clone(),
            _ => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "exactly one audience is supported per ID-JAG",
                ))
            }
        };
        let resource =
            form.one_target("resource", "at most one resource is supported per ID-JAG")?;
        let scope = form.scope()?;
        if form.single("authorization_details")?.is_some() {
            return Err(OAuthError::invalid_request(
                "authorization_details is not supported for ID-JAGs",
            ));
        }
        Ok(Self {
            audience,
            resource,
            scope,
        })
    }
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
pub fn grant(
    row: &IdJagResourceServerSettings,
    agent: &mandate_model::ClientId,
    resource: Option<&str>,
    scope: Option<&ScopeSet>,
) -> Result<Granted, OAuthError> {
    let client_id = row.client_ids.get(agent).cloned().ok_or_else(|| {
        OAuthError::new(
            ErrorCode::InvalidTarget,
            "this client has no client id at that resource authorization server",
        )
    })?;
    let resource = match (resource, row.resources.as_slice()) {
        (Some(wanted), listed) => {
            if !listed.iter().any(|r| r.to_string() == wanted) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "the resource is not allowed at that resource authorization server",
                ));
            }
            Some(wanted.to_owned())
        }
        (None, [only]) => Some(only.to_string()),
        (None, _) => None,
    };
    let scope = match scope {
        Some(wanted) if !wanted.is_subset(&row.scopes) => {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "the scope is not allowed at that resource authorization server",
            ))
        }
        Some(wanted) => wanted.clone(),
        None => row.scopes.clone(),
    };
    if scope.is_empty() {
        return Err(OAuthError::new(ErrorCode::InvalidScope, "no scope granted"));
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

/// Issues an ID-JAG for the authenticated agent `client` from its user's ID token. A refusal
/// is appended to the audit stream (`id_jag_issue.refused`, target the resource AS).
pub async fn issue(
    state: &AppState,
    client: &Client,
    subject_token: &str,
    request: IdJagIssueRequest,
) -> Result<IssuedIdJag, OAuthError> {
    let refusals = crate::audit::Refusals::new(client.id.as_str(), "id_jag_issue.refused");
    let target = request.audience.clone();
    let result = issue_for(state, client, subject_token, request, &refusals).await;
    refusals.flush(state, &target).await;
    result
}

async fn issue_for(
    state: &AppState,
    client: &Client,
    subject_token: &str,
    request: IdJagIssueRequest,
    refusals: &crate::audit::Refusals,
) -> Result<IssuedIdJag, OAuthError> {
    let refuse = |reason: &dyn std::fmt::Display, error: OAuthError| refusals.refuse(reason, error);
    // Not advertised in discovery either: without a resource AS, the requested type is unknown.
    if state.settings.id_jag.resource_servers.is_empty() {
        return Err(refuse(
            &"no resource AS configured",
            OAuthError::invalid_request("this server is not configured to issue ID-JAGs"),
        ));
    }
    let subject = verify_subject(state, subject_token, SubjectTokenType::IdToken)
        .await
        .map_err(|e| refuse(&e, e.to_oauth()))?;
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
            OAuthError::invalid_request("subject_token_type does not match the subject_token"),
        ));
    };
    // PROTOCOLS.md 2.3: a client cannot use an ID token issued to another client (evidence 1).
    let upstream_ids = client_upstream_ids(client, &issuer.settings.issuer);
    let Some(upstream_id) = issued_to_actor(&aud, claims.azp.as_deref(), &upstream_ids) else {
        return Err(refuse(
            &"ID token issued to another client",
            OAuthError::invalid_request("the subject_token was not issued to this client"),
        ));
    };
    let row = state
        .settings
        .id_jag
        .resource_servers
        .iter()
        .find(|r| r.issuer == request.audience)
        .ok_or_else(|| {
            refuse(
                &"unknown resource AS",
                OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "the audience is not a known resource authorization server",
                ),
            )
        })?;
    let granted = grant(
        row,
        &client.id,
        request.resource.as_deref(),
        request.scope.as_ref(),
    )
    .map_err(|e| refuse(&"outside the resource AS row", e))?;

    let alias = issuer.settings.alias.as_str();
    let chain_id = state.chain_key.derive(alias, &grant_id);
    let first = state
        .revocations
        .check(&TokenFacts {
            chain: Some(chain_id.0.clone()),
            subject: Some(subject.to_string()),
            issued_at: claims.iat.unwrap_or(0),
            ..TokenFacts::default()
        })
        .await
        .map_err(|e| OAuthError::store_down("ID-JAG issuance", &e))?;
    if let Verdict::Revoked { kind, .. } = &first.verdict {
        return Err(refuse(
            &format!("subject token revoked ({kind})"),
            OAuthError::invalid_request("the subject token has been revoked"),
        ));
    }
    let now = first.now_ms.div_euclid(1000);
    let id_token_exp = claims.exp.unwrap_or(now);
    // The ledger names the resource AS by its issuer when that is an app URI (it is, for any
    // issuer the configuration accepts), else by the resource.
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
        .ok_or_else(|| OAuthError::new(ErrorCode::ServerError, "no audience to record"))?;
    let context = ExchangeContext {
        issuer: &state.settings.issuer,
        now,
        ttl_secs: i64::from(state.settings.tokens.id_jag_ttl_secs),
        max_chain_depth: state.settings.tokens.max_chain_depth,
        new_hop_id: state.ids.hop_id(),
        root_chain_id: chain_id,
    };
    let issuance = IdJagIssuance {
        actor: &client.id,
        subject: &subject,
        issued_to: upstream_id,
        audience: &hop_audience,
        scopes: &granted.scope,
        upstream: UpstreamGrant {
            issuer: issuer.settings.issuer.clone(),
            grant_id,
            expires_at: id_token_exp,
        },
    };
    let hop = decide_id_jag_issuance(&issuance, &context).map_err(|refusal| match refusal {
        Refusal::Expired => refuse(
            &"ID token expires now",
            OAuthError::invalid_request("subject_token has expired"),
        ),
        other => refuse(
            &other,
            OAuthError::refused(&other, GrantKind::TokenExchange),
        ),
    })?;
    let expires_at = hop.expires_at;
    // `sub` is mandate's namespaced subject (`corp|alice`; bare for the `subject_as_is` issuer):
    // the resource AS trusts mandate as the enterprise's IdP, and `sub` must be unique per `iss`
    // across every upstream issuer mandate brokers (DECISIONS.md, "ID-JAG issuance").
    let jag = IdJagClaims {
        iss: Some(state.settings.issuer.clone()),
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
        cnf: None,
        tenant: None,
        auth_time: claims.auth_time,
    };
    let token = sign_and_record(state, urn::TYP_ID_JAG, &jag, &hop, |kind| {
        refuse(
            &format!("revoked while issuing ({kind})"),
            OAuthError::invalid_request("the subject token has been revoked"),
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
    Ok(IssuedIdJag {
        token,
        expires_in: expires_at - now,
        scope: granted.scope.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mandate_model::ClientId;

    use super::*;

    fn row(resources: &[&str]) -> IdJagResourceServerSettings {
        IdJagResourceServerSettings {
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
        let granted = grant(&row(&["https://api.example.com"]), &agent(), None, None).unwrap();
        assert_eq!(granted.resource.as_deref(), Some("https://api.example.com"));
        assert_eq!(granted.scope.to_string(), "a b");
        assert_eq!(granted.client_id, "agent-at-as");
        let several = row(&["https://api.example.com", "https://files.example.com"]);
        assert_eq!(
            grant(&several, &agent(), None, None).unwrap().resource,
            None
        );
    }

    #[test]
    fn refusals_name_the_right_error() {
        let r = row(&["https://api.example.com"]);
        let code = |e: Result<Granted, OAuthError>| e.unwrap_err().code();
        assert_eq!(
            code(grant(&r, &agent(), Some("https://files.example.com"), None)),
            ErrorCode::InvalidTarget
        );
        let wide = ScopeSet::parse("a c").unwrap();
        assert_eq!(
            code(grant(&r, &agent(), None, Some(&wide))),
            ErrorCode::InvalidScope
        );
        let other = ClientId::parse("other").unwrap();
        assert_eq!(
            code(grant(&r, &other, None, None)),
            ErrorCode::InvalidTarget
        );
        let narrow = ScopeSet::parse("a").unwrap();
        let granted = grant(&r, &agent(), Some("https://api.example.com"), Some(&narrow)).unwrap();
        assert_eq!(granted.scope.to_string(), "a");
    }
}
