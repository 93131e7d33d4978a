//! RFC 6750 for any HTTP stack: reading the bearer token from `Authorization` headers, and the
//! status and `WWW-Authenticate` challenge of each refusal. The actix-web extractor, the tower
//! layer and the gateway all answer through this one mapping.

use std::fmt;

use mandate_model::ScopeSet;

use crate::VerifyError;

/// The bearer token among the values of a request's `Authorization` headers (RFC 6750 §2.1: the
/// header only; tokens in the query or the body are not read).
///
/// More than one header is [`BearerError::InvalidRequest`] (§2: one way of presenting a token);
/// none, or another scheme, is [`BearerError::Missing`] (§3.1: answer without an error code); a
/// value that is not a `b64token` is [`BearerError::InvalidToken`].
pub fn bearer_token<'a, I>(values: I) -> Result<&'a str, BearerError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    read_token(values, false).map(|(_, token)| token)
}

/// How a token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer` (RFC 6750).
    Bearer,
    /// `Authorization: DPoP`, with a `DPoP` proof (RFC 9449 §7.1).
    Dpop,
}

/// The token and its scheme among the values of a request's `Authorization` headers: as
/// [`bearer_token`], but `DPoP <token>` is read too.
pub fn presented_token<'a, I>(values: I) -> Result<(Scheme, &'a str), BearerError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    read_token(values, true)
}

/// The one reading of `Authorization` behind [`bearer_token`] and [`presented_token`]: the
/// `DPoP` scheme counts only when `dpop` says so (otherwise it is another scheme: `Missing`).
fn read_token<'a, I>(values: I, dpop: bool) -> Result<(Scheme, &'a str), BearerError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut values = values.into_iter();
    let Some(value) = values.next() else {
        return Err(BearerError::Missing);
    };
    if values.next().is_some() {
        return Err(BearerError::InvalidRequest);
    }
    let value = std::str::from_utf8(value).map_err(|_| BearerError::InvalidToken)?;
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let scheme = if scheme.eq_ignore_ascii_case("Bearer") {
        Scheme::Bearer
    } else if dpop && scheme.eq_ignore_ascii_case("DPoP") {
        Scheme::Dpop
    } else {
        return Err(BearerError::Missing);
    };
    let token = credentials.trim_matches(' ');
    if !is_token68(token) {
        return Err(BearerError::InvalidToken);
    }
    Ok((scheme, token))
}

/// RFC 6750 §2.1 `b64token`: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// An RFC 6750 refusal. Build one from a [`VerifyError`] to answer as the extractor does.
///
/// Responses say no more than RFC 6750 §3 does — the error code, never why a token was refused:
///
/// | situation | status | `WWW-Authenticate` |
/// |---|---|---|
/// | no `Authorization` header, or another scheme (§3.1: no error code) | 401 | `Bearer` |
/// | more than one `Authorization` header | 400 | `Bearer error="invalid_request"` |
/// | malformed, wrongly signed, foreign, expired or revoked token | 401 | `Bearer error="invalid_token"` |
/// | valid token without the scope | 403 | `Bearer error="insufficient_scope", scope="…"` |
/// | revocation status (or the keys) unavailable: fail closed | 503 | — |
/// | the app is wired wrongly | 500 | — |
///
/// With an RFC 9728 metadata URL ([`challenge_with`](Self::challenge_with)), each challenge also
/// carries `resource_metadata="<url>"`, which MCP clients follow to find the authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BearerError {
    /// No bearer credentials: 401, `WWW-Authenticate: Bearer`.
    Missing,
    /// A malformed request (several `Authorization` headers): 400 `invalid_request`.
    InvalidRequest,
    /// The token is not acceptable: 401 `invalid_token`.
    InvalidToken,
    /// The token lacks this scope: 403 `insufficient_scope`.
    InsufficientScope(String),
    /// The verifier cannot decide (revocation status or keys unavailable): 503, fail closed.
    Unavailable,
    /// The app is wired wrongly (e.g. no `web::Data<Verifier>`): 500.
    Misconfigured,
    /// A DPoP-bound token presented as `Bearer`: 401, `DPoP error="invalid_token"`.
    DpopRequired,
    /// The DPoP proof is missing or not acceptable: 401, `DPoP error="invalid_dpop_proof"`.
    InvalidDpopProof,
}

impl From<VerifyError> for BearerError {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::InsufficientScope(scope) => Self::InsufficientScope(scope),
            VerifyError::RevocationUnavailable(_)
            | VerifyError::Keys(_)
            | VerifyError::Discovery(_) => Self::Unavailable,
            VerifyError::Malformed
            | VerifyError::WrongType
            | VerifyError::Algorithm
            | VerifyError::Signature
            | VerifyError::UnknownKey
            | VerifyError::Issuer
            | VerifyError::Audience
            | VerifyError::Expired
            | VerifyError::NotYetValid
            | VerifyError::Revoked { .. } => Self::InvalidToken,
            VerifyError::DpopRequired => Self::DpopRequired,
            VerifyError::DpopProof(_) => Self::InvalidDpopProof,
        }
    }
}

impl fmt::Display for BearerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "bearer token required",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::Unavailable => "token verification unavailable",
            Self::Misconfigured => "token verification not configured",
            Self::DpopRequired => "invalid_token",
            Self::InvalidDpopProof => "invalid_dpop_proof",
        })
    }
}

impl std::error::Error for BearerError {}

