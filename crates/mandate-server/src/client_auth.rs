//! Client authentication for the token endpoint (and later revocation and introspection):
//! `client_secret_basic`, `client_secret_post` and `private_key_jwt` (RFC 6749 §2.3, RFC 7523
//! §2.2, PROTOCOLS.md section 3.3, DESIGN.md section 5).
//!
//! [`PresentedCredentials::from_request`] reads what the client sent; [`ClientAuthenticator`]
//! decides, with no knowledge of HTTP beyond that.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::HttpRequest;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mandate_model::{log_safe, AuthMethod, ClientId, Clock};
use mandate_store::{Client, ClientRegistry, ReplayCache, StoreError};
use mandate_token::{urn, Algorithm, JwtError, OneOrMany, TimeError, TimeWindow, UnverifiedJws};
use serde::Deserialize;

use crate::error::OAuthError;
use crate::form::Form;

/// Client assertions may live at most this long (DESIGN.md section 5: common clients default to
/// an hour).
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 3600;

/// What the client presented to authenticate: exactly one method.
#[derive(Clone)]
pub enum PresentedCredentials {
    /// HTTP Basic.
    Basic {
        /// The client id from the header.
        client_id: String,
        /// The secret from the header.
        secret: String,
    },
    /// `client_id` + `client_secret` form parameters.
    Post {
        /// The `client_id` parameter.
        client_id: String,
        /// The `client_secret` parameter.
        secret: String,
    },
    /// `client_assertion_type` + `client_assertion`.
    Assertion {
        /// The `client_id` parameter, if sent (it must then match the assertion).
        client_id: Option<String>,
        /// The assertion JWT.
        assertion: String,
    },
}

impl std::fmt::Debug for PresentedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets or assertions.
        match self {
            // The ids are the client's own text, not yet checked: escaped, so that a newline in
            // one cannot start a forged log line.
            Self::Basic { client_id, .. } => write!(f, "Basic({})", log_safe(client_id)),
            Self::Post { client_id, .. } => write!(f, "Post({})", log_safe(client_id)),
            Self::Assertion { client_id, .. } => match client_id {
                Some(id) => write!(f, "Assertion({})", log_safe(id)),
                None => f.write_str("Assertion"),
            },
        }
    }
}

impl PresentedCredentials {
    /// Reads the credentials from the `Authorization` header and the form. Two methods at once
    /// is `invalid_request`; none at all is `invalid_client`.
    pub fn from_request(request: &HttpRequest, form: &Form) -> Result<Self, OAuthError> {
        // Two headers would let mandate and a proxy in front of it disagree about the client
        // (one reads the first, the other the last): refused, as RFC 6749 §3.2 asks of any
        // repeated parameter.
        if request
            .headers()
            .get_all(header::AUTHORIZATION)
            .nth(1)
            .is_some()
        {
            return Err(OAuthError::invalid_request(
                "more than one Authorization header",
            ));
        }
        let authorization = request.headers().get(header::AUTHORIZATION);
        let basic = match authorization {
            None => None,
            Some(value) => Some(parse_basic(value.to_str().ok()).ok_or_else(|| {
                OAuthError::invalid_client("the Authorization header is not valid HTTP Basic")
                    .with_basic_challenge()
            })?),
        };
        let form_client_id = form.single("client_id")?;
        let form_secret = form.single("client_secret")?;
        let assertion = form.single("client_assertion")?;
        let assertion_type = form.single("client_assertion_type")?;

        let methods = usize::from(basic.is_some())
            + usize::from(form_secret.is_some())
            + usize::from(assertion.is_some() || assertion_type.is_some());
        if methods > 1 {
            return Err(OAuthError::invalid_request(
                "more than one client authentication method was used",
            ));
        }
        if let Some((client_id, secret)) = basic {
            if form_client_id.is_some_and(|id| id != client_id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the client authenticated by HTTP Basic",
                ));
            }
            return Ok(Self::Basic { client_id, secret });
        }
        if let Some(secret) = form_secret {
            let client_id = form_client_id.ok_or_else(|| {
                OAuthError::invalid_request("client_secret was sent without client_id")
            })?;
            return Ok(Self::Post {
                client_id: client_id.to_owned(),
                secret: secret.to_owned(),
            });
        }
        if assertion.is_some() || assertion_type.is_some() {
            if assertion_type != Some(urn::CLIENT_ASSERTION_JWT_BEARER) {
                return Err(OAuthError::invalid_client(
                    "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
            }
            let assertion = assertion.ok_or_else(|| {
                OAuthError::invalid_request(
                    "client_assertion_type was sent without client_assertion",
                )
            })?;
            return Ok(Self::Assertion {
                client_id: form_client_id.map(str::to_owned),
                assertion: assertion.to_owned(),
            });
        }
        Err(OAuthError::invalid_client(
            "client authentication is required",
        ))
    }

    /// Whether the client used HTTP Basic (errors then carry a Basic challenge).
    pub fn used_basic(&self) -> bool {
        matches!(self, Self::Basic { .. })
    }
}

/// RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic encoding.
fn parse_basic(value: Option<&str>) -> Option<(String, String)> {
    let value = value?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> Option<String> {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|v| v.into_owned())
    };
    let id = unescape(id)?;
    let secret = unescape(secret)?;
    // RFC 6749 Appendix A: both are VSCHAR; a decoded control character is no credential.
    let printable = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
    (printable(&id) && printable(&secret)).then_some((id, secret))
}

/// Why authentication failed. Only the server log sees the detail; the client sees
/// `invalid_client` with a generic description, so failures do not reveal which clients exist.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// No such client, or its id is not even syntactically valid.
    #[error("unknown client")]
    UnknownClient,
    /// The client is registered for another method.
    #[error("client is registered for {registered}, not {used}")]
    WrongMethod {
        /// The registered method.
        registered: AuthMethod,
        /// The method used.
        used: AuthMethod,
    },
    /// Wrong secret.
    #[error("wrong client secret")]
    WrongSecret,
    /// Not active, or past its expiry.
    #[error("client may not authenticate (state or expiry)")]
    NotActive,
    /// The assertion's signature or header is unacceptable.
    #[error("client assertion rejected: {0}")]
    AssertionJwt(#[from] JwtError),
    /// The assertion's claims are unacceptable.
    #[error("client assertion rejected: {0}")]
    AssertionClaims(&'static str),
    /// The assertion's time claims are unacceptable.
    #[error("client assertion rejected: {0}")]
    AssertionTime(#[from] TimeError),
    /// The assertion was used before.
    #[error("client assertion replayed")]
    Replayed,
    /// The store could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ClientAuthError {
    /// The response for this failure. Every failure but the store's reads the same, byte for
    /// byte: a stranger's assertion for a `private_key_jwt` client must not answer differently
    /// from a wrong secret or an unknown id, or the answer tells which ids use which method.
    pub fn into_oauth(self, used_basic: bool) -> OAuthError {
        let error = match self {
            ClientAuthError::Store(_) => return OAuthError::unavailable(),
            _ => OAuthError::invalid_client("client authentication failed"),
        };
        if used_basic {
            error.with_basic_challenge()
        } else {
            error
        }
    }
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<OneOrMany<String>>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    jti: Option<String>,
}

/// Decides whether presented credentials authenticate a registered, active client.
#[derive(Debug, Clone)]
pub struct ClientAuthenticator {
    registry: Arc<dyn ClientRegistry>,
    replay: Arc<dyn ReplayCache>,
    clock: Arc<dyn Clock>,
    /// Audiences a client assertion may name: the issuer, then the token endpoint.
    accepted_audiences: Vec<String>,
    skew: i64,
}

impl ClientAuthenticator {
    /// An authenticator for the server whose issuer is `issuer`.
    pub fn new(
        registry: Arc<dyn ClientRegistry>,
        replay: Arc<dyn ReplayCache>,
        clock: Arc<dyn Clock>,
        issuer: &str,
        skew_secs: u32,
    ) -> Self {
        Self {
            registry,
            replay,
            clock,
            accepted_audiences: vec![issuer.to_owned(), format!("{issuer}/token")],
            skew: i64::from(skew_secs),
        }
    }

    /// Authenticates the client, or says why not.
    pub async fn authenticate(
        &self,
        credentials: &PresentedCredentials,
    ) -> Result<Arc<Client>, ClientAuthError> {
        match credentials {
            PresentedCredentials::Basic { client_id, secret } => {
                self.by_secret(client_id, secret, AuthMethod::ClientSecretBasic)
                    .await
            }
            PresentedCredentials::Post { client_id, secret } => {
                self.by_secret(client_id, secret, AuthMethod::ClientSecretPost)
                    .await
            }
            PresentedCredentials::Assertion {
                client_id,
                assertion,
            } => self.by_assertion(client_id.as_deref(), assertion).await,
        }
    }

    async fn registered(
        &self,
        client_id: &str,
        used: AuthMethod,
    ) -> Result<Arc<Client>, ClientAuthError> {
        let id = ClientId::parse(client_id).map_err(|_| ClientAuthError::UnknownClient)?;
        let client = self
            .registry
            .client(&id)
            .await?
            .ok_or(ClientAuthError::UnknownClient)?;
        if client.auth_method != used {
            return Err(ClientAuthError::WrongMethod {
                registered: client.auth_method,
                used,
            });
        }
        Ok(client)
    }

    async fn by_secret(
        &self,
        client_id: &str,
        secret: &str,
        used: AuthMethod,
    ) -> Result<Arc<Client>, ClientAuthError> {
        let client = self.registered(client_id, used).await?;
        let now = self.clock.now();
        // The secret a rotation replaced is accepted until its overlap window ends.
        if !client.secret_matches(secret, now) {
            return Err(ClientAuthError::WrongSecret);
        }
        // State is checked after the secret so that the answer does not reveal the state of a
        // client to someone who does not hold its secret.
        if !client.may_authenticate(now) {
            return Err(ClientAuthError::NotActive);
        }
        Ok(client)
    }

    async fn by_assertion(
        &self,
        form_client_id: Option<&str>,
        assertion: &str,
    ) -> Result<Arc<Client>, ClientAuthError> {
        let jws = UnverifiedJws::parse(assertion)?;
        // The client is named by `sub` (= `iss`); which keys to verify with depends on it, so it
        // is read before verification and checked again after.
        let unverified: AssertionClaims = jws.dangerous_unverified_claims()?;
        let claimed = unverified
            .sub
            .as_deref()
            .ok_or(ClientAuthError::AssertionClaims("sub is required"))?;
        if form_client_id.is_some_and(|id| id != claimed) {
            return Err(ClientAuthError::AssertionClaims(
                "client_id does not match the assertion's sub",
            ));
        }
        let client = self.registered(claimed, AuthMethod::PrivateKeyJwt).await?;
        if jws
            .header()
            .typ_is_foreign_explicit(&[urn::TYP_CLIENT_ASSERTION])
        {
            return Err(ClientAuthError::AssertionJwt(JwtError::WrongType));
        }
        let keys = client.keys.as_ref().ok_or(ClientAuthError::UnknownClient)?;
        let verified = jws.verify(keys, &Algorithm::ALL)?;
        let claims: AssertionClaims = verified.claims()?;

        let client_id = client.id.as_str();
        if claims.sub.as_deref() != Some(client_id) || claims.iss.as_deref() != Some(client_id) {
            return Err(ClientAuthError::AssertionClaims(
                "iss and sub must both be the client id",
            ));
        }
        // D4: the issuer (preferred) or the token endpoint, and nothing else, even in an array.
        let audiences = claims
            .aud
            .as_ref()
            .map(OneOrMany::as_slice)
            .unwrap_or_default();
        if audiences.is_empty()
            || !audiences
                .iter()
                .all(|a| self.accepted_audiences.contains(a))
        {
            return Err(ClientAuthError::AssertionClaims(
                "aud must identify this authorization server",
            ));
        }
        let now = self.clock.now_secs();
        let window = TimeWindow {
            now,
            skew: self.skew,
        };
        window.check(
            claims.exp,
            claims.nbf,
            claims.iat,
            MAX_ASSERTION_LIFETIME_SECS,
        )?;
        let jti = claims
            .jti
            .as_deref()
            .ok_or(ClientAuthError::AssertionClaims("jti is required"))?;
        if jti.is_empty() || jti.len() > 256 {
            return Err(ClientAuthError::AssertionClaims(
                "jti must be 1 to 256 characters",
            ));
        }
        if !client.may_authenticate(self.clock.now()) {
            return Err(ClientAuthError::NotActive);
        }
        // Recorded only now that signature and claims pass, so forged assertions cannot burn a
        // legitimate client's jti values. Remembered until exp + skew + 1 s.
        let exp = claims.exp.unwrap_or(now);
        let key = format!("client-assertion:{client_id}:{jti}");
        if !self
            .replay
            .first_use(&key, exp + self.skew + 1, now)
            .await?
        {
            return Err(ClientAuthError::Replayed);
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(
            parse_basic(Some(&basic("my%20client", "p%3Ass+w"))),
            Some(("my client".into(), "p:ss w".into()))
        );
        assert_eq!(
            parse_basic(Some(&basic("a", "b:c"))),
            Some(("a".into(), "b:c".into()))
        );
        assert_eq!(parse_basic(Some("Bearer abc")), None);
        assert_eq!(parse_basic(Some("Basic !!!")), None);
        assert_eq!(parse_basic(Some(&basic("", "x"))), None);
    }
}
