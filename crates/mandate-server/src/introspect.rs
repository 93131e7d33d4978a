//! RFC 7662 token introspection (DESIGN.md section 6, last paragraph): what an authenticated
//! client may learn about a token.
//!
//! A token is active for a caller only when it is a genuine, unexpired mandate access token,
//! nothing on its chain is revoked, and the caller may see it: a resource server that owns its
//! audience, or the agent that is its `client_id`. Every other answer is exactly
//! `{"active":false}`, whatever the reason, so that the answer says nothing about tokens the
//! caller may not see. A store failure is an error, never a guess either way.

use mandate_model::ClientKind;
use mandate_revocation::{TokenFacts, Verdict};
use mandate_store::Client;
use mandate_token::{AccessTokenClaims, Act, DelegationDetail};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::OAuthError;
use crate::state::AppState;

/// The answer to an introspection request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspection {
    /// The token is active and the caller may see it.
    Active(Box<ActiveToken>),
    /// Anything else: `{"active":false}` and nothing more.
    Inactive,
}

impl Introspection {
    /// The RFC 7662 response body.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Active(token) => {
                serde_json::to_value(token.as_ref()).unwrap_or_else(|_| json!({ "active": false }))
            }
            Self::Inactive => json!({ "active": false }),
        }
    }

    /// Whether the token is active.
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Active(_))
    }
}

/// The members of an active answer (RFC 7662 §2.2, with RFC 8693 `act`, RFC 9396
/// `authorization_details` and mandate's `chain_id` and `ancestors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveToken {
    /// Always `true`.
    pub active: bool,
    /// The user.
    pub sub: String,
    /// The agent that requested the token.
    pub client_id: String,
    /// App tokens: the scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Hand-off tokens: the authority passed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<DelegationDetail>>,
    /// The audience.
    pub aud: String,
    /// mandate's issuer.
    pub iss: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// The hop id.
    pub jti: String,
    /// `DPoP` for a bound token (RFC 9449 §6.2), else `Bearer`.
    pub token_type: &'static str,
    /// The binding, for a DPoP-bound token: `{"jkt": …}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<mandate_token::Confirmation>,
    /// The actor chain, current actor outermost.
    pub act: Act,
    /// The chain.
    pub chain_id: String,
    /// The hops this token derives from, root first.
    pub ancestors: Vec<String>,
}

impl From<AccessTokenClaims> for ActiveToken {
    fn from(claims: AccessTokenClaims) -> Self {
        Self {
            active: true,
            sub: claims.sub,
            client_id: claims.client_id,
            scope: claims.scope,
            authorization_details: claims.authorization_details,
            aud: claims.aud,
            iss: claims.iss,
            exp: claims.exp,
            iat: claims.iat,
            nbf: claims.nbf,
            jti: claims.jti,
            token_type: if claims.cnf.is_some() {
                "DPoP"
            } else {
                "Bearer"
            },
            cnf: claims.cnf,
            act: claims.act,
            chain_id: claims.chain_id,
            ancestors: claims.ancestors,
        }
    }
}

/// Why no answer could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectError {
    /// The revocation list could not be read: the token can be neither confirmed nor denied.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<IntrospectError> for OAuthError {
    fn from(error: IntrospectError) -> Self {
        match error {
            IntrospectError::Unavailable(reason) => {
                tracing::warn!(%reason, "revocation store unavailable during introspection");
                OAuthError::unavailable()
            }
        }
    }
}

/// Whether `caller` may see a token with these claims: a resource server when it owns the
/// token's audience, an agent when it is the token's client.
pub fn may_see(caller: &Client, claims: &AccessTokenClaims) -> bool {
    match caller.kind {
        ClientKind::ResourceServer => caller
            .audiences
            .iter()
            .any(|owned| owned.to_string() == claims.aud),
        ClientKind::Agent => caller.id.as_str() == claims.client_id,
    }
}

/// Introspects `token` for the authenticated `caller`.
///
/// Order: verify the token (signature, `typ`, issuer, time window), decide visibility, then check
/// the whole chain against the revocation list, and finally check `exp` strictly against the
/// store's clock read in that same round trip (the clock mandate stamps `iat` and `exp` with), so
/// that the clock skew tolerated elsewhere never extends a token's life here.
pub async fn introspect(
    state: &AppState,
    caller: &Client,
    token: &str,
) -> Result<Introspection, IntrospectError> {
    let inactive = |reason: &str| {
        tracing::debug!(client_id = %caller.id, reason, "introspection: inactive");
        Ok(Introspection::Inactive)
    };
    let Some(claims) = state.own_token_claims(token) else {
        return inactive("not a valid mandate access token");
    };
    if !may_see(caller, &claims) {
        return inactive("not visible to the caller");
    }
    let depth_bound = state.settings.tokens.max_chain_depth as usize + 1;
    let checked = state
        .revocations
        .check(&TokenFacts::of_access_token(&claims, depth_bound))
        .await
        .map_err(|e| IntrospectError::Unavailable(e.to_string()))?;
    if let Verdict::Revoked { .. } = checked.verdict {
        return inactive("revoked");
    }
    if claims.exp.saturating_mul(1000) <= checked.now_ms {
        return inactive("expired");
    }
    Ok(Introspection::Active(Box::new(ActiveToken::from(claims))))
}