impl BearerError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::Missing | Self::InvalidToken | Self::DpopRequired | Self::InvalidDpopProof => 401,
            Self::InvalidRequest => 400,
            Self::InsufficientScope(_) => 403,
            Self::Unavailable => 503,
            Self::Misconfigured => 500,
        }
    }

    /// The `WWW-Authenticate` challenge, for the statuses RFC 6750 §3 gives one.
    pub fn challenge(&self) -> Option<String> {
        self.challenge_with(None)
    }

    /// The challenge with RFC 9728 §5.1's `resource_metadata` parameter naming the app's
    /// protected resource metadata URL. A URL that would break the quoted string is left out.
    pub fn challenge_with(&self, resource_metadata: Option<&str>) -> Option<String> {
        let mut params: Vec<String> = Vec::new();
        let mut scheme = "Bearer";
        match self {
            Self::DpopRequired | Self::InvalidDpopProof => {
                scheme = "DPoP";
                params.push(if matches!(self, Self::DpopRequired) {
                    r#"error="invalid_token""#.into()
                } else {
                    r#"error="invalid_dpop_proof""#.into()
                });
                let algs: Vec<&str> = crate::dpop::DPOP_ALGORITHMS
                    .iter()
                    .map(|a| a.name())
                    .collect();
                params.push(format!(r#"algs="{}""#, algs.join(" ")));
            }
            Self::Missing => {}
            Self::InvalidRequest => params.push(r#"error="invalid_request""#.into()),
            Self::InvalidToken => params.push(r#"error="invalid_token""#.into()),
            Self::InsufficientScope(scope) => {
                params.push(r#"error="insufficient_scope""#.into());
                // Only a well-formed scope token goes into the quoted string (RFC 6749 §3.3
                // excludes '"' and '\'), so the header cannot be broken by the app's input.
                if ScopeSet::from_tokens([scope.as_str()]).is_ok() {
                    params.push(format!(r#"scope="{scope}""#));
                }
            }
            Self::Unavailable | Self::Misconfigured => return None,
        }
        if let Some(url) = resource_metadata {
            if url
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                params.push(format!(r#"resource_metadata="{url}""#));
            }
        }
        Some(if params.is_empty() {
            scheme.to_owned()
        } else {
            format!("{scheme} {}", params.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(values: &[&str]) -> Result<String, BearerError> {
        bearer_token(values.iter().map(|v| v.as_bytes())).map(str::to_owned)
    }

    #[test]
    fn token68_shapes() {
        for ok in ["abc", "a.b.c", "a-b_c~d+e/f==", "eyJ0.eyJ1.sig"] {
            assert!(is_token68(ok), "{ok}");
        }
        for bad in ["", "==", "a b", "a\"b", "a,b", "ä"] {
            assert!(!is_token68(bad), "{bad}");
        }
    }

    #[test]
    fn the_header_is_read_as_rfc_6750_says() {
        assert_eq!(token(&["Bearer a.b.c"]).unwrap(), "a.b.c");
        assert_eq!(token(&["bearer   a.b.c "]).unwrap(), "a.b.c");
        assert_eq!(token(&[]), Err(BearerError::Missing));
        assert_eq!(token(&["Basic dXNlcjpwdw=="]), Err(BearerError::Missing));
        assert_eq!(
            token(&["Bearer a", "Bearer b"]),
            Err(BearerError::InvalidRequest)
        );
        assert_eq!(token(&["Bearer a,b"]), Err(BearerError::InvalidToken));
        assert_eq!(token(&["Bearer"]), Err(BearerError::InvalidToken));
    }

    #[test]
    fn dpop_tokens_are_read_and_their_refusals_challenge_with_dpop() {
        let presented = |values: &[&str]| {
            presented_token(values.iter().map(|v| v.as_bytes())).map(|(s, t)| (s, t.to_owned()))
        };
        assert_eq!(
            presented(&["DPoP a.b.c"]).unwrap(),
            (Scheme::Dpop, "a.b.c".into())
        );
        assert_eq!(
            presented(&["bearer a.b.c"]).unwrap(),
            (Scheme::Bearer, "a.b.c".into())
        );
        assert_eq!(presented(&["Basic x"]), Err(BearerError::Missing));
        // The plain bearer reader still does not take DPoP credentials.
        assert_eq!(token(&["DPoP a.b.c"]), Err(BearerError::Missing));
        assert_eq!(
            BearerError::InvalidDpopProof.challenge().unwrap(),
            r#"DPoP error="invalid_dpop_proof", algs="ES256 ES384 EdDSA RS256 PS256""#
        );
        assert!(BearerError::DpopRequired
            .challenge()
            .unwrap()
            .starts_with(r#"DPoP error="invalid_token""#));
        assert_eq!(BearerError::DpopRequired.status(), 401);
    }

    #[test]
    fn insufficient_scope_never_breaks_the_header() {
        let challenge = BearerError::InsufficientScope("x\" error=\"y".into()).challenge();
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer error="insufficient_scope""#)
        );
    }

    #[test]
    fn challenges_name_the_resource_metadata() {
        let url = "https://app.example/.well-known/oauth-protected-resource";
        assert_eq!(
            BearerError::Missing.challenge_with(Some(url)).unwrap(),
            format!(r#"Bearer resource_metadata="{url}""#)
        );
        assert_eq!(
            BearerError::InvalidToken.challenge_with(Some(url)).unwrap(),
            format!(r#"Bearer error="invalid_token", resource_metadata="{url}""#)
        );
        assert_eq!(
            BearerError::InsufficientScope("cal.read".into())
                .challenge_with(Some(url))
                .unwrap(),
            format!(
                r#"Bearer error="insufficient_scope", scope="cal.read", resource_metadata="{url}""#
            )
        );
        assert_eq!(
            BearerError::InvalidToken
                .challenge_with(Some("https://x\"y"))
                .unwrap(),
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(BearerError::Unavailable.challenge_with(Some(url)), None);
        assert_eq!(BearerError::Unavailable.status(), 503);
    }
}
