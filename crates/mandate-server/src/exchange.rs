//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` on the wire: the form read into
//! one of the two exchanges mandate-core performs (an access token, DESIGN.md section 5; an
//! ID-JAG, section 7), and the RFC 8693 §2.2.1 response.

use mandate_chain::Authority;
use mandate_core::grants::{AccessTokenRequest, IdJagIssueRequest, SubjectTokenType};
use mandate_core::GrantService;
use mandate_model::Audience;
use mandate_store::Client;
use mandate_token::{urn, DelegationDetail};
use serde::Serialize;

use crate::error::{ErrorCode, OAuthError};
use crate::form::Form;

/// A parsed token-exchange request: what the exchange issues.
#[derive(Debug)]
pub enum TokenExchangeRequest {
    /// A mandate access token for one target.
    AccessToken(AccessTokenRequest),
    /// An ID-JAG for a configured resource AS.
    IdJag(IdJagIssueRequest),
}

impl TokenExchangeRequest {
    /// Reads the exchange parameters; every refusal here is about the request's shape.
    pub fn from_form(form: &Form, dpop: Option<String>) -> Result<Self, OAuthError> {
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
                return id_jag_request(form, subject_token, subject_token_type, dpop)
                    .map(Self::IdJag)
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
        Ok(Self::AccessToken(AccessTokenRequest {
            subject_token,
            subject_token_type,
            target,
            scope,
            details,
            dpop,
        }))
    }
}

/// Reads the ID-JAG parameters (PROTOCOLS.md 2.3): `audience` (required: the resource AS
/// issuer), `resource` (optional: its API) and `scope`. `subject_token_type` must be an ID
/// token; SAML and refresh tokens are already refused by name when it is parsed.
fn id_jag_request(
    form: &Form,
    subject_token: String,
    subject_token_type: SubjectTokenType,
    dpop: Option<String>,
) -> Result<IdJagIssueRequest, OAuthError> {
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
    let resource = form.one_target("resource", "at most one resource is supported per ID-JAG")?;
    let scope = form.scope()?;
    if form.single("authorization_details")?.is_some() {
        return Err(OAuthError::invalid_request(
            "authorization_details is not supported for ID-JAGs",
        ));
    }
    Ok(IdJagIssueRequest {
        subject_token,
        audience,
        resource,
        scope,
        dpop,
    })
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

/// Performs the exchange for the authenticated agent `client`.
pub async fn exchange(
    grants: &GrantService,
    client: &Client,
    request: TokenExchangeRequest,
) -> Result<ExchangeResponse, OAuthError> {
    Ok(match request {
        TokenExchangeRequest::AccessToken(request) => {
            let exchanged = grants.exchange(client, request).await?;
            ExchangeResponse {
                access_token: exchanged.access_token,
                issued_token_type: urn::TOKEN_TYPE_ACCESS_TOKEN,
                token_type: if exchanged.bound { "DPoP" } else { "Bearer" },
                expires_in: exchanged.expires_in,
                scope: exchanged.scope,
                authorization_details: exchanged.authorization_details,
            }
        }
        TokenExchangeRequest::IdJag(request) => {
            let issued = grants.issue_id_jag(client, request).await?;
            ExchangeResponse {
                access_token: issued.token,
                issued_token_type: urn::TOKEN_TYPE_ID_JAG,
                token_type: "N_A",
                expires_in: issued.expires_in,
                scope: Some(issued.scope),
                authorization_details: None,
            }
        }
    })
}
