//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` on the wire: the resource-AS half of
//! cross-app access (DESIGN.md section 7, PROTOCOLS.md 2.4), which mandate-core performs.

use mandate_core::grants::IdJagRedeemRequest;
use mandate_core::GrantService;
use mandate_store::Client;
use serde::Serialize;

use crate::error::OAuthError;
use crate::form::Form;

/// Reads the jwt-bearer parameters (RFC 7523 §2.1; `resource` per RFC 8707). Refusals here are
/// about the request's shape, not the assertion.
pub fn redeem_request(form: &Form, dpop: Option<String>) -> Result<IdJagRedeemRequest, OAuthError> {
    let assertion = form.required("assertion")?.to_owned();
    let resource = form.one_target("resource", "exactly one resource is supported per token")?;
    let scope = form.scope()?;
    Ok(IdJagRedeemRequest {
        assertion,
        resource,
        scope,
        dpop,
    })
}

/// The RFC 6749 §5.1 response: no refresh token (PROTOCOLS.md 2.5), and no `issued_token_type`,
/// which only token exchange defines.
#[derive(Debug, Serialize)]
pub struct IdJagResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

/// Redeems the ID-JAG in `request` for the authenticated agent `client`.
pub async fn redeem(
    grants: &GrantService,
    client: &Client,
    request: IdJagRedeemRequest,
) -> Result<IdJagResponse, OAuthError> {
    let redeemed = grants.redeem_id_jag(client, request).await?;
    Ok(IdJagResponse {
        access_token: redeemed.access_token,
        token_type: if redeemed.bound { "DPoP" } else { "Bearer" },
        expires_in: redeemed.expires_in,
        scope: redeemed.scope,
    })
}
