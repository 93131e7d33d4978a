//! The claims of the tokens mandate issues (DESIGN.md section 4) and reads from upstream issuers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::OneOrMany;

/// RFC 9396 `authorization_details` type of a hand-off's delegated authority.
pub const DELEGATION_DETAIL_TYPE: &str = "mandate_delegation";

/// RFC 8693 §4.1 actor: the outermost is the current actor, each nested one the actor before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    /// The actor's client id.
    pub sub: String,
    /// The actor before this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Act>>,
}

impl Act {
    /// Builds the nested claim from actors ordered current first.
    pub fn from_current_first(actors: &[String]) -> Option<Act> {
        actors.iter().rev().fold(None, |earlier, sub| {
            Some(Act {
                sub: sub.clone(),
                act: earlier.map(Box::new),
            })
        })
    }

    /// The actors, current first. Stops at `limit` levels: the caller refuses deeper nesting.
    pub fn actors(&self, limit: usize) -> Vec<&str> {
        let mut actors = Vec::new();
        let mut next = Some(self);
        while let Some(act) = next {
            if actors.len() == limit {
                break;
            }
            actors.push(act.sub.as_str());
            next = act.act.as_deref();
        }
        actors
    }

    /// The number of nested levels, counting at most `limit + 1`.
    pub fn depth(&self, limit: usize) -> usize {
        let mut depth = 0;
        let mut next = Some(self);
        while let Some(act) = next {
            depth += 1;
            if depth > limit {
                break;
            }
            next = act.act.as_deref();
        }
        depth
    }
}

/// One delegated (audience, scopes) pair of a hand-off token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationDetail {
    /// Always [`DELEGATION_DETAIL_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The app the authority is for.
    pub audience: String,
    /// The scopes at that app.
    pub scopes: Vec<String>,
}

/// A mandate access token (RFC 9068 profile): an app token carries `scope`, a hand-off token
/// (`aud` = `agent:<id>`) carries `authorization_details`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// mandate's issuer.
    pub iss: String,
    /// The user, namespaced.
    pub sub: String,
    /// One audience.
    pub aud: String,
    /// The agent that requested the token (the current actor).
    pub client_id: String,
    /// App tokens: space-delimited scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Hand-off tokens: the authority passed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<DelegationDetail>>,
    /// Issued at (the store's clock).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// The hop id.
    pub jti: String,
    /// The actor chain, current actor outermost.
    pub act: Act,
    /// The chain this hop belongs to.
    pub chain_id: String,
    /// The hop ids this token derives from, root first.
    pub ancestors: Vec<String>,
    /// RFC 9449 binding: the thumbprint of the key its holder proves on every use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// RFC 7800 `cnf` as DPoP uses it (RFC 9449 §6.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The RFC 7638 SHA-256 thumbprint of the bound key.
    pub jkt: String,
}

/// The claims mandate reads from an upstream ID token or JWT. Unknown claims are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct UpstreamClaims {
    /// The issuer.
    pub iss: Option<String>,
    /// The user at that issuer.
    pub sub: Option<String>,
    /// Audience(s).
    pub aud: Option<OneOrMany<String>>,
    /// Authorized party (OIDC Core §2).
    pub azp: Option<String>,
    /// The client the token was issued to, for plain JWTs.
    pub client_id: Option<String>,
    /// Expiry.
    pub exp: Option<i64>,
    /// Not before.
    pub nbf: Option<i64>,
    /// Issued at.
    pub iat: Option<i64>,
    /// Token id.
    pub jti: Option<String>,
    /// RFC 8693 §4.4: who may act for the subject.
    pub may_act: Option<Value>,
    /// Authentication time, carried into ID-JAGs.
    pub auth_time: Option<i64>,
}

/// The claims of an Identity Assertion JWT Authorization Grant (ID-JAG, PROTOCOLS.md 2.2), as
/// the resource-AS half reads them. Every member is optional here so that the verifier can name
/// exactly which required claim is missing; unknown claims are ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IdJagClaims {
    /// The IdP issuer (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The user at that IdP (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The resource AS's issuer identifier (required): a string or a one-element array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<OneOrMany<String>>,
    /// The client's identifier at the resource AS (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Token id (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Expiry (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// RFC 8707 resource(s) the IdP granted: a string or an array (decision D9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<OneOrMany<String>>,
    /// Space-delimited scopes the IdP granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 8693 actor, semantics undefined by the draft: recorded, never trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// Proof-of-possession confirmation (`{"jkt": …}` when DPoP-bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Value>,
    /// The IdP tenant (multi-tenant issuers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Authentication time of the SSO event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_nests_current_outermost() {
        let act = Act::from_current_first(&["booking-tool".into(), "assistant".into()]).unwrap();
        let json = serde_json::to_value(&act).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"sub": "booking-tool", "act": {"sub": "assistant"}})
        );
        assert_eq!(act.actors(10), ["booking-tool", "assistant"]);
        assert_eq!(act.depth(10), 2);
        assert_eq!(act.depth(1), 2, "counting stops one past the limit");
    }

    #[test]
    fn claims_serialise_whole_seconds() {
        let claims = AccessTokenClaims {
            cnf: None,
            iss: "https://m.example.com".into(),
            sub: "corp|alice".into(),
            aud: "https://calendar.example.com".into(),
            client_id: "assistant".into(),
            scope: Some("calendar.read".into()),
            authorization_details: None,
            iat: 1,
            nbf: 1,
            exp: 301,
            jti: "hop_x".into(),
            act: Act {
                sub: "assistant".into(),
                act: None,
            },
            chain_id: "chn_x".into(),
            ancestors: vec![],
        };
        let text = serde_json::to_string(&claims).unwrap();
        assert!(text.contains("\"exp\":301"));
        assert!(!text.contains("authorization_details"));
    }

    #[test]
    fn id_jag_claims_read_both_shapes_and_ignore_unknown_members() {
        let claims: IdJagClaims = serde_json::from_value(serde_json::json!({
            "iss": "https://idp.example.com",
            "sub": "alice",
            "aud": ["https://as.example.com"],
            "client_id": "agent",
            "jti": "j1",
            "iat": 1, "exp": 301,
            "resource": "https://api.example.com",
            "scope": "a b",
            "amr": ["pwd"],
        }))
        .unwrap();
        assert_eq!(
            claims.aud.as_ref().map(OneOrMany::as_slice),
            Some(&["https://as.example.com".to_owned()][..])
        );
        assert_eq!(
            claims.resource.as_ref().map(OneOrMany::as_slice),
            Some(&["https://api.example.com".to_owned()][..])
        );
        assert!(claims.cnf.is_none() && claims.act.is_none());
        let missing: IdJagClaims = serde_json::from_str("{}").unwrap();
        assert!(missing.jti.is_none() && missing.exp.is_none());
    }
}
